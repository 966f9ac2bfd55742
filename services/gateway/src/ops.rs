//! Operations endpoints of the dashboard's HTTP listener: `GET /metrics`
//! (its own HTTP request metrics plus the process-wide metrics every gRPC
//! port shows) and `GET /healthz`, and the layer that measures every request.
//!
//! Requests are measured as OpenTelemetry's `http.server.request.duration`
//! (`http_server_request_duration_seconds`), labelled by method, the route
//! *template* that matched (never the path a caller sent) and status code.

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;
use std::time::Instant;
use touchstone_platform::db::Db;
use tracing::Instrument as _;

const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    http_request_method: &'static str,
    http_route: String,
    http_response_status_code: u16,
}

/// The listener's metrics and what `/healthz` asks.
#[derive(Debug, Clone)]
pub(crate) struct Ops {
    registry: Arc<Registry>,
    duration: Family<HttpLabels, Histogram, fn() -> Histogram>,
    db: Db,
}

impl Ops {
    pub(crate) fn new(db: Db) -> Self {
        let mut registry = Registry::default();
        let duration: Family<HttpLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(BUCKETS));
        registry.register_with_unit(
            "http_server_request_duration",
            "Time to answer an HTTP request of the dashboard listener (OpenTelemetry \
             http.server.request.duration)",
            Unit::Seconds,
            duration.clone(),
        );
        registry.register_collector(touchstone_server::metrics::process_wide());
        Self {
            registry: Arc::new(registry),
            duration,
            db,
        }
    }

    /// `/metrics` and `/healthz`.
    pub(crate) fn routes(&self) -> Router {
        Router::new()
            .route("/metrics", get(metrics))
            .route("/healthz", get(healthz))
            .with_state(self.clone())
    }
}

/// Measures every request of the router it is layered on.
pub(crate) async fn measure(State(ops): State<Ops>, request: Request, next: Next) -> Response {
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_string(), |p| p.as_str().to_string());
    let started = Instant::now();
    // Scrapes and probes are not traced: they would bury the requests people make.
    let span = if matches!(route.as_str(), "/metrics" | "/healthz") {
        tracing::Span::none()
    } else {
        touchstone_server::telemetry::http_server_span(method, &route, request.headers())
    };
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
    }
    ops.duration
        .get_or_create(&HttpLabels {
            http_request_method: method,
            http_route: route,
            http_response_status_code: response.status().as_u16(),
        })
        .observe(started.elapsed().as_secs_f64());
    response
}

/// The method as a bounded label (`_OTHER` for any other, as the conventions say).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "_OTHER",
    }
}

async fn metrics(State(ops): State<Ops>) -> Response {
    match touchstone_server::metrics::exposition(&ops.registry) {
        Ok(text) => {
            let mut r = text.into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(touchstone_server::metrics::CONTENT_TYPE),
            );
            r
        }
        Err(error) => {
            tracing::error!(%error, "cannot encode metrics");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// 200 while the gateway's database answers (within 2 s), else 503.
async fn healthz(State(ops): State<Ops>) -> Response {
    if ops.db.ping().await {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response()
    }
}
