-- Older data keys of an agency that values in this database were sealed with
-- before each service kept its own keys (a repaired data directory): they
-- open those values and never seal new ones.
CREATE TABLE agency_older_keys (
    agency      TEXT   NOT NULL,
    key_id      TEXT   NOT NULL,
    wrapped_key BYTEA  NOT NULL,
    create_time BIGINT NOT NULL,
    PRIMARY KEY (agency, key_id)
);
ALTER TABLE agency_older_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE agency_older_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON agency_older_keys
    USING (agency = current_setting('touchstone.agency', true))
    WITH CHECK (agency = current_setting('touchstone.agency', true));

-- The start-up key check lists every agency's wrapped keys (wrapped by the
-- master key, so no personal data) to find the agencies to check.
CREATE POLICY key_check ON agency_keys FOR SELECT
    USING (current_setting('touchstone.agency', true) = '*');
CREATE POLICY key_check ON agency_older_keys FOR SELECT
    USING (current_setting('touchstone.agency', true) = '*');

-- When every sealed value in this database was last proved to open with the
-- keys stored in it (done once; from then on keys commit with what they seal).
-- Holds no agency data, so it has no row-level security.
CREATE TABLE key_checks (
    name       TEXT   NOT NULL PRIMARY KEY,
    check_time BIGINT NOT NULL
);
