"""Open311 GeoReport v2 clients nobody here wrote, against a running
`touchstone up` (tests/python/run.sh runs it after client.py, which has made
the agency).

- `georeport` (PyPI, the GeoReport v2 wrapper the issue names) reads: the
  service list, a service definition, GET requests and GET request by id, in
  JSON and in XML (its XML path parses with xmltodict). It has no call for
  discovery, for POST requests or for tokens.
- `civicbot` (PyPI; its `open311` module is a GeoReport v2 client) posts
  requests (form-encoded, with `attribute[...]` support), reads tokens, and
  reads requests back; it speaks JSON only.
- Discovery has no call in either, so it is read with the standard library.
- A survey offered as a service: georeport reads its definition (the
  questions as attributes) and civicbot checks a request against that
  definition before it posts the answers as `attribute[...]`.

The agency's Open311 service and its API key are made through the gateway's
gRPC API, as an agency_admin would.

Environment: TS_AGENCY, TS_TOKEN (agency_admin among its roles), TS_GATEWAY and
TS_FEEDBACK (host:port), TS_OPEN311 (the base URL, http://host:port/open311/v2).
"""

import json
import os
import sys
import urllib.request

import grpc
import requests
import xmltodict
from civicbot.http import HttpError, HttpTransport, RateLimiter
from civicbot.open311 import CONFIRM_TOKEN, Open311Client, ValidationError
from civicbot.registry import Endpoint
from georeport import GeoReport

from touchstone.feedback.v1 import feedback_pb2, feedback_pb2_grpc
from touchstone.gateway.v1 import gateway_pb2, gateway_pb2_grpc

AGENCY = os.environ["TS_AGENCY"]
PARENT = f"agencies/{AGENCY}"
BASE = os.environ["TS_OPEN311"]
TOKEN = (("authorization", f"Bearer {os.environ['TS_TOKEN']}"),)
TIMEOUT = 60
CODE = "slow-service"

# Personal data sent with the request; none of it may come back publicly.
PERSONAL = {
    "first_name": "Aroha",
    "last_name": "Ngata",
    "email": "aroha.ngata@example.org",
    "phone": "+64 4 555 0199",
}
DESCRIPTION = "Waited 40 minutes at the counter with nobody serving"


def setup():
    """The Open311 service and an API key, through the gateway's gRPC API."""
    stub = gateway_pb2_grpc.GatewayServiceStub(grpc.insecure_channel(os.environ["TS_GATEWAY"]))
    stub.CreateOpen311Service(
        gateway_pb2.CreateOpen311ServiceRequest(
            parent=PARENT,
            open311_service_id=CODE,
            open311_service=gateway_pb2.Open311Service(
                display_name="Slow service at a service centre",
                description="Waiting too long to be served",
                group="service centres",
                keywords=["wait", "queue"],
                complaint_category="timeliness",
                complaint_service="counter service",
            ),
            request_id="py-open311-service",
        ),
        metadata=TOKEN,
        timeout=TIMEOUT,
    )
    key = stub.CreateApiKey(
        gateway_pb2.CreateApiKeyRequest(
            parent=PARENT,
            api_key_id="py-web-form",
            api_key=gateway_pb2.ApiKey(display_name="Python web form", requests_per_minute=600),
            request_id="py-open311-key",
        ),
        metadata=TOKEN,
        timeout=TIMEOUT,
    ).key
    assert key.startswith("ts311_"), "the key is in CreateApiKey's answer"
    print("ok   open311: CreateOpen311Service, CreateApiKey (gRPC)")
    return key


def discovery():
    for fmt in ("json", "xml"):
        with urllib.request.urlopen(f"{BASE}/discovery.{fmt}", timeout=TIMEOUT) as r:
            body = r.read().decode("utf-8")
        if fmt == "json":
            endpoint = json.loads(body)["endpoints"][0]
        else:
            endpoint = xmltodict.parse(body)["discovery"]["endpoints"]["endpoint"]
        assert endpoint["type"] == "production", endpoint
        assert endpoint["url"].endswith("/open311/v2"), endpoint
    print("ok   open311: discovery.json, discovery.xml (standard library; no client implements it)")


