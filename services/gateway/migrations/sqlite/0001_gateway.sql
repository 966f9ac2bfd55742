-- The hub directory: agencies (tenants) with their benchmarking consent,
-- their units, and peer groups of agencies. No personal data.
CREATE TABLE hub_agencies (
    id           TEXT    NOT NULL PRIMARY KEY,
    display_name TEXT    NOT NULL,
    time_zone    TEXT    NOT NULL,
    consent      BIGINT  NOT NULL,
    revision     BIGINT  NOT NULL,
    create_time  BIGINT  NOT NULL,
    update_time  BIGINT  NOT NULL
);

CREATE TABLE hub_units (
    agency       TEXT    NOT NULL,
    id           TEXT    NOT NULL,
    display_name TEXT    NOT NULL,
    revision     BIGINT  NOT NULL,
    create_time  BIGINT  NOT NULL,
    update_time  BIGINT  NOT NULL,
    PRIMARY KEY (agency, id)
);

CREATE TABLE hub_peer_groups (
    id           TEXT    NOT NULL PRIMARY KEY,
    display_name TEXT    NOT NULL,
    revision     BIGINT  NOT NULL,
    create_time  BIGINT  NOT NULL,
    update_time  BIGINT  NOT NULL
);

-- Members in the order the hub gave them.
CREATE TABLE hub_peer_group_members (
    peer_group TEXT   NOT NULL,
    agency     TEXT   NOT NULL,
    position   BIGINT NOT NULL,
    PRIMARY KEY (peer_group, agency)
);
CREATE INDEX hub_members_by_agency ON hub_peer_group_members (agency);
