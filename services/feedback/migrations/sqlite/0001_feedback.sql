-- The feedback service's tables.
CREATE TABLE feedback_placeholder (agency TEXT NOT NULL PRIMARY KEY);