def catalogue():
    for fmt in ("json", "xml"):
        client = GeoReport(BASE, jurisdiction=AGENCY, output_format=fmt)
        services = client.get_service_list()
        if isinstance(services, dict):  # xmltodict: one element is a dict
            services = [services]
        codes = [s["service_code"] for s in services]
        assert codes == [CODE], codes
        assert services[0]["service_name"] == "Slow service at a service centre"
        definition = client.get_service_definition(CODE)
        assert definition["service_code"] == CODE, definition
    print("ok   open311: georeport get_service_list, get_service_definition (JSON and XML)")


def civic_client():
    endpoint = Endpoint(id="touchstone", name="Touchstone", base_url=BASE, write=True)
    transport = HttpTransport(rate_limiter=RateLimiter(min_interval=0.0))
    return Open311Client(endpoint, transport=transport, jurisdiction_id=AGENCY), transport


def post(key):
    client, transport = civic_client()
    fields = dict(
        lat=-41.2865,
        lng=174.7762,
        address_string="Service centre, 1 Lambton Quay",
        description=DESCRIPTION,
        device_id="py-device-1",
        account_id="py-account-1",
        **PERSONAL,
    )
    sent = client.create_request(
        CODE, dry_run=False, confirm=CONFIRM_TOKEN, api_key=key, validate_remote=True, **fields
    )
    answer = sent.response
    assert isinstance(answer, list) and len(answer) == 1, answer
    request_id = answer[0]["service_request_id"]
    assert isinstance(request_id, str) and request_id, answer
    assert "token" not in answer[0], "an id or a token, never both"
    # The same request again (a retry): the same id, no second complaint.
    again = client.create_request(CODE, dry_run=False, confirm=CONFIRM_TOKEN, api_key=key, **fields).response
    assert again[0]["service_request_id"] == request_id, (again, request_id)
    # A second, anonymous request by address only.
    other = client.create_request(
        CODE, dry_run=False, confirm=CONFIRM_TOKEN, api_key=key, address_id="counter-3"
    ).response[0]["service_request_id"]
    assert other != request_id
    # Refusals the client passes on: no key, a bad field.
    form = {"service_code": CODE, "jurisdiction_id": AGENCY, "lat": 1, "long": 2}
    for extra, status in (({}, 403), ({"api_key": key, "email": "not-an-email"}, 400)):
        try:
            transport.post_form(f"{BASE}/requests.json", {**form, **extra})
            raise AssertionError(f"expected HTTP {status}")
        except HttpError as e:
            assert e.status == status, (e.status, e.body)
            errors = json.loads(e.body)
            assert errors[0]["code"] == status, errors
            if status == 400:
                assert errors[0]["description"].startswith("email: "), errors
    # tokens/{token}: the id it was answered as.
    token = client.get_token(request_id)
    assert token[0]["service_request_id"] == request_id, token
    print("ok   open311: civicbot create_request (POST, retry answers the same id), 403, 400, get_token")
    return request_id, other


def no_personal_data(text):
    for value in list(PERSONAL.values()) + [DESCRIPTION]:
        assert value not in text, f"{value!r} is published"


def read_back(request_id, other):
    for fmt in ("json", "xml"):
        client = GeoReport(BASE, jurisdiction=AGENCY, output_format=fmt)
        listed = client.get_service_requests()
        if isinstance(listed, dict):
            listed = [listed]
        ids = [r["service_request_id"] for r in listed]
        assert ids == [other, request_id], ids
        one = client.get_service_request(request_id)
        assert one["service_request_id"] == request_id, one
        assert one["status"] == "open", one
        assert one["service_code"] == CODE, one
        assert one["address"] == "Service centre, 1 Lambton Quay", one
        assert float(one["lat"]) == -41.2865 and float(one["long"]) == 174.7762, one
        assert one["expected_datetime"], one
        no_personal_data(json.dumps(one))
        only = client.get_service_requests(service_request_id=other, status="open")
        if isinstance(only, list):
            only = only[0]
        assert only["service_request_id"] == other, only
        try:
            client.get_service_request("nothere")
            raise AssertionError("expected 404")
        except requests.HTTPError as e:
            assert e.response.status_code == 404, e
    raw = requests.get(f"{BASE}/requests.json", params={"jurisdiction_id": AGENCY}, timeout=TIMEOUT)
    no_personal_data(raw.text)
    client, _ = civic_client()
    assert client.get_request(request_id)["status"] == "open"
    assert [r["service_request_id"] for r in client.list_requests(status="closed")] == []
    print("ok   open311: georeport get_service_requests, get_service_request (JSON and XML), 404; no personal data")


