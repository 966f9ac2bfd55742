//! Process telemetry: structured logs to stdout and, when configured, OpenTelemetry traces over
//! OTLP/gRPC with W3C trace context carried across gRPC hops.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::{Layer as _, Registry, fmt};

static INITIALISED: AtomicBool = AtomicBool::new(false);

/// Why telemetry could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// `init` already ran in this process; a subscriber and propagator are process-global.
    #[error("telemetry is already initialised in this process")]
    AlreadyInitialised,
    /// The log filter (from `RUST_LOG` or the configured filter) does not parse.
    #[error("invalid log filter {directives:?} (from {origin})")]
    Filter {
        directives: String,
        origin: &'static str,
        #[source]
        source: tracing_subscriber::filter::ParseError,
    },
    /// The OTLP exporter could not be built (e.g. a malformed endpoint).
    #[error("cannot build the OTLP span exporter")]
    Exporter(#[source] opentelemetry_otlp::ExporterBuildError),
    /// Another global `tracing` subscriber was installed outside `init`.
    #[error("cannot install the global tracing subscriber")]
    Subscriber(#[source] tracing::subscriber::SetGlobalDefaultError),
}

/// Keeps trace export alive; dropping it flushes buffered spans and shuts the exporter down.
///
/// Drop it inside the Tokio runtime (e.g. at the end of `main`): the OTLP client runs on it.
#[must_use = "dropping the guard stops trace export"]
#[derive(Debug)]
pub struct TelemetryGuard {
    tracer_provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        let Some(provider) = self.tracer_provider.take() else {
            return;
        };
        let shutdown = move || provider.shutdown();
        // The batch exporter thread needs the runtime's other workers to reach the collector;
        // blocking one worker in place keeps them free instead of stalling for the timeout.
        let result = match tokio::runtime::Handle::try_current() {
            Ok(handle) if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(shutdown)
            }
            _ => shutdown(),
        };
        if let Err(error) = result {
            tracing::warn!(%error, "trace export did not shut down cleanly");
        }
    }
}

/// Where spans are exported: an OTLP/gRPC collector.
#[derive(Debug, Clone, Copy)]
pub struct Otlp<'a> {
    /// `http://collector:4317`, or `https://…` for TLS.
    pub endpoint: &'a str,
    /// PEM of the CA that signed the collector's certificate, for an
    /// `https://` endpoint; `None` trusts the public web roots.
    pub ca_pem: Option<&'a [u8]>,
}

/// Installs logging, and trace export when `otlp` is given.
///
/// Logs go to stdout as JSON lines (or human-readable text when `json` is false). The level
/// comes from `RUST_LOG` when set, else from `log_filter`, else `info`. With an OTLP endpoint
/// (e.g. `http://otel-collector:4317`, or `https://` with TLS), spans are batch-exported over OTLP/gRPC with
/// `service.name = service_name` and the W3C TraceContext propagator is installed globally;
/// this must then run inside a Tokio runtime, which the exporter's client uses.
///
/// Call it once per process; a second call returns [`TelemetryError::AlreadyInitialised`].
pub fn init(
    service_name: &str,
    json: bool,
    log_filter: &str,
    otlp: Option<Otlp<'_>>,
) -> Result<TelemetryGuard, TelemetryError> {
    if INITIALISED.swap(true, Ordering::SeqCst) {
        return Err(TelemetryError::AlreadyInitialised);
    }
    let installed = install(service_name, json, log_filter, otlp);
    if installed.is_err() {
        // A failed attempt changed nothing global, so a corrected retry is allowed.
        INITIALISED.store(false, Ordering::SeqCst);
    }
    installed
}

