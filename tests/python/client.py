"""A third-party client against a running `touchstone up`: Python grpcio with
stubs generated from proto/ by grpcio-tools (tests/python/run.sh generates them
into a temporary directory and puts it on PYTHONPATH).

It drives every service once the way an agency system would, and streams a
large ImportResponses (ROWS rows, default 50,000) to show that any conforming
client can import at full speed (DESIGN section 9). It also checks that the
wire rules hold for a client the project did not write: a control character in
a string field and bytes that are not a message are INVALID_ARGUMENT with an
ErrorInfo.

Environment: TS_REGISTER, TS_COMPLAINTS, TS_FEEDBACK, TS_KPI, TS_GATEWAY
(host:port); TS_TOKEN (agency roles for TS_AGENCY); TS_HUB_TOKEN (hub_admin);
ROWS.
"""

import datetime
import os
import sys
import time

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2, status_pb2

from touchstone.common.v1 import common_pb2
from touchstone.complaints.v1 import complaints_pb2, complaints_pb2_grpc
from touchstone.feedback.v1 import feedback_pb2, feedback_pb2_grpc
from touchstone.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from touchstone.kpi.v1 import kpi_pb2, kpi_pb2_grpc
from touchstone.register.v1 import register_pb2, register_pb2_grpc

AGENCY = os.environ["TS_AGENCY"]
PARENT = f"agencies/{AGENCY}"
TIMEOUT = 60
ROWS = int(os.environ.get("ROWS", "50000"))


def meta(token):
    return (("authorization", f"Bearer {token}"),)


TOKEN = meta(os.environ["TS_TOKEN"])
HUB = meta(os.environ["TS_HUB_TOKEN"])


def channel(service, options=()):
    return grpc.insecure_channel(os.environ[f"TS_{service.upper()}"], options=options)


def details(error):
    """ErrorInfo and BadRequest of a failed call (grpc-status-details-bin)."""
    info, bad = None, None
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        for any_ in status.details:
            if any_.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                any_.Unpack(info)
            elif any_.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                any_.Unpack(bad)
    return info, bad


def expect_invalid(call, what, field=None, reason=None):
    try:
        call()
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (what, error.code(), error.details())
        info, bad = details(error)
        assert info is not None, f"{what}: no ErrorInfo"
        if reason:
            assert info.reason == reason, (what, info.reason)
        if field:
            fields = [v.field for v in bad.field_violations] if bad else []
            assert field in fields, (what, fields)
        print(f"ok   {what}: INVALID_ARGUMENT {info.reason} {info.domain}")
        return
    raise AssertionError(f"{what}: accepted")


def register():
    stub = register_pb2_grpc.RegisterServiceStub(channel("register"))
    client = stub.CreateClient(
        register_pb2.CreateClientRequest(
            parent=PARENT,
            client=register_pb2.Client(
                kind=register_pb2.CLIENT_KIND_PERSON,
                given_names="Aroha",
                family_name="Python-Client",
                email="aroha.python@example.org",
            ),
            request_id="py-client-1",
        ),
        metadata=TOKEN,
        timeout=TIMEOUT,
    )
    got = stub.GetClient(register_pb2.GetClientRequest(name=client.name), metadata=TOKEN, timeout=TIMEOUT)
    assert got.family_name == "Python-Client", got
    print(f"ok   register: CreateClient, GetClient {client.name}")
    expect_invalid(
        lambda: stub.CreateClient(
            register_pb2.CreateClientRequest(
                parent=PARENT,
                client=register_pb2.Client(kind=register_pb2.CLIENT_KIND_PERSON, given_names="A\x00b"),
                request_id="py-client-nul",
            ),
            metadata=TOKEN,
            timeout=TIMEOUT,
        ),
        "register: NUL in client.given_names",
        field="client.given_names",
    )
    # Bytes that are no message: a field-1 string whose length runs past the end.
    garbage = channel("register").unary_unary(
        "/touchstone.register.v1.RegisterService/GetClient",
        request_serializer=lambda b: b,
        response_deserializer=lambda b: b,
    )
    expect_invalid(
        lambda: garbage(b"\x0a\x7f\x61", metadata=TOKEN, timeout=TIMEOUT),
        "register: truncated GetClientRequest",
        reason="MALFORMED_REQUEST",
    )
    return client.name


def complaints():
    stub = complaints_pb2_grpc.ComplaintsServiceStub(channel("complaints"))
    complaint = complaints_pb2.Complaint(
        complainant=complaints_pb2.Complainant(anonymous=True),
        channel=common_pb2.CHANNEL_WEB,
        unit="python-unit",
        service="passport renewal",
        category="delay",
        description="Waited six weeks for a renewal.",
    )
    created = stub.CreateComplaint(
        complaints_pb2.CreateComplaintRequest(parent=PARENT, complaint=complaint, request_id="py-complaint-1"),
        metadata=TOKEN,
        timeout=TIMEOUT,
    )
    got = stub.GetComplaint(complaints_pb2.GetComplaintRequest(name=created.name), metadata=TOKEN, timeout=TIMEOUT)
    assert got.category == "delay", got
    print(f"ok   complaints: CreateComplaint, GetComplaint {created.name}")
    complaint.description = "tab\tand newline\nare fine, NUL \x00 is not"
    expect_invalid(
        lambda: stub.CreateComplaint(
            complaints_pb2.CreateComplaintRequest(parent=PARENT, complaint=complaint, request_id="py-complaint-nul"),
            metadata=TOKEN,
            timeout=TIMEOUT,
        ),
        "complaints: NUL in complaint.description",
        field="complaint.description",
    )