def survey(key):
    """A published survey as the service "visit": its questions are attributes."""
    feedback = feedback_pb2_grpc.FeedbackServiceStub(grpc.insecure_channel(os.environ["TS_FEEDBACK"]))
    kinds = feedback_pb2.QuestionKind
    made = feedback.CreateSurvey(
        feedback_pb2.CreateSurveyRequest(
            parent=PARENT,
            survey=feedback_pb2.Survey(
                title="Your visit",
                touchpoint=feedback_pb2.Touchpoint(service="counter service", unit="north", stage="visit"),
                questions=[
                    feedback_pb2.Question(key="satisfied", text="How satisfied were you?",
                                          kind=kinds.Value("QUESTION_KIND_SATISFACTION_5"), required=True),
                    feedback_pb2.Question(key="how", text="How did you contact us?",
                                          kind=kinds.Value("QUESTION_KIND_MULTIPLE_CHOICE"),
                                          choices=[feedback_pb2.Choice(key="web", label="Web"),
                                                   feedback_pb2.Choice(key="counter", label="Counter")]),
                ],
            ),
            request_id="py-open311-survey",
        ),
        metadata=TOKEN,
        timeout=TIMEOUT,
    )
    feedback.PublishSurvey(feedback_pb2.PublishSurveyRequest(name=made.name), metadata=TOKEN, timeout=TIMEOUT)
    gateway = gateway_pb2_grpc.GatewayServiceStub(grpc.insecure_channel(os.environ["TS_GATEWAY"]))
    gateway.CreateOpen311Service(
        gateway_pb2.CreateOpen311ServiceRequest(
            parent=PARENT,
            open311_service_id="visit",
            open311_service=gateway_pb2.Open311Service(display_name="Tell us about your visit", survey=made.name),
            request_id="py-open311-visit",
        ),
        metadata=TOKEN,
        timeout=TIMEOUT,
    )
    for fmt in ("json", "xml"):
        definition = GeoReport(BASE, jurisdiction=AGENCY, output_format=fmt).get_service_definition("visit")
        attributes = definition["attributes"]
        if fmt == "xml":
            attributes = attributes["attribute"]
        codes = [(a["code"], a["datatype"]) for a in attributes]
        assert codes == [("satisfied", "number"), ("how", "multivaluelist")], codes
    client, _ = civic_client()
    try:  # civicbot checks the request against the definition it read
        client.create_request("visit", dry_run=False, confirm=CONFIRM_TOKEN, api_key=key,
                              validate_remote=True, address_id="counter-3", attributes={"how": ["web"]})
        raise AssertionError("a request without the required answer was sent")
    except ValidationError as e:
        assert "satisfied" in str(e), e
    sent = client.create_request("visit", dry_run=False, confirm=CONFIRM_TOKEN, api_key=key,
                                 validate_remote=True, address_id="counter-3",
                                 attributes={"satisfied": 4, "how": ["web", "counter"]})
    response_id = sent.response[0]["service_request_id"]
    responses = feedback.ListResponses(feedback_pb2.ListResponsesRequest(parent=made.name),
                                       metadata=TOKEN, timeout=TIMEOUT).responses
    assert [r.name.rsplit("/", 1)[1] for r in responses] == [response_id], responses
    answers = {a.question_key: a for a in responses[0].answers}
    assert answers["satisfied"].score == 4 and list(answers["how"].choices) == ["web", "counter"], answers
    status = GeoReport(BASE, jurisdiction=AGENCY).get_service_request(response_id)
    assert status["status"] == "closed" and status["service_code"] == "visit", status
    print("ok   open311: a survey as a service: georeport reads its attributes, civicbot checks and posts answers")


def main():
    key = setup()
    discovery()
    catalogue()
    request_id, other = post(key)
    read_back(request_id, other)
    survey(key)
    print("python client: Open311 answered as documented")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as failure:
        print(f"FAIL {failure}", file=sys.stderr)
        sys.exit(1)
