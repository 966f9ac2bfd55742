-- Surveys. The questions and rules are one JSON document: they are read and
-- written whole, and never change once the survey is published.
CREATE TABLE surveys (
    agency           TEXT   NOT NULL,
    id               TEXT   NOT NULL,
    title            TEXT   NOT NULL,
    description      TEXT   NOT NULL,
    state            BIGINT NOT NULL,
    service          TEXT   NOT NULL,
    unit             TEXT   NOT NULL,
    channel          BIGINT NOT NULL,
    stage            TEXT   NOT NULL,
    definition       TEXT   NOT NULL,
    version          BIGINT NOT NULL,
    previous_version TEXT   NOT NULL,
    create_time      BIGINT NOT NULL,
    update_time      BIGINT NOT NULL,
    publish_time     BIGINT,
    close_time       BIGINT,
    revision         BIGINT NOT NULL,
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
    channel         BIGINT  NOT NULL,
    unit            TEXT    NOT NULL,
    submit_time     BIGINT  NOT NULL,
    transaction_id  TEXT,
    import_key      TEXT,
    client_id       TEXT,
    contact_agreed  BOOLEAN NOT NULL,
    characteristics TEXT,
    answers         TEXT    NOT NULL,
    originals       BYTEA,
    sentiment       BIGINT,
    anonymous       BOOLEAN NOT NULL,
    follow_up_id    TEXT,
    erased          BOOLEAN NOT NULL DEFAULT FALSE,
    create_time     BIGINT  NOT NULL,
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
    item        BIGINT NOT NULL,
    score       BIGINT NOT NULL,
    submit_time BIGINT NOT NULL,
    PRIMARY KEY (agency, response_id, item)
);
CREATE INDEX response_scores_by_time ON response_scores (agency, submit_time);

-- Customers served and offered a survey, per survey and period.
CREATE TABLE volumes (
    agency            TEXT   NOT NULL,
    id                TEXT   NOT NULL,
    survey_id         TEXT   NOT NULL,
    start_date        BIGINT NOT NULL,
    end_date          BIGINT NOT NULL,
    customers_served  BIGINT NOT NULL,
    customers_offered BIGINT NOT NULL,
    create_time       BIGINT NOT NULL,
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
    status      BIGINT NOT NULL,
    assignee    TEXT   NOT NULL,
    due_date    BIGINT NOT NULL,
    unit        TEXT   NOT NULL,
    channel     BIGINT NOT NULL,
    create_time BIGINT NOT NULL,
    update_time BIGINT NOT NULL,
    close_time  BIGINT,
    revision    BIGINT NOT NULL,
    PRIMARY KEY (agency, id)
);
CREATE INDEX follow_ups_by_create_time ON follow_ups (agency, create_time, id);
CREATE INDEX follow_ups_by_due_date ON follow_ups (agency, status, due_date);

-- Row-level security: a transaction sees only the agency it set.
ALTER TABLE surveys ENABLE ROW LEVEL SECURITY;
ALTER TABLE surveys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON surveys
    USING (agency = current_setting('touchstone.agency', true))
    WITH CHECK (agency = current_setting('touchstone.agency', true));
ALTER TABLE responses ENABLE ROW LEVEL SECURITY;
ALTER TABLE responses FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON responses
    USING (agency = current_setting('touchstone.agency', true))
    WITH CHECK (agency = current_setting('touchstone.agency', true));
ALTER TABLE response_scores ENABLE ROW LEVEL SECURITY;
ALTER TABLE response_scores FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON response_scores
    USING (agency = current_setting('touchstone.agency', true))
    WITH CHECK (agency = current_setting('touchstone.agency', true));
ALTER TABLE volumes ENABLE ROW LEVEL SECURITY;
ALTER TABLE volumes FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON volumes
    USING (agency = current_setting('touchstone.agency', true))
    WITH CHECK (agency = current_setting('touchstone.agency', true));
ALTER TABLE follow_ups ENABLE ROW LEVEL SECURITY;
ALTER TABLE follow_ups FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON follow_ups
    USING (agency = current_setting('touchstone.agency', true))
    WITH CHECK (agency = current_setting('touchstone.agency', true));
