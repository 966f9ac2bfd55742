//! Traces (issue 15 item 9): `touchstone up` exporting OTLP/gRPC to a
//! collector inside this test, which checks that one call across services is
//! one trace of server spans with the RPC attributes, linked parent to child,
//! and that no span carries the personal data sent.
//!
//! It follows three real multi-service calls:
//! - gateway → complaints → register: an officer records a complaint at the
//!   dashboard's desk (`POST /api/complaints`, plain HTTP) naming a register
//!   client; the gateway calls `CreateComplaint`, and complaints calls the
//!   register's `GetClient` to check the client. Sent with a caller's
//!   `traceparent`: one trace from the gateway's HTTP server span down;
//! - `ExportClientData` on the gateway, which calls the register
//!   (`ExportClient`), complaints (`ListComplaints`) and feedback; sent with
//!   a caller's `traceparent`, so it also shows that the caller's trace is
//!   continued;
//! - `GetDashboard` on the gateway, whose backend calls (KPI, complaints,
//!   feedback) run in a task of their own when the dashboard is kept a
//!   moment: sent with a caller's `traceparent`, they must stay in it;
//! - `CreateComplaint` on complaints naming a register client, which calls
//!   the register (`GetClient`); sent without one, so complaints starts the
//!   trace.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tokio::time::Instant;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use touchstone_api::complaints::v1 as cpb;
use touchstone_api::complaints::v1::complaints_service_client::ComplaintsServiceClient;
use touchstone_api::gateway::v1 as gpb;
use touchstone_api::gateway::v1::gateway_service_client::GatewayServiceClient;
use touchstone_api::register::v1 as pb;
use touchstone_api::register::v1::register_service_client::RegisterServiceClient;
use touchstone_e2e::{AGENCY, Up, touchstone_bin, within};

use super::{STOP_TIMEOUT, TEST_TIMEOUT, mint_token, tempdir, with_token};

/// How long spans may take to reach the collector (generous: a loaded CI
/// machine; the batch exporter is told to send every 200 ms).
const SPAN_DEADLINE: Duration = Duration::from_secs(90);

const GATEWAY: &str = "touchstone.gateway.v1.GatewayService";
const REGISTER: &str = "touchstone.register.v1.RegisterService";
const COMPLAINTS: &str = "touchstone.complaints.v1.ComplaintsService";
const FEEDBACK: &str = "touchstone.feedback.v1.FeedbackService";
const KPI: &str = "touchstone.kpi.v1.KpiService";

/// The caller's trace and span for the gateway call (W3C's example ids).
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";
/// The trace and span of the dashboard's caller.
const DASHBOARD_TRACE: &str = "5c0ffee0d15ea5e0b0a7f00d12345678";
const DASHBOARD_SPAN: &str = "2233445566778899";
/// The trace and span of the caller of the desk's intake.
const DESK_TRACE: &str = "7a3e0c1d2b4f45a6978d1e2f3a4b5c6d";
const DESK_SPAN: &str = "1122334455667788";

/// A span as received, with the `service.name` of the resource it came in.
#[derive(Debug, Clone)]
struct Received {
    service_name: String,
    span: Span,
}

/// An OTLP/gRPC trace collector that keeps every span it is sent.
#[derive(Debug, Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.spans.lock().expect("collector lock");
        for resource_spans in request.into_inner().resource_spans {
            let service_name = resource_spans
                .resource
                .as_ref()
                .and_then(|r| attribute(&r.attributes, "service.name"))
                .map(text)
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                kept.extend(scope.spans.into_iter().map(|span| Received {
                    service_name: service_name.clone(),
                    span,
                }));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// Starts the collector on 127.0.0.1; returns its `http://` endpoint.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the collector");
        let addr = listener.local_addr().expect("collector address");
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        format!("http://{addr}")
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().expect("collector lock").clone()
    }
}

fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
}

