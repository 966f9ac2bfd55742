-- One row that health rewrites to find out whether the database takes writes
-- (DESIGN §5: NOT_SERVING while writes cannot succeed). Holds no agency data.
CREATE TABLE write_probe (
    id         INTEGER NOT NULL PRIMARY KEY,
    probe_time BIGINT  NOT NULL
);
INSERT INTO write_probe (id, probe_time) VALUES (1, 0);