def feedback():
    # The reply carries one RowResult per row (about 130 bytes each), more than the 4 MiB
    # every gRPC client accepts by default once a stream passes about 30,000 rows.
    stub = feedback_pb2_grpc.FeedbackServiceStub(
        channel("feedback", options=(("grpc.max_receive_message_length", 64 * 1024 * 1024),))
    )
    made = stub.CreateTemplateSurveys(
        feedback_pb2.CreateTemplateSurveysRequest(
            parent=PARENT,
            templates=[feedback_pb2.SURVEY_TEMPLATE_CSAT],
            touchpoint=feedback_pb2.Touchpoint(service="passport renewal", unit="python-unit", channel=common_pb2.CHANNEL_WEB),
            request_id="py-templates-1",
        ),
        metadata=TOKEN,
        timeout=TIMEOUT,
    )
    survey = made.surveys[0]
    survey = stub.PublishSurvey(
        feedback_pb2.PublishSurveyRequest(name=survey.name, etag=survey.etag, request_id="py-publish-1"),
        metadata=TOKEN,
        timeout=TIMEOUT,
    )
    submitted = stub.SubmitResponse(
        feedback_pb2.SubmitResponseRequest(
            parent=survey.name,
            response=feedback_pb2.Response(answers=[feedback_pb2.Answer(question_key="csat", score=5)]),
            request_id="py-response-1",
        ),
        metadata=TOKEN,
        timeout=TIMEOUT,
    )
    print(f"ok   feedback: CreateTemplateSurveys, PublishSurvey, SubmitResponse {submitted.name}")

    submit = timestamp_pb2.Timestamp()
    submit.FromDatetime(datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1))

    def rows():
        for i in range(ROWS):
            yield feedback_pb2.ImportResponsesRequest(
                parent=survey.name,
                row_id=f"py-row-{i}",
                response=feedback_pb2.Response(
                    answers=[feedback_pb2.Answer(question_key="csat", score=1 + i % 5)],
                    submit_time=submit,
                ),
            )

    started = time.monotonic()
    result = stub.ImportResponses(rows(), metadata=TOKEN, timeout=600)
    seconds = time.monotonic() - started
    assert result.created == ROWS and result.rejected == 0, (result.created, result.already_imported, result.rejected)
    print(f"ok   feedback: ImportResponses streamed {ROWS} rows from grpcio in {seconds:.1f} s ({ROWS / seconds:,.0f} rows/s)")


def kpi():
    stub = kpi_pb2_grpc.KpiServiceStub(channel("kpi"))
    today = datetime.date.today()
    # Figures are released on the grid of periods only: this calendar year, whole.
    start = common_pb2.Date(year=today.year, month=1, day=1)
    end = common_pb2.Date(year=today.year, month=12, day=31)
    answer = stub.QueryIndicator(
        kpi_pb2.QueryIndicatorRequest(agency=PARENT, indicator="complaints_received", start_date=start, end_date=end),
        metadata=TOKEN,
        timeout=TIMEOUT,
    )
    print(f"ok   kpi: QueryIndicator complaints_received ({len(answer.ListFields())} fields)")
    expect_invalid(
        lambda: stub.QueryIndicator(
            kpi_pb2.QueryIndicatorRequest(
                agency=PARENT,
                indicator="complaints_received",
                start_date=common_pb2.Date(year=-1, month=1, day=1),
                end_date=end,
            ),
            metadata=TOKEN,
            timeout=TIMEOUT,
        ),
        "kpi: start_date.year = -1",
        field="start_date",
    )
    expect_invalid(
        lambda: stub.QueryIndicator(
            kpi_pb2.QueryIndicatorRequest(
                agency=PARENT,
                indicator="complaints_received",
                start_date=start,
                end_date=end,
                scope=kpi_pb2.Scope(service="pass\x00ports"),
            ),
            metadata=TOKEN,
            timeout=TIMEOUT,
        ),
        "kpi: NUL in scope.service",
        field="scope.service",
    )


def gateway():
    stub = gateway_pb2_grpc.GatewayServiceStub(channel("gateway"))
    stub.CreateAgency(
        gateway_pb2.CreateAgencyRequest(
            agency=gateway_pb2.Agency(display_name="Python Agency", time_zone="Pacific/Auckland"),
            agency_id=AGENCY,
            request_id="py-agency-1",
        ),
        metadata=HUB,
        timeout=TIMEOUT,
    )
    dashboard = stub.GetDashboard(gateway_pb2.GetDashboardRequest(agency=PARENT), metadata=TOKEN, timeout=TIMEOUT)
    print(f"ok   gateway: CreateAgency, GetDashboard ({len(dashboard.ListFields())} fields)")


def main():
    register()
    complaints()
    feedback()
    kpi()
    gateway()
    print("python client: all services answered as documented")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as failure:
        print(f"FAIL {failure}", file=sys.stderr)
        sys.exit(1)
