-- Where each consumed change feed has been applied up to. Advanced in the same
-- transaction as the effect of the events, so each event counts exactly once.
-- Holds no agency data, so it has no row-level security: a consumer applies a
-- run of one agency's events in that agency's scope and moves the cursor in
-- the same transaction.
CREATE TABLE feed_cursors (
    feed        TEXT   NOT NULL PRIMARY KEY,
    sequence    BIGINT NOT NULL,
    update_time BIGINT NOT NULL
);
