-- Outbox: the change feed, written in the same transaction as the change.
CREATE TABLE events (
    sequence      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    agency        TEXT   NOT NULL,
    type          TEXT   NOT NULL,
    name          TEXT   NOT NULL,
    occurred_time BIGINT NOT NULL,
    payload       BYTEA  NOT NULL
);
CREATE INDEX events_by_agency ON events (agency, sequence);

-- AIP-155 request ids: the first response of each request, replayed on retry.
CREATE TABLE idempotency (
    agency      TEXT   NOT NULL,
    method      TEXT   NOT NULL,
    request_id  TEXT   NOT NULL,
    fingerprint TEXT   NOT NULL,
    resource    TEXT   NOT NULL,
    response    BYTEA,
    create_time BIGINT NOT NULL,
    PRIMARY KEY (agency, method, request_id)
);

-- Per-agency data keys, wrapped by the master key.
CREATE TABLE agency_keys (
    agency      TEXT   NOT NULL PRIMARY KEY,
    wrapped_key BYTEA  NOT NULL,
    create_time BIGINT NOT NULL
);

-- Who read or changed personal data, when.
CREATE TABLE audit_records (
    agency     TEXT   NOT NULL,
    id         TEXT   NOT NULL,
    actor      TEXT   NOT NULL,
    action     TEXT   NOT NULL,
    resource   TEXT   NOT NULL,
    request_id TEXT   NOT NULL,
    time       BIGINT NOT NULL,
    PRIMARY KEY (agency, id)
);
CREATE INDEX audit_records_by_resource ON audit_records (agency, resource);

-- Row-level security: every row belongs to an agency, and a transaction sees
-- only the agency it set with set_config('touchstone.agency', ..., true).
-- Only the change feed may be read across agencies ('*'), by service callers.
ALTER TABLE events ENABLE ROW LEVEL SECURITY;
ALTER TABLE events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON events
    USING (agency = current_setting('touchstone.agency', true))
    WITH CHECK (agency = current_setting('touchstone.agency', true));
CREATE POLICY feed_reader ON events FOR SELECT
    USING (current_setting('touchstone.agency', true) = '*');

ALTER TABLE idempotency ENABLE ROW LEVEL SECURITY;
ALTER TABLE idempotency FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON idempotency
    USING (agency = current_setting('touchstone.agency', true))
    WITH CHECK (agency = current_setting('touchstone.agency', true));
-- The hourly purge of expired request ids runs across agencies (a DELETE with
-- a WHERE clause must also pass a SELECT policy).
CREATE POLICY purge_read ON idempotency FOR SELECT
    USING (current_setting('touchstone.agency', true) = '*');
CREATE POLICY purge ON idempotency FOR DELETE
    USING (current_setting('touchstone.agency', true) = '*');

ALTER TABLE agency_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE agency_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON agency_keys
    USING (agency = current_setting('touchstone.agency', true))
    WITH CHECK (agency = current_setting('touchstone.agency', true));

ALTER TABLE audit_records ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_records FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON audit_records
    USING (agency = current_setting('touchstone.agency', true))
    WITH CHECK (agency = current_setting('touchstone.agency', true));
