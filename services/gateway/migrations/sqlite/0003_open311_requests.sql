-- Requests taken in through Open311 `POST requests`: each became a complaint
-- (its id is the service_request_id). Kept here is only what Open311 shows
-- publicly beside the complaint's status: the service, where, and when; and,
-- for a retried POST, a keyed hash of the request (never its content).
CREATE TABLE hub_open311_requests (
    agency          TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    service_code    TEXT    NOT NULL,
    api_key         TEXT    NOT NULL,
    retry_key       TEXT    NOT NULL,
    latitude        TEXT    NOT NULL,
    longitude       TEXT    NOT NULL,
    address_string  TEXT    NOT NULL,
    address_id      TEXT    NOT NULL,
    requested_time  BIGINT  NOT NULL,
    PRIMARY KEY (agency, id)
);
CREATE INDEX hub_open311_requests_by_time ON hub_open311_requests (agency, requested_time);
CREATE INDEX hub_open311_requests_by_retry ON hub_open311_requests (agency, retry_key);
