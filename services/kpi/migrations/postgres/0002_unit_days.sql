-- The value counts summed over segments only: what a query filtered or split
-- by service, unit or channel reads, far fewer rows than kpi_cells (the
-- respondents' characteristics multiply the cells).
CREATE TABLE kpi_unit_days (
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
INSERT INTO kpi_unit_days (agency, measure, day, service, unit, channel, value, count)
    SELECT agency, measure, day, service, unit, channel, value, SUM(count)
    FROM kpi_cells GROUP BY agency, measure, day, service, unit, channel, value;
ALTER TABLE kpi_unit_days ENABLE ROW LEVEL SECURITY;
ALTER TABLE kpi_unit_days FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON kpi_unit_days
    USING (agency = current_setting('touchstone.agency', true))
    WITH CHECK (agency = current_setting('touchstone.agency', true));
CREATE POLICY rebuild ON kpi_unit_days
    USING (current_setting('touchstone.agency', true) = '*');
