//! Prometheus metrics for the RPCs a server handles, the process-wide metrics every port shows
//! (process, and whatever other crates register: database pools, change feeds, clocks), and
//! the `/metrics` response that exposes them.
//!
//! The RPC histogram follows the OpenTelemetry RPC semantic conventions as Prometheus names
//! them (`rpc.server.duration` → `rpc_server_duration_seconds`, attributes `rpc.system`,
//! `rpc.service`, `rpc.method`, `rpc.grpc.status_code` → underscored labels), so dashboards
//! written for those conventions work unchanged.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tonic::Code;

use crate::methods::Rpc;

/// From half a millisecond (a cached read) to ten seconds (past any sane deadline).
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The content type of [`exposition`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: &'static str,
    method: Arc<str>,
    code: &'static str,
}

/// `rpc.server.duration`'s attributes, as Prometheus labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RpcLabels {
    rpc_system: &'static str,
    rpc_service: Arc<str>,
    rpc_method: Arc<str>,
    rpc_grpc_status_code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServiceLabels {
    service: &'static str,
}

#[derive(Debug)]
pub(crate) struct Metrics {
    service: &'static str,
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    duration: Family<RpcLabels, Histogram, fn() -> Histogram>,
    in_flight: Gauge,
}

impl Metrics {
    pub(crate) fn new(service: &'static str) -> Self {
        let mut registry = Registry::default();

        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "touchstone_grpc_requests",
            "gRPC requests completed, by method and status code",
            requests.clone(),
        );

        let duration: Family<RpcLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        registry.register_with_unit(
            "rpc_server_duration",
            "Time from receiving a gRPC request to its final status (OpenTelemetry \
             rpc.server.duration)",
            Unit::Seconds,
            duration.clone(),
        );

        let in_flight_family = Family::<ServiceLabels, Gauge>::default();
        let in_flight = in_flight_family.get_or_create_owned(&ServiceLabels { service });
        registry.register(
            "touchstone_grpc_in_flight",
            "gRPC requests being handled now",
            in_flight_family,
        );

        registry.register_collector(Box::new(ProcessWide));

        Self {
            service,
            registry,
            requests,
            duration,
            in_flight,
        }
    }

    pub(crate) fn request_started(&self) {
        self.in_flight.inc();
    }

    pub(crate) fn request_finished(&self, rpc: &Rpc, code: Code, elapsed: Duration) {
        self.in_flight.dec();
        self.requests
            .get_or_create(&RequestLabels {
                service: self.service,
                method: rpc.method.clone(),
                code: code_name(code),
            })
            .inc();
        self.duration
            .get_or_create(&RpcLabels {
                rpc_system: "grpc",
                rpc_service: rpc.service.clone(),
                rpc_method: rpc.method.clone(),
                rpc_grpc_status_code: code_number(code),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The `GET /metrics` response.
    pub(crate) fn response(&self) -> http::Response<tonic::body::Body> {
        let mut text = String::new();
        match prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            Ok(()) => {
                let mut response = http::Response::new(tonic::body::Body::new(text));
                response.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static(CONTENT_TYPE),
                );
                response
            }
            Err(error) => {
                tracing::error!(%error, "cannot encode metrics");
                let mut response = http::Response::new(tonic::body::Body::empty());
                *response.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
                response
            }
        }
    }
}

/// A gauge read at every scrape: its name (with unit suffix), help text, and reader.
type SampledGauge = (&'static str, &'static str, fn() -> f64);

static SAMPLED: Mutex<Vec<SampledGauge>> = Mutex::new(Vec::new());

/// Adds a gauge whose value `read` returns at every scrape of every server in this
/// process, for state kept outside the server (e.g. the change feed's horizon lag).
/// Adding the same name twice keeps the first.
pub fn sample_gauge(name: &'static str, help: &'static str, read: fn() -> f64) {
    let mut list = SAMPLED.lock().unwrap_or_else(|p| p.into_inner());
    if !list.iter().any(|(n, _, _)| *n == name) {
        list.push((name, help, read));
    }
}

