-- A number per agency that grows with every change to its rollups (and with
-- every rebuild): a query's protected table may be reused while it holds.
CREATE TABLE kpi_versions (
    agency  TEXT    NOT NULL PRIMARY KEY,
    version BIGINT  NOT NULL
);
