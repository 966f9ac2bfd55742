-- Complaints. `state` is the JSON of what replaying the history gives (no
-- personal data); the columns beside it are copies of it for filtering.
-- `personal` is the sealed (AES-256-GCM) document of the complainant's
-- contact details and the narratives; NULL once redacted.
CREATE TABLE complaints (
    agency        TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    client_id     TEXT    NOT NULL,
    client_check  INTEGER NOT NULL,
    anonymous     INTEGER NOT NULL,
    channel       INTEGER NOT NULL,
    service       TEXT    NOT NULL,
    category      TEXT    NOT NULL,
    unit          TEXT    NOT NULL,
    officer       TEXT    NOT NULL,
    severity      INTEGER NOT NULL,
    status        INTEGER NOT NULL,
    stage         INTEGER NOT NULL,
    senior_queue  INTEGER NOT NULL,
    receive_time  INTEGER NOT NULL,
    due_time      INTEGER NOT NULL,
    overdue_from  INTEGER,
    accessibility TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    personal      BLOB,
    redacted      INTEGER NOT NULL,
    revision      INTEGER NOT NULL,
    create_time   INTEGER NOT NULL,
    update_time   INTEGER NOT NULL,
    PRIMARY KEY (agency, id)
);
CREATE INDEX complaints_by_receipt ON complaints (agency, receive_time);
-- Lists by due time, and the overdue list (overdue rows are the earliest due):
-- due_time is the largest BIGINT when nothing is pending, so it is never NULL
-- and an ORDER BY due_time, id walks this index, stopping at the page's end.
-- There is deliberately no index on overdue_from: given one, SQLite's planner
-- prefers it and sorts every overdue complaint to return one page.
CREATE INDEX complaints_by_due ON complaints (agency, due_time, id);
CREATE INDEX complaints_by_officer ON complaints (agency, officer, status);
CREATE INDEX complaints_by_client ON complaints (agency, client_id);
CREATE INDEX complaints_pending_check ON complaints (client_check) WHERE client_check = 2;

-- Every change of a complaint; replaying `command` in order gives `state`.
CREATE TABLE complaint_history (
    agency       TEXT    NOT NULL,
    complaint_id TEXT    NOT NULL,
    sequence     INTEGER NOT NULL,
    action       TEXT    NOT NULL,
    actor        TEXT    NOT NULL,
    time         INTEGER NOT NULL,
    command      TEXT    NOT NULL,
    from_status  INTEGER NOT NULL,
    to_status    INTEGER NOT NULL,
    from_stage   INTEGER NOT NULL,
    to_stage     INTEGER NOT NULL,
    note         BLOB,
    PRIMARY KEY (agency, complaint_id, sequence)
);

-- Communications with the complainant; `summary` is sealed.
CREATE TABLE complaint_contacts (
    agency       TEXT    NOT NULL,
    complaint_id TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    channel      INTEGER NOT NULL,
    direction    INTEGER NOT NULL,
    contact_time INTEGER NOT NULL,
    summary      BLOB,
    officer      TEXT    NOT NULL,
    create_time  INTEGER NOT NULL,
    PRIMARY KEY (agency, complaint_id, id)
);

-- Working-day calendars; `fields` is JSON.
CREATE TABLE calendars (
    agency      TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    fields      TEXT    NOT NULL,
    revision    INTEGER NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    PRIMARY KEY (agency, id)
);

-- One complaint standard per agency; `fields` is JSON.
CREATE TABLE complaint_standards (
    agency      TEXT    NOT NULL PRIMARY KEY,
    fields      TEXT    NOT NULL,
    revision    INTEGER NOT NULL,
    update_time INTEGER NOT NULL
);

-- The learning register: systemic issues found across complaints.
CREATE TABLE issues (
    agency               TEXT    NOT NULL,
    id                   TEXT    NOT NULL,
    title                TEXT    NOT NULL,
    description          TEXT    NOT NULL,
    complaints           TEXT    NOT NULL,
    recommended_solution TEXT    NOT NULL,
    owner                TEXT    NOT NULL,
    state                INTEGER NOT NULL,
    revision             INTEGER NOT NULL,
    create_time          INTEGER NOT NULL,
    update_time          INTEGER NOT NULL,
    PRIMARY KEY (agency, id)
);
CREATE INDEX issues_by_time ON issues (agency, create_time);