/// A value as text (numbers in decimal, arrays and lists flattened), for
/// comparisons and for the search for personal data.
fn text(value: &AnyValue) -> String {
    match &value.value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::ArrayValue(a)) => {
            a.values.iter().map(text).collect::<Vec<_>>().join(" ")
        }
        Some(any_value::Value::KvlistValue(l)) => l
            .values
            .iter()
            .map(|kv| {
                format!(
                    "{}={}",
                    kv.key,
                    kv.value.as_ref().map(text).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join(" "),
        Some(any_value::Value::BytesValue(b)) => String::from_utf8_lossy(b).into_owned(),
        // Kinds this exporter does not send (e.g. dictionary references).
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn attr(span: &Span, key: &str) -> Option<String> {
    attribute(&span.attributes, key).map(text)
}

/// The server span of `service`/`method` among `spans`, if it came.
fn server_span<'a>(spans: &'a [Received], service: &str, method: &str) -> Option<&'a Received> {
    spans.iter().find(|r| {
        r.span.kind == SpanKind::Server as i32
            && attr(&r.span, "rpc.service").as_deref() == Some(service)
            && attr(&r.span, "rpc.method").as_deref() == Some(method)
    })
}

/// The gateway's HTTP server span for `method route`, if it came.
fn http_span<'a>(spans: &'a [Received], method: &str, route: &str) -> Option<&'a Received> {
    spans.iter().find(|r| {
        r.span.kind == SpanKind::Server as i32
            && attr(&r.span, "http.request.method").as_deref() == Some(method)
            && attr(&r.span, "http.route").as_deref() == Some(route)
    })
}

fn bytes_of(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect()
}

/// One trace's spans, by span id.
fn trace_of(spans: &[Received], trace_id: &[u8]) -> BTreeMap<Vec<u8>, Received> {
    spans
        .iter()
        .filter(|r| r.span.trace_id == trace_id)
        .map(|r| (r.span.span_id.clone(), r.clone()))
        .collect()
}

/// Whether every span of the trace but one has its parent in the trace, and
/// that one (the root) has `root_parent` as parent (empty: none).
fn complete(trace: &BTreeMap<Vec<u8>, Received>, root_parent: &[u8]) -> bool {
    let roots = trace
        .values()
        .filter(|r| !trace.contains_key(&r.span.parent_span_id))
        .collect::<Vec<_>>();
    roots.len() == 1 && roots[0].span.parent_span_id == root_parent
}

/// The span ids from `id` up to the root of its trace.
fn ancestry(trace: &BTreeMap<Vec<u8>, Received>, id: &[u8]) -> Vec<Vec<u8>> {
    let mut chain = vec![id.to_vec()];
    while let Some(parent) = trace
        .get(chain.last().expect("not empty"))
        .map(|r| r.span.parent_span_id.clone())
        .filter(|p| trace.contains_key(p))
    {
        assert!(!chain.contains(&parent), "the trace has a cycle");
        chain.push(parent);
    }
    chain
}

