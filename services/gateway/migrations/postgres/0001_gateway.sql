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
    peer_group TEXT   NOT NULL REFERENCES hub_peer_groups (id) ON DELETE CASCADE,
    agency     TEXT   NOT NULL,
    position   BIGINT NOT NULL,
    PRIMARY KEY (peer_group, agency)
);
CREATE INDEX hub_members_by_agency ON hub_peer_group_members (agency);

-- Row-level security. An agency's transaction ('touchstone.agency' = its
-- id) sees its own agency row and units; hub work runs in the hub scope
-- '-' (never an agency id: ids do not start with '-'), which sees the
-- whole directory. Peer groups are hub data only.
ALTER TABLE hub_agencies ENABLE ROW LEVEL SECURITY;
ALTER TABLE hub_agencies FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON hub_agencies
    USING (id = current_setting('touchstone.agency', true)
           OR current_setting('touchstone.agency', true) IN ('-', '*'))
    WITH CHECK (id = current_setting('touchstone.agency', true)
           OR current_setting('touchstone.agency', true) IN ('-', '*'));
ALTER TABLE hub_units ENABLE ROW LEVEL SECURITY;
ALTER TABLE hub_units FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant ON hub_units
    USING (agency = current_setting('touchstone.agency', true)
           OR current_setting('touchstone.agency', true) IN ('-', '*'))
    WITH CHECK (agency = current_setting('touchstone.agency', true)
           OR current_setting('touchstone.agency', true) IN ('-', '*'));
ALTER TABLE hub_peer_groups ENABLE ROW LEVEL SECURITY;
ALTER TABLE hub_peer_groups FORCE ROW LEVEL SECURITY;
CREATE POLICY hub ON hub_peer_groups
    USING (current_setting('touchstone.agency', true) IN ('-', '*'))
    WITH CHECK (current_setting('touchstone.agency', true) IN ('-', '*'));
ALTER TABLE hub_peer_group_members ENABLE ROW LEVEL SECURITY;
ALTER TABLE hub_peer_group_members FORCE ROW LEVEL SECURITY;
CREATE POLICY hub ON hub_peer_group_members
    USING (current_setting('touchstone.agency', true) IN ('-', '*'))
    WITH CHECK (current_setting('touchstone.agency', true) IN ('-', '*'));
