-- Responses by the time they were given: the A-11 report, the dashboard's
-- comment topics and any list filtered or ordered by submit_time read a
-- period's responses through it instead of every response of the agency.
CREATE INDEX responses_by_submit_time ON responses (agency, submit_time, id);
