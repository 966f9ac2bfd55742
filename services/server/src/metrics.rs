//! Prometheus metrics for the RPCs a server handles, and the `/metrics` response that exposes them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use tonic::Code;

/// From half a millisecond (a cached read) to ten seconds (past any sane deadline).
const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: &'static str,
    method: Arc<str>,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    service: &'static str,
    method: Arc<str>,
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
    duration: Family<MethodLabels, Histogram, fn() -> Histogram>,
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

        let duration: Family<MethodLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        registry.register_with_unit(
            "touchstone_grpc_request_duration",
            "Time from receiving a gRPC request to its final status",
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

        registry.register_collector(Box::new(Sampled));

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

    pub(crate) fn request_finished(&self, method: &Arc<str>, code: Code, elapsed: Duration) {
        self.in_flight.dec();
        self.requests
            .get_or_create(&RequestLabels {
                service: self.service,
                method: method.clone(),
                code: code_name(code),
            })
            .inc();
        self.duration
            .get_or_create(&MethodLabels {
                service: self.service,
                method: method.clone(),
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

#[derive(Debug)]
struct Sampled;

impl Collector for Sampled {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let list = SAMPLED.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for (name, help, read) in list {
            let gauge = ConstGauge::new(read());
            let metric = encoder.encode_descriptor(name, help, None, gauge.metric_type())?;
            gauge.encode(metric)?;
        }
        Ok(())
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
        let method: Arc<str> = "GetClient".into();
        metrics.request_started();
        metrics.request_finished(&method, Code::InvalidArgument, Duration::from_millis(3));

        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry).unwrap();
        assert!(text.contains(
            r#"touchstone_grpc_requests_total{service="register",method="GetClient",code="INVALID_ARGUMENT"} 1"#
        ));
        assert!(text.contains(
            r#"touchstone_grpc_request_duration_seconds_count{service="register",method="GetClient"} 1"#
        ));
        assert!(text.contains(r#"touchstone_grpc_in_flight{service="register"} 0"#));
    }
}
