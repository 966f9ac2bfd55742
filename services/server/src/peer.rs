//! Channels to the other Touchstone services.
//!
//! A peer setting names one or more replicas of a service: a comma-separated list of `http://`
//! URLs, each of which may be a DNS name with several addresses (a Kubernetes headless Service
//! gives one per ready pod). [`Balanced`] spreads calls over every address in turn, and stops
//! using an address as soon as a call through it fails below gRPC (connection refused or reset,
//! as when a replica is killed): a background probe takes it back when it accepts connections
//! again. DNS names are resolved again every few seconds, so replicas that come and go are
//! followed. Only the calls in flight on a replica when it dies fail (UNAVAILABLE); the next ones
//! go to the others.
//!
//! Every call made through a [`PeerChannel`] carries the W3C trace context (`traceparent`,
//! `tracestate`) of the span current when the call is made, so the callee's server span (see
//! `observe`) joins the caller's trace. This is the one place outbound calls get their trace
//! context; clients are built on it, not on a bare [`Channel`].

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use tonic::body::Body;
use tonic::transport::{Channel, Endpoint};
use tower::ServiceExt as _;

use crate::telemetry::inject_trace_headers;

/// A channel to another service that passes the current trace context on with every call.
pub type PeerChannel = TraceContext<Balanced>;

/// `channel`, passing the current trace context on with every call made through it.
pub fn traced(channel: Balanced) -> PeerChannel {
    TraceContext::new(channel)
}

/// How often DNS names in a peer setting are resolved again.
const RESOLVE_EVERY: Duration = Duration::from_secs(5);
/// How soon an unresolvable name (or one with no address yet) is tried again.
const RESOLVE_RETRY: Duration = Duration::from_secs(1);
/// First and longest wait between probes of an address that failed.
const PROBE_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));
/// Longest wait for a probe's TCP connection.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// A peer setting that is not a list of http(s) URLs.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidPeer(String);

/// How each replica's connection is made.
#[derive(Debug, Clone, Copy)]
pub struct PeerOptions {
    /// Longest wait for a TCP connection.
    pub connect_timeout: Duration,
    /// Calls in flight at once on one replica's connection; more wait in the client.
    pub concurrency_limit: Option<usize>,
}

impl Default for PeerOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            concurrency_limit: None,
        }
    }
}

/// The entries of a peer setting: comma-separated `http://` or `https://` URLs with a host.
pub fn parse_peer(spec: &str) -> Result<Vec<Uri>, InvalidPeer> {
    let mut out = Vec::new();
    for part in spec.split(',') {
        let part = part.trim();
        if part.is_empty() {
            return Err(InvalidPeer(
                "must be one or more http:// URLs separated by commas, with none empty".into(),
            ));
        }
        let uri: Uri = part
            .parse()
            .map_err(|_| InvalidPeer(format!("{part:?} is not a URL")))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => {
                return Err(InvalidPeer(format!(
                    "{part:?} must be an http:// or https:// URL"
                )));
            }
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(InvalidPeer(format!("{part:?} has no host")));
        }
        out.push(uri);
    }
    Ok(out)
}

/// Where a member of the set may be reached: an address (http, resolved) or the URL as given
/// (https, whose certificate names the host).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Target {
    Addr(SocketAddr),
    Url(String),
}

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// One replica.
#[derive(Debug)]
struct Member {
    target: Target,
    channel: Channel,
    state: AtomicU8,
    probing: AtomicBool,
}

impl Member {
    fn new(target: Target, options: PeerOptions) -> Result<Arc<Member>, InvalidPeer> {
        let url = match &target {
            Target::Addr(addr) => format!("http://{addr}"),
            Target::Url(url) => url.clone(),
        };
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|_| InvalidPeer(format!("{url:?} is not a URL")))?
            .connect_timeout(options.connect_timeout);
        if let Some(limit) = options.concurrency_limit {
            endpoint = endpoint.concurrency_limit(limit);
        }
        Ok(Arc::new(Member {
            target,
            channel: endpoint.connect_lazy(),
            state: AtomicU8::new(UNKNOWN),
            probing: AtomicBool::new(false),
        }))
    }

    /// A call below gRPC failed: stop choosing this member until a probe connects.
    fn failed(self: &Arc<Self>) {
        self.state.store(DOWN, Ordering::Relaxed);
        self.probe();
    }

    /// Probes the member in the background until it accepts a TCP connection again.
    fn probe(self: &Arc<Self>) {
        if self.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut wait = PROBE_BACKOFF.0;
            loop {
                let Some(member) = weak.upgrade() else { return };
                let target = member.target.clone();
                drop(member);
                let connect = async {
                    match &target {
                        Target::Addr(addr) => tokio::net::TcpStream::connect(addr).await,
                        Target::Url(url) => {
                            let uri: Uri = url.parse().map_err(std::io::Error::other)?;
                            let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
                            let port = uri.port_u16().unwrap_or(443);
                            tokio::net::TcpStream::connect((host, port)).await
                        }
                    }
                };
                let up = matches!(
                    tokio::time::timeout(PROBE_TIMEOUT, connect).await,
                    Ok(Ok(_))
                );
                let Some(member) = weak.upgrade() else { return };
                if up {
                    member.state.store(UP, Ordering::Relaxed);
                    member.probing.store(false, Ordering::Release);
                    return;
                }
                member.state.store(DOWN, Ordering::Relaxed);
                drop(member);
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(PROBE_BACKOFF.1);
            }
        });
    }
}

