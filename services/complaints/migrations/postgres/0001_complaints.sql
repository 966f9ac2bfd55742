-- Complaints. `state` is the JSON of what replaying the history gives (no
-- personal data); the columns beside it are copies of it for filtering.
-- `personal` is the sealed (AES-256-GCM) document of the complainant's
-- contact details and the narratives; NULL once redacted.
CREATE TABLE complaints (
    agency        TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    client_id     TEXT    NOT NULL,
    client_check  BIGINT  NOT NULL,
    anonymous     BOOLEAN NOT NULL,
    channel       BIGINT  NOT NULL,
    service       TEXT    NOT NULL,
    category      TEXT    NOT NULL,
    unit          TEXT    NOT NULL,
    officer       TEXT    NOT NULL,
    severity      BIGINT  NOT NULL,
    status        BIGINT  NOT NULL,
    stage         BIGINT  NOT NULL,
    senior_queue  BOOLEAN NOT NULL,
    receive_time  BIGINT  NOT NULL,
    due_time      BIGINT NOT NULL,
    overdue_from  BIGINT,
    accessibility TEXT    NOT NULL,
    state         TEXT    NOT NULL,
    personal      BYTEA,
    redacted      BOOLEAN NOT NULL,
    revision      BIGINT  NOT NULL,
    create_time   BIGINT  NOT NULL,
    update_time   BIGINT  NOT NULL,
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
    sequence     BIGINT  NOT NULL,
    action       TEXT    NOT NULL,
    actor        TEXT    NOT NULL,
    time         BIGINT  NOT NULL,
    command      TEXT    NOT NULL,
    from_status  BIGINT  NOT NULL,
    to_status    BIGINT  NOT NULL,
    from_stage   BIGINT  NOT NULL,
    to_stage     BIGINT  NOT NULL,
    note         BYTEA,
    PRIMARY KEY (agency, complaint_id, sequence)
);

-- Communications with the complainant; `summary` is sealed.
CREATE TABLE complaint_contacts (
    agency       TEXT    NOT NULL,
    complaint_id TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    channel      BIGINT  NOT NULL,
    direction    BIGINT  NOT NULL,
    contact_time BIGINT  NOT NULL,
    summary      BYTEA,
    officer      TEXT    NOT NULL,
    create_time  BIGINT  NOT NULL,
    PRIMARY KEY (agency, complaint_id, id)
);

-- Working-day calendars; `fields` is JSON.
CREATE TABLE calendars (
    agency      TEXT    NOT NULL,
    id          TEXT    NOT NULL,
    fields      TEXT    NOT NULL,
    revision    BIGINT  NOT NULL,
    create_time BIGINT  NOT NULL,
    update_time BIGINT  NOT NULL,
    PRIMARY KEY (agency, id)
);

-- One complaint standard per agency; `fields` is JSON.
CREATE TABLE complaint_standards (
    agency      TEXT    NOT NULL PRIMARY KEY,
    fields      TEXT    NOT NULL,
    revision    BIGINT  NOT NULL,
    update_time BIGINT  NOT NULL
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
    state                BIGINT  NOT NULL,
    revision             BIGINT  NOT NULL,
    create_time          BIGINT  NOT NULL,
    update_time          BIGINT  NOT NULL,
    PRIMARY KEY (agency, id)
);
CREATE INDEX issues_by_time ON issues (agency, create_time);

-- Row-level security: a transaction sees only the agency it set with
-- set_config('touchstone.agency', ..., true).
ALTER TABLE complaints ENABLE ROW LEVEL SECURITY;
ALTER TABLE complaints FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON complaints
    USING (agency = current_setting('touchstone.agency', true))
    WITH CHECK (agency = current_setting('touchstone.agency', true));
ALTER TABLE complaint_history ENABLE ROW LEVEL SECURITY;
ALTER TABLE complaint_history FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON complaint_history
    USING (agency = current_setting('touchstone.agency', true))
    WITH CHECK (agency = current_setting('touchstone.agency', true));
ALTER TABLE complaint_contacts ENABLE ROW LEVEL SECURITY;
ALTER TABLE complaint_contacts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON complaint_contacts
    USING (agency = current_setting('touchstone.agency', true))
    WITH CHECK (agency = current_setting('touchstone.agency', true));
ALTER TABLE calendars ENABLE ROW LEVEL SECURITY;
ALTER TABLE calendars FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON calendars
    USING (agency = current_setting('touchstone.agency', true))
    WITH CHECK (agency = current_setting('touchstone.agency', true));
ALTER TABLE complaint_standards ENABLE ROW LEVEL SECURITY;
ALTER TABLE complaint_standards FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON complaint_standards
    USING (agency = current_setting('touchstone.agency', true))
    WITH CHECK (agency = current_setting('touchstone.agency', true));
ALTER TABLE issues ENABLE ROW LEVEL SECURITY;
ALTER TABLE issues FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON issues
    USING (agency = current_setting('touchstone.agency', true))
    WITH CHECK (agency = current_setting('touchstone.agency', true));
-- The background check of client references pending since intake runs
-- across agencies ('*'): it may read and update complaints only.
CREATE POLICY pending_check_read ON complaints FOR SELECT
    USING (current_setting('touchstone.agency', true) = '*' AND client_check = 2);
