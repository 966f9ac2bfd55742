-- The kpi service's tables. No personal data: resource names of complaints
-- and follow-ups, units, channels, days and counts only.

-- The rollup: how many observations of each value a measure had, per
-- agency x service x unit x channel x segment x agency-local day (days since
-- 1970-01-01). Counts, sums, sums of squares, score distributions and
-- working-day histograms are all read off these value counts.
CREATE TABLE kpi_cells (
    agency  TEXT    NOT NULL,
    measure TEXT    NOT NULL,
    day     BIGINT  NOT NULL,
    service TEXT    NOT NULL,
    unit    TEXT    NOT NULL,
    channel BIGINT  NOT NULL,
    segment TEXT    NOT NULL,
    value   BIGINT  NOT NULL,
    count   BIGINT  NOT NULL,
    PRIMARY KEY (agency, measure, day, service, unit, channel, segment, value)
);

-- The same counts summed over service, unit, channel and segment, for the
-- common whole-agency query.
CREATE TABLE kpi_day_totals (
    agency  TEXT    NOT NULL,
    measure TEXT    NOT NULL,
    day     BIGINT  NOT NULL,
    value   BIGINT  NOT NULL,
    count   BIGINT  NOT NULL,
    PRIMARY KEY (agency, measure, day, value)
);

-- Per complaint, what later events need to find their cohort: the day it
-- was received and first resolved, and whether it was escalated or
-- reopened (each counted once).
CREATE TABLE kpi_complaints (
    agency      TEXT   NOT NULL,
    complaint   TEXT   NOT NULL,
    service     TEXT   NOT NULL,
    unit        TEXT   NOT NULL,
    channel     BIGINT NOT NULL,
    receive_day BIGINT NOT NULL,
    escalated   BIGINT NOT NULL,
    resolve_day BIGINT,
    reopened    BIGINT NOT NULL,
    PRIMARY KEY (agency, complaint)
);

-- Open follow-ups' due days, until they close.
CREATE TABLE kpi_follow_ups (
    agency    TEXT   NOT NULL,
    follow_up TEXT   NOT NULL,
    unit      TEXT   NOT NULL,
    channel   BIGINT NOT NULL,
    due_day   BIGINT NOT NULL,
    PRIMARY KEY (agency, follow_up)
);

-- Volume records as last recorded, so that a correction replaces its
-- earlier figures instead of adding to them.
CREATE TABLE kpi_volumes (
    agency    TEXT   NOT NULL,
    volume    TEXT   NOT NULL,
    service   TEXT   NOT NULL,
    unit      TEXT   NOT NULL,
    channel   BIGINT NOT NULL,
    start_day BIGINT NOT NULL,
    end_day   BIGINT NOT NULL,
    served    BIGINT NOT NULL,
    offered   BIGINT NOT NULL,
    PRIMARY KEY (agency, volume)
);

-- Service standards (the charter): agencies/{agency}/standards/{id}.
CREATE TABLE kpi_standards (
    agency       TEXT             NOT NULL,
    id           TEXT             NOT NULL,
    display_name TEXT             NOT NULL,
    description  TEXT             NOT NULL,
    indicator    TEXT             NOT NULL,
    service      TEXT             NOT NULL,
    unit         TEXT             NOT NULL,
    channel      BIGINT           NOT NULL,
    comparator   BIGINT           NOT NULL,
    target       REAL             NOT NULL,
    period       BIGINT           NOT NULL,
    published    BIGINT           NOT NULL,
    revision     BIGINT           NOT NULL,
    create_time  BIGINT           NOT NULL,
    update_time  BIGINT           NOT NULL,
    PRIMARY KEY (agency, id)
);
