//! An OTLP/gRPC trace collector serving TLS on `localhost` with the test
//! certificate in `otlp-tls/`, counting the spans it is sent.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tonic::transport::{Identity, Server, ServerTlsConfig};

/// The PEM of the CA that signed the collector's certificate, or (false)
/// of one that signed nothing.
pub(crate) fn ca_pem(of_the_collector: bool) -> &'static [u8] {
    if of_the_collector {
        include_bytes!("../otlp-tls/ca.pem")
    } else {
        include_bytes!("../otlp-tls/wrong-ca.pem")
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Collector {
    spans: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let n: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.spans.fetch_add(n, Ordering::SeqCst);
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// Serves TLS on 127.0.0.1; returns the `https://localhost:PORT` endpoint.
    pub(crate) async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the collector");
        let port = listener.local_addr().expect("collector address").port();
        let identity = Identity::from_pem(
            include_bytes!("../otlp-tls/server.pem"),
            include_bytes!("../otlp-tls/server.key"),
        );
        let server = Server::builder()
            .tls_config(ServerTlsConfig::new().identity(identity))
            .expect("TLS configuration")
            .add_service(TraceServiceServer::new(self.clone()))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
        tokio::spawn(server);
        format!("https://localhost:{port}")
    }

    pub(crate) fn spans(&self) -> usize {
        self.spans.load(Ordering::SeqCst)
    }
}

/// Installs telemetry exporting to `endpoint` trusting `ca`, records one
/// span, and shuts telemetry down, which flushes the export.
pub(crate) fn export_one_span(endpoint: &str, ca: &[u8]) {
    let guard = touchstone_server::telemetry::init(
        "touchstone-otlp-tls-test",
        true,
        "info",
        Some(touchstone_server::telemetry::Otlp {
            endpoint,
            ca_pem: Some(ca),
        }),
    )
    .expect("telemetry");
    {
        let span = tracing::info_span!("exported over TLS");
        let _entered = span.enter();
        tracing::info!("inside the span");
    }
    drop(guard);
}