fn install(
    service_name: &str,
    json: bool,
    log_filter: &str,
    otlp: Option<Otlp<'_>>,
) -> Result<TelemetryGuard, TelemetryError> {
    let filter = log_filter_from(std::env::var("RUST_LOG").ok(), log_filter)?;

    let tracer_provider = otlp
        .map(|otlp| tracer_provider(service_name, otlp))
        .transpose()?;
    let otel_layer = tracer_provider.as_ref().map(|provider| {
        // The exporter's own transport emits spans and events; exporting those would feed
        // the exporter from itself.
        let transport = Targets::new()
            .with_default(LevelFilter::TRACE)
            .with_target("h2", LevelFilter::OFF)
            .with_target("hyper", LevelFilter::OFF)
            .with_target("hyper_util", LevelFilter::OFF)
            .with_target("tonic", LevelFilter::OFF)
            .with_target("tower", LevelFilter::OFF)
            .with_target("opentelemetry", LevelFilter::OFF)
            .with_target("opentelemetry_sdk", LevelFilter::OFF)
            .with_target("opentelemetry_otlp", LevelFilter::OFF);
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(service_name.to_owned()))
            .with_filter(transport)
    });

    let json_layer = json.then(|| {
        fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
    });
    let text_layer = (!json).then(|| fmt::layer().with_ansi(std::io::stdout().is_terminal()));

    let subscriber = Registry::default()
        .with(filter)
        .with(json_layer)
        .with(text_layer)
        .with(otel_layer);
    tracing::subscriber::set_global_default(subscriber).map_err(TelemetryError::Subscriber)?;

    if let Some(provider) = &tracer_provider {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    Ok(TelemetryGuard { tracer_provider })
}

fn log_filter_from(
    rust_log: Option<String>,
    configured: &str,
) -> Result<EnvFilter, TelemetryError> {
    let (directives, origin) = match rust_log {
        Some(value) if !value.trim().is_empty() => (value, "RUST_LOG"),
        _ if !configured.trim().is_empty() => (configured.to_owned(), "the configured log filter"),
        _ => ("info".to_owned(), "the default"),
    };
    EnvFilter::builder()
        .parse(&directives)
        .map_err(|source| TelemetryError::Filter {
            directives,
            origin,
            source,
        })
}

fn tracer_provider(
    service_name: &str,
    otlp: Otlp<'_>,
) -> Result<SdkTracerProvider, TelemetryError> {
    use opentelemetry_otlp::WithTonicConfig as _;
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(otlp.endpoint);
    if otlp.endpoint.starts_with("https://") {
        let tls = tonic::transport::ClientTlsConfig::new();
        let tls = match otlp.ca_pem {
            Some(pem) => tls.ca_certificate(tonic::transport::Certificate::from_pem(pem)),
            None => tls.with_webpki_roots(),
        };
        builder = builder.with_tls_config(tls);
    }
    let exporter = builder.build().map_err(TelemetryError::Exporter)?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

/// Writes the current span's trace context (`traceparent`, `tracestate`) into outbound gRPC
/// metadata, so the callee's spans join this trace. A no-op unless trace export is configured.
/// Calls through a [`crate::PeerChannel`] get this without asking.
pub fn inject_trace_context(metadata: &mut MetadataMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut MetadataInjector(metadata));
    });
}

/// Writes the current span's trace context into outbound HTTP/2 request headers (what
/// [`crate::peer::TraceContext`] does for every call through a peer channel). A no-op unless
/// trace export is configured.
pub(crate) fn inject_trace_headers(headers: &mut http::HeaderMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut HeaderInjector(headers));
    });
}

/// The server span of one plain HTTP request (the gateway's dashboard, its JSON API and
/// Open311), named `METHOD route` after OpenTelemetry's HTTP conventions, in the trace the
/// caller's `traceparent` names (else a new one). Its `http.response.status_code` is recorded
/// by the caller once the response is known. Calls made inside it to other services carry it
/// on, as the gRPC server span does. No path parameters, query or body: no personal data.
pub fn http_server_span(method: &str, route: &str, headers: &http::HeaderMap) -> tracing::Span {
    let span = tracing::info_span!(
        "http.request",
        otel.name = %format_args!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = %route,
        http.response.status_code = tracing::field::Empty,
    );
    let _ = span.set_parent(extract_trace_context(headers));
    span
}

/// The trace context a caller sent in `headers`; empty when there is none or tracing is off.
pub(crate) fn extract_trace_context(headers: &http::HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    })
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rust_log_wins_over_the_configured_filter() {
        let error = log_filter_from(Some("touchstone=loud".into()), "info").unwrap_err();
        assert!(matches!(
            error,
            TelemetryError::Filter {
                origin: "RUST_LOG",
                ..
            }
        ));
    }

    #[test]
    fn configured_filter_applies_when_rust_log_is_blank() {
        let error = log_filter_from(Some(" ".into()), "touchstone=loud").unwrap_err();
        assert!(matches!(
            error,
            TelemetryError::Filter {
                origin: "the configured log filter",
                ..
            }
        ));
        assert!(log_filter_from(None, "").is_ok());
        assert!(log_filter_from(None, "warn,touchstone=debug").is_ok());
    }
}
