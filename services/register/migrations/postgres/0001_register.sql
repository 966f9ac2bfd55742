-- Clients. Personal data lives only in `personal`, one AES-256-GCM sealed
-- JSON document per client under the agency's data key; NULL once erased.
CREATE TABLE clients (
    agency              TEXT    NOT NULL,
    id                  TEXT    NOT NULL,
    kind                BIGINT  NOT NULL,
    preferred_channel   BIGINT  NOT NULL,
    preferred_language  TEXT    NOT NULL,
    interpreter_needed  BOOLEAN NOT NULL,
    accessibility_needs TEXT    NOT NULL,
    personal            BYTEA,
    erased              BOOLEAN NOT NULL DEFAULT FALSE,
    erase_time          BIGINT,
    create_time         BIGINT  NOT NULL,
    update_time         BIGINT  NOT NULL,
    revision            BIGINT  NOT NULL,
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
    purpose     BIGINT  NOT NULL,
    granted     BOOLEAN NOT NULL,
    change_time BIGINT  NOT NULL,
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
    status           BIGINT  NOT NULL,
    next_review_date BIGINT,
    personal         BYTEA,
    create_time      BIGINT  NOT NULL,
    update_time      BIGINT  NOT NULL,
    revision         BIGINT  NOT NULL,
    PRIMARY KEY (agency, id)
);
CREATE INDEX needs_by_client ON needs (agency, client_id, create_time);
CREATE INDEX needs_by_review ON needs (agency, status, next_review_date);

-- Row-level security: a transaction sees only the agency it set.
ALTER TABLE clients ENABLE ROW LEVEL SECURITY;
ALTER TABLE clients FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON clients
    USING (agency = current_setting('touchstone.agency', true))
    WITH CHECK (agency = current_setting('touchstone.agency', true));
ALTER TABLE client_lookup ENABLE ROW LEVEL SECURITY;
ALTER TABLE client_lookup FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON client_lookup
    USING (agency = current_setting('touchstone.agency', true))
    WITH CHECK (agency = current_setting('touchstone.agency', true));
ALTER TABLE consent_changes ENABLE ROW LEVEL SECURITY;
ALTER TABLE consent_changes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON consent_changes
    USING (agency = current_setting('touchstone.agency', true))
    WITH CHECK (agency = current_setting('touchstone.agency', true));
ALTER TABLE needs ENABLE ROW LEVEL SECURITY;
ALTER TABLE needs FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON needs
    USING (agency = current_setting('touchstone.agency', true))
    WITH CHECK (agency = current_setting('touchstone.agency', true));
