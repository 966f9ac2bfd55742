-- kpi_unit_days summed per calendar month: what a query filtered or split by
-- service, unit or channel reads for the whole months of its range (about a
-- thirtieth of the rows), with kpi_unit_days only for the partial months at
-- its ends. `day` holds yyyymm00, so `day / 100` and `day / 10000` bucket it
-- like a day.
CREATE TABLE kpi_unit_months (
    agency  TEXT    NOT NULL,
    measure TEXT    NOT NULL,
    day     BIGINT  NOT NULL,
    service TEXT    NOT NULL,
    unit    TEXT    NOT NULL,
    channel BIGINT  NOT NULL,
    value   BIGINT  NOT NULL,
    count   BIGINT  NOT NULL,
    PRIMARY KEY (agency, measure, day, service, unit, channel, value)
);
INSERT INTO kpi_unit_months (agency, measure, day, service, unit, channel, value, count)
    SELECT agency, measure, (day / 100) * 100, service, unit, channel, value, SUM(count)
    FROM kpi_unit_days GROUP BY agency, measure, (day / 100) * 100, service, unit, channel, value;
