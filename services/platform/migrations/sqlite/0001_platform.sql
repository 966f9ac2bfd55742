-- Outbox: the change feed, written in the same transaction as the change.
CREATE TABLE events (
    sequence      INTEGER PRIMARY KEY AUTOINCREMENT,
    agency        TEXT    NOT NULL,
    type          TEXT    NOT NULL,
    name          TEXT    NOT NULL,
    occurred_time INTEGER NOT NULL,
    payload       BLOB    NOT NULL
);
CREATE INDEX events_by_agency ON events (agency, sequence);

-- AIP-155 request ids: the first response of each request, replayed on retry.
CREATE TABLE idempotency (
    agency      TEXT    NOT NULL,
    method      TEXT    NOT NULL,
    request_id  TEXT    NOT NULL,
    fingerprint TEXT    NOT NULL,
    resource    TEXT    NOT NULL,
    response    BLOB,
    create_time INTEGER NOT NULL,
    PRIMARY KEY (agency, method, request_id)
);

-- Per-agency data keys, wrapped by the master key.
CREATE TABLE agency_keys (
    agency      TEXT    NOT NULL PRIMARY KEY,
    wrapped_key BLOB    NOT NULL,
    create_time INTEGER NOT NULL
);

-- Who read or changed personal data, when.
CREATE TABLE audit_records (
    agency     TEXT    NOT NULL,
    id         TEXT    NOT NULL,
    actor      TEXT    NOT NULL,
    action     TEXT    NOT NULL,
    resource   TEXT    NOT NULL,
    request_id TEXT    NOT NULL,
    time       INTEGER NOT NULL,
    PRIMARY KEY (agency, id)
);
CREATE INDEX audit_records_by_resource ON audit_records (agency, resource);
