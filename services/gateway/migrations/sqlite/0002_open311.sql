-- API keys of agency systems (the Open311 `api_key`). Only a SHA-256 hash of
-- each key is kept: a key is 256 random bits, so a fast hash is enough.
CREATE TABLE hub_api_keys (
    agency              TEXT    NOT NULL,
    id                  TEXT    NOT NULL,
    display_name        TEXT    NOT NULL,
    key_hash            TEXT    NOT NULL,
    requests_per_minute BIGINT  NOT NULL,
    create_time         BIGINT  NOT NULL,
    revoke_time         BIGINT,
    PRIMARY KEY (agency, id)
);
CREATE UNIQUE INDEX hub_api_keys_by_hash ON hub_api_keys (key_hash);

-- Complaint categories an agency offers as Open311 services; the id is the
-- Open311 service_code.
CREATE TABLE hub_open311_services (
    agency             TEXT    NOT NULL,
    id                 TEXT    NOT NULL,
    display_name       TEXT    NOT NULL,
    description        TEXT    NOT NULL,
    group_name         TEXT    NOT NULL,
    keywords           TEXT    NOT NULL,
    complaint_category TEXT    NOT NULL,
    complaint_service  TEXT    NOT NULL,
    create_time        BIGINT  NOT NULL,
    PRIMARY KEY (agency, id)
);