#[derive(Debug)]
struct Set {
    /// The setting, for messages.
    spec: String,
    members: RwLock<Arc<Vec<Arc<Member>>>>,
    next: AtomicUsize,
}

impl Set {
    /// The member for the next call: the next one not known to be down, else the next one.
    fn choose(&self) -> Option<Arc<Member>> {
        let members = self
            .members
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if members.is_empty() {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = members.len();
        (0..n)
            .map(|i| &members[(start + i) % n])
            .find(|m| m.state.load(Ordering::Relaxed) != DOWN)
            .or_else(|| members.get(start % n))
            .cloned()
    }

    /// Replaces the members by those at `targets`, keeping the connections of the ones that
    /// stay.
    fn update(&self, targets: Vec<Target>, options: PeerOptions) {
        let current = self
            .members
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        if current.len() == targets.len() && current.iter().all(|m| targets.contains(&m.target)) {
            return;
        }
        let mut known: HashMap<&Target, &Arc<Member>> =
            current.iter().map(|m| (&m.target, m)).collect();
        let mut next = Vec::with_capacity(targets.len());
        for target in targets {
            if let Some(m) = known.remove(&target) {
                next.push(m.clone());
            } else if let Ok(m) = Member::new(target, options) {
                m.probe();
                next.push(m);
            }
        }
        tracing::info!(peer = %self.spec, replicas = next.len(), "peer addresses changed");
        *self
            .members
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(next);
    }
}

/// A channel over every replica a peer setting names. Cloning is cheap; clones share the
/// replicas and their connections.
#[derive(Debug, Clone)]
pub struct Balanced {
    set: Arc<Set>,
}

impl Balanced {
    /// A channel over the replicas `spec` names (see [`parse_peer`]), connected lazily. DNS
    /// names are resolved in the background (so this needs a Tokio runtime) and again every few
    /// seconds; until a name resolves, calls fail with UNAVAILABLE.
    pub fn connect(spec: &str, options: PeerOptions) -> Result<Balanced, InvalidPeer> {
        let uris = parse_peer(spec)?;
        let mut fixed = Vec::new();
        let mut names = Vec::new();
        for uri in uris {
            let host = uri.host().unwrap_or_default().trim_matches(['[', ']']);
            if uri.scheme_str() == Some("https") {
                fixed.push(Target::Url(uri.to_string()));
                continue;
            }
            let port = uri.port_u16().unwrap_or(80);
            match host.parse::<IpAddr>() {
                Ok(ip) => fixed.push(Target::Addr(SocketAddr::new(ip, port))),
                Err(_) => names.push((host.to_string(), port)),
            }
        }
        let set = Arc::new(Set {
            spec: spec.to_string(),
            members: RwLock::new(Arc::new(Vec::new())),
            next: AtomicUsize::new(0),
        });
        let mut members = Vec::with_capacity(fixed.len());
        for target in &fixed {
            members.push(Member::new(target.clone(), options)?);
        }
        *set.members
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(members);
        if !names.is_empty() {
            tokio::spawn(resolve_loop(Arc::downgrade(&set), fixed, names, options));
        }
        Ok(Balanced { set })
    }

