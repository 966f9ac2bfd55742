-- The change feed's order on PostgreSQL without a lock held through commit
-- (DESIGN §6): each event carries the id of the transaction that wrote it.
-- Readers take only events whose transaction id is below the oldest one still
-- running (that set can no longer grow), in (xid, sequence) order. Rows that
-- exist when this runs all get this migration's transaction id, which keeps
-- their order by sequence.
ALTER TABLE events
    ADD COLUMN xid BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint);
CREATE INDEX events_by_xid ON events (xid, sequence);
CREATE INDEX events_by_agency_xid ON events (agency, xid, sequence);