/// Spans of one trace as lines, for failure messages.
fn dump(spans: &[Received]) -> String {
    spans
        .iter()
        .map(|r| {
            format!(
                "trace {} span {} parent {} kind {} {:?} [{}] {:?}/{:?}",
                hex(&r.span.trace_id),
                hex(&r.span.span_id),
                hex(&r.span.parent_span_id),
                r.span.kind,
                r.span.name,
                r.service_name,
                attr(&r.span, "rpc.service"),
                attr(&r.span, "rpc.method"),
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Asserts the server span of one hop: kind SERVER, the RPC attributes, status OK.
fn assert_server_span(received: &Received, service: &str, method: &str) {
    let span = &received.span;
    assert_eq!(span.kind, SpanKind::Server as i32, "{span:?}");
    assert_eq!(span.name, format!("{service}/{method}"), "{span:?}");
    assert_eq!(
        attr(span, "rpc.system").as_deref(),
        Some("grpc"),
        "{span:?}"
    );
    assert_eq!(
        attr(span, "rpc.service").as_deref(),
        Some(service),
        "{span:?}"
    );
    assert_eq!(
        attr(span, "rpc.method").as_deref(),
        Some(method),
        "{span:?}"
    );
    assert_eq!(
        attr(span, "rpc.grpc.status_code").as_deref(),
        Some("0"),
        "{service}/{method} did not end OK: {span:?}"
    );
    assert_eq!(received.service_name, "touchstone", "{received:?}");
}

/// Every piece of text a span carries: names, attributes, events, links,
/// status.
fn span_texts(span: &Span) -> Vec<String> {
    let mut out = vec![span.name.clone(), span.trace_state.clone()];
    let mut kvs = |attributes: &[KeyValue]| {
        for kv in attributes {
            out.push(kv.key.clone());
            out.extend(kv.value.as_ref().map(text));
        }
    };
    kvs(&span.attributes);
    for event in &span.events {
        kvs(&event.attributes);
    }
    for link in &span.links {
        kvs(&link.attributes);
    }
    out.extend(span.events.iter().map(|e| e.name.clone()));
    out.extend(span.links.iter().map(|l| l.trace_state.clone()));
    out.extend(span.status.as_ref().map(|s| s.message.clone()));
    out
}

/// A request with the token and, when given, the caller's trace context.
fn traced<T>(message: T, token: &str, traceparent: Option<&str>) -> tonic::Request<T> {
    let mut request = with_token(message, token);
    if let Some(traceparent) = traceparent {
        let value: MetadataValue<_> = traceparent.parse().expect("traceparent is header text");
        request.metadata_mut().insert("traceparent", value);
    }
    request
}

async fn channel_to(port: u16) -> Channel {
    Channel::from_shared(format!("http://127.0.0.1:{port}"))
        .expect("url")
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to 127.0.0.1:{port}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_call_across_services_is_one_trace_without_personal_data() {
    touchstone_bin();
    within(TEST_TIMEOUT, "traces across services", async {
        let collector = Collector::default();
        let endpoint = collector.start().await;
        let dir = tempdir();
        let mut up = Up::start_with(
            dir.path(),
            &[
                ("TOUCHSTONE_OTLP_ENDPOINT".into(), endpoint),
                // The batch exporter sends every 200 ms instead of every 5 s.
                ("OTEL_BSP_SCHEDULE_DELAY".into(), "200".into()),
            ],
        )
        .await;
        let token = mint_token(dir.path(), "officer").await;

        // Personal data sent in the calls; none of it may reach a span.
        let given = "Arohanui-Tr4ce";
        let family = "Ngata-Tr4ce-5521";
        let email = "arohanui.tr4ce@example.org";
        let phone = "0215550142";
        let narrative = "Ngata-Tr4ce-5521 has waited ten weeks for a renewal";

        let mut register = RegisterServiceClient::new(up.channel().await);
        let client = register
            .create_client(with_token(
                pb::CreateClientRequest {
                    parent: format!("agencies/{AGENCY}"),
                    client: Some(pb::Client {
                        kind: pb::ClientKind::Person as i32,
                        given_names: given.into(),
                        family_name: family.into(),
                        email: email.into(),
                        phone: phone.into(),
                        ..Default::default()
                    }),
                    request_id: "trace-client".into(),
                    ..Default::default()
                },
                &token,
            ))
            .await
            .expect("CreateClient")
            .into_inner();

        // complaints → register: the complainant's client reference is checked.
        let mut complaints =
            ComplaintsServiceClient::new(channel_to(up.port_of("complaints")).await);
        let complaint = complaints
            .create_complaint(traced(
                cpb::CreateComplaintRequest {
                    parent: format!("agencies/{AGENCY}"),
                    complaint: Some(cpb::Complaint {
                        complainant: Some(cpb::Complainant {
                            who: Some(cpb::complainant::Who::Client(client.name.clone())),
                        }),
                        channel: touchstone_api::common::v1::Channel::Phone as i32,
                        category: "delay".into(),
                        description: narrative.into(),
                        ..Default::default()
                    }),
                    request_id: "trace-complaint".into(),
                    ..Default::default()
                },
                &token,
                None,
            ))
            .await
            .expect("CreateComplaint")
            .into_inner();
        assert_eq!(
            complaint.client_check,
            cpb::ClientCheck::Verified as i32,
            "complaints did not reach the register"
        );

        // gateway → register, complaints, feedback, in the caller's trace.
        let mut gateway = GatewayServiceClient::new(channel_to(up.port_of("gateway")).await);
        let export = gateway
            .export_client_data(traced(
                gpb::ExportClientDataRequest {
                    client: client.name.clone(),
                },
                &token,
                Some(&format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")),
            ))
            .await
            .expect("ExportClientData")
            .into_inner();
        assert!(export.unreachable.is_empty(), "{export:?}");
        assert_eq!(export.complaints.len(), 1, "{export:?}");

        // gateway → KPI, complaints, feedback: a dashboard, in its caller's
        // trace.
        let dashboard = gateway
            .get_dashboard(traced(
                gpb::GetDashboardRequest {
                    agency: client
                        .name
                        .split("/clients/")
                        .next()
                        .unwrap_or_default()
                        .into(),
                    period: String::new(),
                },
                &token,
                Some(&format!("00-{DASHBOARD_TRACE}-{DASHBOARD_SPAN}-01")),
            ))
            .await
            .expect("GetDashboard")
            .into_inner();
        assert!(dashboard.unreachable.is_empty(), "{dashboard:?}");

        // gateway → complaints → register: the desk's intake names the client.
        let bearer = format!("Bearer {token}");
        let traceparent = format!("00-{DESK_TRACE}-{DESK_SPAN}-01");
        let body = serde_json::json!({
            "request_id": "trace-desk-complaint",
            "client": client.name,
            "channel": "phone",
            "category": "delay",
            "description": narrative,
        })
        .to_string();
        let (status, answer) = touchstone_e2e::http_request(
            up.http,
            "POST",
            "/api/complaints",
            &[
                ("Authorization", bearer.as_str()),
                ("Content-Type", "application/json"),
                ("traceparent", traceparent.as_str()),
            ],
            &body,
        )
        .await;
        assert!(status.contains(" 200 "), "{status}: {answer}");
        let recorded: serde_json::Value = serde_json::from_str(&answer).expect("JSON");
        assert_eq!(
            recorded["complaint"]["client_check"], "VERIFIED",
            "the desk's complaint was not checked with the register: {answer}"
        );

        // Wait for both traces to arrive whole.
        let caller_trace: Vec<u8> = (0..CALLER_TRACE.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&CALLER_TRACE[i..i + 2], 16).expect("hex"))
            .collect();
        let caller_span: Vec<u8> = (0..CALLER_SPAN.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&CALLER_SPAN[i..i + 2], 16).expect("hex"))
            .collect();
        let export_hops = [
            (GATEWAY, "ExportClientData"),
            (REGISTER, "ExportClient"),
            (COMPLAINTS, "ListComplaints"),
            (FEEDBACK, "ListResponses"),
            (FEEDBACK, "ListFollowUps"),
        ];
        let intake_hops = [(COMPLAINTS, "CreateComplaint"), (REGISTER, "GetClient")];
        let dashboard_hops = [
            (GATEWAY, "GetDashboard"),
            (KPI, "BatchGetFigures"),
            (COMPLAINTS, "SummarizeComplaints"),
            (COMPLAINTS, "ListComplaints"),
            (FEEDBACK, "SummarizeFollowUps"),
            (FEEDBACK, "ListResponses"),
        ];
        let (dashboard_trace_id, dashboard_span_id) =
            (bytes_of(DASHBOARD_TRACE), bytes_of(DASHBOARD_SPAN));
        let (desk_trace_id, desk_span_id) = (bytes_of(DESK_TRACE), bytes_of(DESK_SPAN));
        let deadline = Instant::now() + SPAN_DEADLINE;
        let (spans, export_trace, intake_trace, desk_trace) = loop {
            let spans = collector.spans();
            let export_trace = trace_of(&spans, &caller_trace);
            let outside_desk: Vec<Received> = spans
                .iter()
                .filter(|r| r.span.trace_id != desk_trace_id)
                .cloned()
                .collect();
            let intake_trace = server_span(&outside_desk, COMPLAINTS, "CreateComplaint")
                .map(|r| trace_of(&spans, &r.span.trace_id))
                .unwrap_or_default();
            let desk_trace = trace_of(&spans, &desk_trace_id);
            let dashboard_trace = trace_of(&spans, &dashboard_trace_id);
            let whole =
                |trace: &BTreeMap<Vec<u8>, Received>, hops: &[(&str, &str)], root: &[u8]| {
                    let list: Vec<Received> = trace.values().cloned().collect();
                    hops.iter()
                        .all(|(service, method)| server_span(&list, service, method).is_some())
                        && complete(trace, root)
                };
            let desk_whole = {
                let list: Vec<Received> = desk_trace.values().cloned().collect();
                http_span(&list, "POST", "/api/complaints").is_some()
                    && whole(&desk_trace, &intake_hops, &desk_span_id)
            };
            if whole(&export_trace, &export_hops, &caller_span)
                && whole(&intake_trace, &intake_hops, &[])
                && whole(&dashboard_trace, &dashboard_hops, &dashboard_span_id)
                && desk_whole
            {
                break (spans, export_trace, intake_trace, desk_trace);
            }
            assert!(
                Instant::now() < deadline,
                "the collector did not receive every trace whole within {SPAN_DEADLINE:?}; \
                 received:\n{}\n{}",
                dump(&spans),
                up.proc.output_report()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let export_list: Vec<Received> = export_trace.values().cloned().collect();
        let intake_list: Vec<Received> = intake_trace.values().cloned().collect();

        // The gateway's call: one trace, the caller's, rooted in the
        // gateway's server span, with every backend's server span below it.
        let root = server_span(&export_list, GATEWAY, "ExportClientData").expect("waited for");
        assert_eq!(
            root.span.parent_span_id,
            caller_span,
            "the gateway continues the caller's trace\n{}",
            dump(&export_list)
        );
        for (service, method) in export_hops {
            let hop = server_span(&export_list, service, method).expect("waited for");
            assert_server_span(hop, service, method);
            let chain = ancestry(&export_trace, &hop.span.span_id);
            assert_eq!(
                chain.last(),
                Some(&root.span.span_id),
                "{service}/{method} is not below the gateway's span\n{}",
                dump(&export_list)
            );
            if service != GATEWAY {
                // The gateway made the call: no other service's server span between.
                for id in &chain[1..] {
                    let between = &export_trace[id];
                    assert!(
                        between.span.kind != SpanKind::Server as i32
                            || attr(&between.span, "rpc.service").as_deref() == Some(GATEWAY),
                        "{service}/{method} hangs below {between:?}"
                    );
                }
            }
        }

        // The intake: one trace started by complaints, the register's server
        // span below complaints' server span.
        let intake = server_span(&intake_list, COMPLAINTS, "CreateComplaint").expect("waited for");
        assert!(
            intake.span.parent_span_id.is_empty(),
            "complaints started this trace\n{}",
            dump(&intake_list)
        );
        assert_server_span(intake, COMPLAINTS, "CreateComplaint");
        let lookup = server_span(&intake_list, REGISTER, "GetClient").expect("waited for");
        assert_server_span(lookup, REGISTER, "GetClient");
        assert_eq!(
            ancestry(&intake_trace, &lookup.span.span_id).last(),
            Some(&intake.span.span_id),
            "the register's GetClient is not below complaints' CreateComplaint\n{}",
            dump(&intake_list)
        );

        // The desk's intake: the caller's trace, rooted in the gateway's HTTP
        // server span; complaints' CreateComplaint below it, the register's
        // GetClient below that.
        let desk_list: Vec<Received> = desk_trace.values().cloned().collect();
        let http = http_span(&desk_list, "POST", "/api/complaints").expect("waited for");
        assert_eq!(
            http.span.parent_span_id,
            desk_span_id,
            "the gateway continues the desk caller's trace\n{}",
            dump(&desk_list)
        );
        assert_eq!(http.span.name, "POST /api/complaints", "{:?}", http.span);
        assert_eq!(
            attr(&http.span, "http.response.status_code").as_deref(),
            Some("200"),
            "{:?}",
            http.span
        );
        let create_hop =
            server_span(&desk_list, COMPLAINTS, "CreateComplaint").expect("waited for");
        assert_server_span(create_hop, COMPLAINTS, "CreateComplaint");
        assert_eq!(
            ancestry(&desk_trace, &create_hop.span.span_id).last(),
            Some(&http.span.span_id),
            "complaints' CreateComplaint is not below the gateway's HTTP span\n{}",
            dump(&desk_list)
        );
        let check_hop = server_span(&desk_list, REGISTER, "GetClient").expect("waited for");
        assert_server_span(check_hop, REGISTER, "GetClient");
        assert!(
            ancestry(&desk_trace, &check_hop.span.span_id).contains(&create_hop.span.span_id),
            "the register's GetClient is not below complaints' CreateComplaint\n{}",
            dump(&desk_list)
        );

        // The two calls are two traces, and the first call (straight to the
        // register) is a third.
        assert_ne!(intake.span.trace_id, caller_trace);
        let create = server_span(&spans, REGISTER, "CreateClient").expect("CreateClient span");
        assert_server_span(create, REGISTER, "CreateClient");
        assert!(
            create.span.trace_id != caller_trace && create.span.trace_id != intake.span.trace_id
        );

        // No span of any trace carries the personal data sent.
        let personal = [given, family, email, phone, narrative];
        let mut seen = BTreeSet::new();
        for received in &spans {
            for value in span_texts(&received.span) {
                for secret in personal {
                    if value.to_lowercase().contains(&secret.to_lowercase()) {
                        seen.insert(format!("{secret:?} in {:?}: {value:?}", received.span.name));
                    }
                }
            }
        }
        assert!(seen.is_empty(), "spans carry personal data:\n{seen:#?}");

        up.proc.terminate();
        up.proc.wait(STOP_TIMEOUT).await;
    })
    .await;
}