    /// How many replicas the channel knows now.
    pub fn replicas(&self) -> usize {
        self.set
            .members
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

/// Resolves `names` now and every [`RESOLVE_EVERY`] while the set is in use; a failed lookup
/// keeps the addresses it had.
async fn resolve_loop(
    set: Weak<Set>,
    fixed: Vec<Target>,
    names: Vec<(String, u16)>,
    options: PeerOptions,
) {
    loop {
        let mut targets = fixed.clone();
        let mut complete = true;
        for (host, port) in &names {
            match tokio::net::lookup_host((host.as_str(), *port)).await {
                Ok(addrs) => {
                    for addr in addrs {
                        let t = Target::Addr(addr);
                        if !targets.contains(&t) {
                            targets.push(t);
                        }
                    }
                }
                Err(e) => {
                    complete = false;
                    tracing::warn!(host = %host, error = %e, "a peer's name did not resolve");
                }
            }
        }
        let Some(set) = set.upgrade() else { return };
        let empty = targets.is_empty();
        if complete || !empty {
            set.update(targets, options);
        }
        drop(set);
        let wait = if empty || !complete {
            RESOLVE_RETRY
        } else {
            RESOLVE_EVERY
        };
        tokio::time::sleep(wait).await;
    }
}

/// A boxed error, as tonic's clients take.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<http::Request<Body>> for Balanced {
    type Response = http::Response<Body>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Each call waits for its replica's connection in its own future.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let chosen = self.set.choose();
        let spec = self.set.spec.clone();
        Box::pin(async move {
            let Some(member) = chosen else {
                return Err(Box::new(tonic::Status::unavailable(format!(
                    "no address for {spec} yet"
                ))) as BoxError);
            };
            let outcome = member.channel.clone().oneshot(request).await;
            match outcome {
                Ok(response) => {
                    if member.state.load(Ordering::Relaxed) != UP {
                        member.state.store(UP, Ordering::Relaxed);
                    }
                    Ok(response)
                }
                Err(e) => {
                    member.failed();
                    Err(Box::new(e) as BoxError)
                }
            }
        })
    }
}

/// Tower middleware for gRPC clients: writes the current span's trace context into the headers
/// of each outgoing request. Nothing is written while trace export is off (no propagator is
/// installed) or when no span with a trace is current (e.g. a background task).
#[derive(Debug, Clone)]
pub struct TraceContext<S> {
    inner: S,
}

impl<S> TraceContext<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B> tower::Service<http::Request<B>> for TraceContext<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // tonic's client calls this from the caller's task, inside the caller's span.
        inject_trace_headers(request.headers_mut());
        self.inner.call(request)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;

    #[test]
    fn peer_settings_are_lists_of_urls() {
        assert_eq!(parse_peer("http://a:1").unwrap().len(), 1);
        assert_eq!(
            parse_peer("http://a:1, http://10.0.0.2:2,https://b")
                .unwrap()
                .len(),
            3
        );
        for bad in [
            "",
            "http://a:1,",
            "a:1",
            "ftp://a",
            "http://a:1,,http://b:2",
            "http:///x",
        ] {
            assert!(parse_peer(bad).is_err(), "{bad:?} was accepted");
        }
    }

    /// A health server on a port of its own; dropping the sender stops it.
    async fn replica() -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (_reporter, health) = tonic_health::server::health_reporter();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                ),
        );
        (addr, stop)
    }

    async fn check(client: &mut HealthClient<PeerChannel>) -> Result<(), tonic::Status> {
        client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|_| ())
    }

    #[tokio::test]
    async fn a_dead_replica_is_left_after_one_failed_call_and_taken_back_when_it_returns() {
        let (a, stop_a) = replica().await;
        let (b, _stop_b) = replica().await;
        let channel =
            Balanced::connect(&format!("http://{a},http://{b}"), PeerOptions::default()).unwrap();
        assert_eq!(channel.replicas(), 2);
        let mut client = HealthClient::new(traced(channel.clone()));
        for _ in 0..4 {
            check(&mut client).await.unwrap();
        }
        // Both replicas answered.
        let members = channel.set.members.read().unwrap().clone();
        assert!(
            members
                .iter()
                .all(|m| m.state.load(Ordering::Relaxed) == UP)
        );

        // Replica a goes away: at most one call per in-flight connection fails, then
        // every call goes to b.
        drop(stop_a);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut failed = 0;
        for _ in 0..20 {
            if let Err(status) = check(&mut client).await {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                failed += 1;
            }
        }
        assert!(
            failed <= 1,
            "{failed} calls failed after the replica stopped"
        );

        // A server on a's port again: the probe takes it back.
        let listener = loop {
            match tokio::net::TcpListener::bind(a).await {
                Ok(l) => break l,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let (_reporter, health) = tonic_health::server::health_reporter();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(health)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let back = async {
            loop {
                let members = channel.set.members.read().unwrap().clone();
                if members
                    .iter()
                    .all(|m| m.state.load(Ordering::Relaxed) == UP)
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), back)
            .await
            .expect("the returned replica was not taken back");
        for _ in 0..4 {
            check(&mut client).await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_name_is_resolved_to_its_addresses() {
        let (a, _stop) = replica().await;
        let channel = Balanced::connect(
            &format!("http://localhost:{}", a.port()),
            PeerOptions::default(),
        )
        .unwrap();
        let mut client = HealthClient::new(traced(channel.clone()));
        let answered = async {
            loop {
                if check(&mut client).await.is_ok() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), answered)
            .await
            .expect("no answer through a resolved name");
        assert!(channel.replicas() >= 1);
    }

    #[tokio::test]
    async fn no_replica_is_unavailable_not_a_panic() {
        let channel =
            Balanced::connect("http://no-such-host.invalid:1", PeerOptions::default()).unwrap();
        let mut client = HealthClient::new(traced(channel));
        let status = check(&mut client).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    }
}
