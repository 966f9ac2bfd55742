-- Clients. Personal data lives only in `personal`, one AES-256-GCM sealed
-- JSON document per client under the agency's data key; NULL once erased.
CREATE TABLE clients (
    agency              TEXT    NOT NULL,
    id                  TEXT    NOT NULL,
    kind                INTEGER NOT NULL,
    preferred_channel   INTEGER NOT NULL,
    preferred_language  TEXT    NOT NULL,
    interpreter_needed  INTEGER NOT NULL,
    accessibility_needs TEXT    NOT NULL,
    personal            BLOB,
    erased              INTEGER NOT NULL DEFAULT FALSE,
    erase_time          INTEGER,
    create_time         INTEGER NOT NULL,
    update_time         INTEGER NOT NULL,
    revision            INTEGER NOT NULL,
    PRIMARY KEY (agency, id)
);
CREATE INDEX clients_by_create_time ON clients (agency, create_time, id);
CREATE INDEX clients_by_update_time ON clients (agency, update_time, id);

-- Exact-match search: keyed hashes (HMAC) of normalised values.
CREATE TABLE client_lookup (
    agency    TEXT NOT NULL,
    kind      TEXT NOT NULL,
    digest    TEXT NOT NULL,
    client_id TEXT NOT NULL,
    PRIMARY KEY (agency, kind, digest, client_id)
);
CREATE INDEX client_lookup_by_client ON client_lookup (agency, client_id);

-- Consent grants and withdrawals, append-only; the latest per purpose counts.
CREATE TABLE consent_changes (
    agency      TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    client_id   TEXT    NOT NULL,
    purpose     INTEGER NOT NULL,
    granted     INTEGER NOT NULL,
    change_time INTEGER NOT NULL,
    actor       TEXT    NOT NULL,
    source      TEXT    NOT NULL,
    PRIMARY KEY (agency, id)
);
CREATE INDEX consent_changes_by_client ON consent_changes (agency, client_id, change_time);

-- Needs records; description and agreed option are sealed in `personal`.
CREATE TABLE needs (
    agency           TEXT    NOT NULL,
    id               TEXT    NOT NULL,
    client_id        TEXT    NOT NULL,
    category         TEXT    NOT NULL,
    status           INTEGER NOT NULL,
    next_review_date INTEGER,
    personal         BLOB,
    create_time      INTEGER NOT NULL,
    update_time      INTEGER NOT NULL,
    revision         INTEGER NOT NULL,
    PRIMARY KEY (agency, id)
);
CREATE INDEX needs_by_client ON needs (agency, client_id, create_time);
CREATE INDEX needs_by_review ON needs (agency, status, next_review_date);
