-- A number per agency that grows with every change to its rollups (and with
-- every rebuild): a query's protected table may be reused while it holds.
CREATE TABLE kpi_versions (
    agency  TEXT    NOT NULL PRIMARY KEY,
    version BIGINT  NOT NULL
);
ALTER TABLE kpi_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE kpi_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON kpi_versions
    USING (agency = current_setting('touchstone.agency', true))
    WITH CHECK (agency = current_setting('touchstone.agency', true));
CREATE POLICY rebuild ON kpi_versions
    USING (current_setting('touchstone.agency', true) = '*');
