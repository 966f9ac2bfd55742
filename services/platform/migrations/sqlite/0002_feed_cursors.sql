-- Where each consumed change feed has been applied up to. Advanced in the same
-- transaction as the effect of the events, so each event counts exactly once.
-- Holds no agency data.
CREATE TABLE feed_cursors (
    feed        TEXT    NOT NULL PRIMARY KEY,
    sequence    INTEGER NOT NULL,
    update_time INTEGER NOT NULL
);
