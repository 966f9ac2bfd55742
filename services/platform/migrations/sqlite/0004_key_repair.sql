-- Older data keys of an agency that values in this database were sealed with
-- before each service kept its own keys (a repaired data directory): they
-- open those values and never seal new ones.
CREATE TABLE agency_older_keys (
    agency      TEXT    NOT NULL,
    key_id      TEXT    NOT NULL,
    wrapped_key BLOB    NOT NULL,
    create_time INTEGER NOT NULL,
    PRIMARY KEY (agency, key_id)
);

-- When every sealed value in this database was last proved to open with the
-- keys stored in it (done once; from then on keys commit with what they seal).
CREATE TABLE key_checks (
    name       TEXT    NOT NULL PRIMARY KEY,
    check_time INTEGER NOT NULL
);
