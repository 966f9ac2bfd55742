-- Surveys as Open311 services: the survey a service's requests answer, and
-- its questions as Open311 attributes (JSON), as they were when the service
-- was made; and, per request, the survey it answered (empty for a complaint).
ALTER TABLE hub_open311_services ADD COLUMN survey TEXT NOT NULL DEFAULT '';
ALTER TABLE hub_open311_services ADD COLUMN attributes TEXT NOT NULL DEFAULT '[]';
ALTER TABLE hub_open311_requests ADD COLUMN survey TEXT NOT NULL DEFAULT '';
