-- Surveys. The questions and rules are one JSON document: they are read and
-- written whole, and never change once the survey is published.
CREATE TABLE surveys (
    agency           TEXT   NOT NULL,
    id               TEXT   NOT NULL,
    title            TEXT   NOT NULL,
    description      TEXT   NOT NULL,
    state            INTEGER NOT NULL,
    service          TEXT   NOT NULL,
    unit             TEXT   NOT NULL,
    channel          INTEGER NOT NULL,
    stage            TEXT   NOT NULL,
    definition       TEXT   NOT NULL,
    version          INTEGER NOT NULL,
    previous_version TEXT   NOT NULL,
    create_time      INTEGER NOT NULL,
    update_time      INTEGER NOT NULL,
    publish_time     INTEGER,
    close_time       INTEGER,
    revision         INTEGER NOT NULL,
    PRIMARY KEY (agency, id)
);
CREATE INDEX surveys_by_create_time ON surveys (agency, create_time, id);

-- Responses. `answers` is the analysis copy (scores, choices, masked comment
-- text, sentiment, topics); the comments as written are sealed in `originals`
-- under the agency's data key and set to NULL when the client is erased.
CREATE TABLE responses (
    agency          TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    survey_id       TEXT    NOT NULL,
    channel         INTEGER  NOT NULL,
    unit            TEXT    NOT NULL,
    submit_time     INTEGER  NOT NULL,
    transaction_id  TEXT,
    import_key      TEXT,
    client_id       TEXT,
    contact_agreed  INTEGER NOT NULL,
    characteristics TEXT,
    answers         TEXT    NOT NULL,
    originals       BLOB,
    sentiment       INTEGER,
    anonymous       INTEGER NOT NULL,
    follow_up_id    TEXT,
    erased          INTEGER NOT NULL DEFAULT FALSE,
    create_time     INTEGER  NOT NULL,
    PRIMARY KEY (agency, id),
    UNIQUE (agency, survey_id, transaction_id),
    UNIQUE (agency, survey_id, import_key)
);
CREATE INDEX responses_by_survey ON responses (agency, survey_id, create_time, id);
CREATE INDEX responses_by_client ON responses (agency, client_id);

-- Scores of standard items, one row per item answered, for the A-11 report.
CREATE TABLE response_scores (
    agency      TEXT   NOT NULL,
    response_id TEXT   NOT NULL,
    survey_id   TEXT   NOT NULL,
    item        INTEGER NOT NULL,
    score       INTEGER NOT NULL,
    submit_time INTEGER NOT NULL,
    PRIMARY KEY (agency, response_id, item)
);
CREATE INDEX response_scores_by_time ON response_scores (agency, submit_time);

-- Customers served and offered a survey, per survey and period.
CREATE TABLE volumes (
    agency            TEXT   NOT NULL,
    id                TEXT   NOT NULL,
    survey_id         TEXT   NOT NULL,
    start_date        INTEGER NOT NULL,
    end_date          INTEGER NOT NULL,
    customers_served  INTEGER NOT NULL,
    customers_offered INTEGER NOT NULL,
    create_time       INTEGER NOT NULL,
    PRIMARY KEY (agency, id)
);
CREATE INDEX volumes_by_start ON volumes (agency, start_date);

-- Follow-ups opened by closed-loop rules.
CREATE TABLE follow_ups (
    agency      TEXT   NOT NULL,
    id          TEXT   NOT NULL,
    survey_id   TEXT   NOT NULL,
    response_id TEXT   NOT NULL,
    client_id   TEXT   NOT NULL,
    reason      TEXT   NOT NULL,
    status      INTEGER NOT NULL,
    assignee    TEXT   NOT NULL,
    due_date    INTEGER NOT NULL,
    unit        TEXT   NOT NULL,
    channel     INTEGER NOT NULL,
    create_time INTEGER NOT NULL,
    update_time INTEGER NOT NULL,
    close_time  INTEGER,
    revision    INTEGER NOT NULL,
    PRIMARY KEY (agency, id)
);
CREATE INDEX follow_ups_by_create_time ON follow_ups (agency, create_time, id);
CREATE INDEX follow_ups_by_due_date ON follow_ups (agency, status, due_date);
