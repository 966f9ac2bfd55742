//! TLS to the OTLP collector (DESIGN §12): with the CA that signed the
//! collector's certificate (`otlp_ca_file`), spans reach it over TLS.

mod tls_collector;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_tls_collector_whose_ca_is_given() {
    let collector = tls_collector::Collector::default();
    let endpoint = collector.start().await;
    tls_collector::export_one_span(&endpoint, tls_collector::ca_pem(true));
    assert!(collector.spans() > 0, "no span reached the TLS collector");
}