/// Writes a group of metrics into a scrape: `encoder.encode_descriptor(..)` per metric.
pub type EncodeFn = fn(&mut DescriptorEncoder<'_>) -> Result<(), std::fmt::Error>;

static COLLECTORS: Mutex<Vec<(&'static str, EncodeFn)>> = Mutex::new(Vec::new());

/// Adds metrics that every server in this process exposes at every scrape, for state kept
/// by other crates (database pools, change-feed consumers, complaint clocks): `encode` is
/// called with the scrape's encoder. `key` names the group: registering the same key twice
/// keeps the first, so a process that starts several services may register once per service.
///
/// Labels must be bounded and carry no personal data, tokens, or agency ids.
pub fn register_collector(key: &'static str, encode: EncodeFn) {
    let mut list = COLLECTORS.lock().unwrap_or_else(|p| p.into_inner());
    if !list.iter().any(|(k, _)| *k == key) {
        list.push((key, encode));
    }
}

/// The process-wide metrics: the process itself, the sampled gauges and the registered
/// collectors. Every server's registry has it; add it to another registry (e.g. an HTTP
/// listener's) to expose the same there.
pub fn process_wide() -> Box<dyn Collector> {
    Box::new(ProcessWide)
}

/// OpenMetrics text of `registry`, for a `/metrics` response with [`CONTENT_TYPE`].
pub fn exposition(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry)?;
    Ok(text)
}

#[derive(Debug)]
struct ProcessWide;

impl Collector for ProcessWide {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        crate::process::encode(&mut encoder)?;
        let list = SAMPLED.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (name, help, read) in list {
            encode_gauge(&mut encoder, name, help, read())?;
        }
        let collectors = COLLECTORS.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (_, encode) in collectors {
            encode(&mut encoder)?;
        }
        Ok(())
    }
}

/// Encodes one unlabelled gauge.
pub fn encode_gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
    gauge.encode(metric)
}

/// Encodes one unlabelled counter (`name` without `_total`).
pub fn encode_counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let counter = ConstCounter::new(value);
    let metric = encoder.encode_descriptor(name, help, None, counter.metric_type())?;
    counter.encode(metric)
}

/// The numeric value of a status code, as OpenTelemetry's `rpc.grpc.status_code` has it.
fn code_number(code: Code) -> &'static str {
    match code {
        Code::Ok => "0",
        Code::Cancelled => "1",
        Code::Unknown => "2",
        Code::InvalidArgument => "3",
        Code::DeadlineExceeded => "4",
        Code::NotFound => "5",
        Code::AlreadyExists => "6",
        Code::PermissionDenied => "7",
        Code::ResourceExhausted => "8",
        Code::FailedPrecondition => "9",
        Code::Aborted => "10",
        Code::OutOfRange => "11",
        Code::Unimplemented => "12",
        Code::Internal => "13",
        Code::Unavailable => "14",
        Code::DataLoss => "15",
        Code::Unauthenticated => "16",
    }
}

/// The canonical name of a status code, as gRPC documents and other languages print it.
pub(crate) fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn exposition_uses_the_documented_names() {
        let metrics = Metrics::new("register");
        let rpc = Rpc {
            service: "touchstone.register.v1.RegisterService".into(),
            method: "GetClient".into(),
        };
        metrics.request_started();
        metrics.request_finished(&rpc, Code::InvalidArgument, Duration::from_millis(3));

        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry).unwrap();
        assert!(text.contains(
            r#"touchstone_grpc_requests_total{service="register",method="GetClient",code="INVALID_ARGUMENT"} 1"#
        ));
        assert!(text.contains(
            r#"rpc_server_duration_seconds_count{rpc_system="grpc",rpc_service="touchstone.register.v1.RegisterService",rpc_method="GetClient",rpc_grpc_status_code="3"} 1"#
        ));
        assert!(text.contains("# TYPE rpc_server_duration_seconds histogram"));
        assert!(text.contains("# UNIT rpc_server_duration_seconds seconds"));
        assert!(text.contains(r#"touchstone_grpc_in_flight{service="register"} 0"#));
    }
}
