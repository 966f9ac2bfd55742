-- The kpi service's tables.
CREATE TABLE kpi_placeholder (agency TEXT NOT NULL PRIMARY KEY);
