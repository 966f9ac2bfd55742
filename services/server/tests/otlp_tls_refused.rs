//! TLS to the OTLP collector is checked: with a CA that did not sign the
//! collector's certificate, no span reaches it (its own test binary, as
//! telemetry is installed once per process).

mod tls_collector;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_whose_certificate_another_ca_signed_gets_nothing() {
    let collector = tls_collector::Collector::default();
    let endpoint = collector.start().await;
    tls_collector::export_one_span(&endpoint, tls_collector::ca_pem(false));
    assert_eq!(
        collector.spans(),
        0,
        "a span crossed an untrusted TLS connection"
    );
}
