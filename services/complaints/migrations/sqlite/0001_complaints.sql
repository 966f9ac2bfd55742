-- The complaints service's tables.
CREATE TABLE complaints_placeholder (agency TEXT NOT NULL PRIMARY KEY);
