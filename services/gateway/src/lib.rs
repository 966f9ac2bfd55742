//! The gateway: the hub directory (agencies, units, peer groups and
//! benchmarking consent), dashboards that join the complaints, feedback and
//! KPI services in parallel within the caller's deadline, cross-agency
//! benchmarks under disclosure control, the one-call subject-access export,
//! and the web dashboard with its JSON API. It holds no personal data; it
//! forwards the caller's token to every service, which checks it again.

pub mod api;
pub mod backends;
pub mod cache;
pub mod desk;
pub mod domain;
pub mod error;
pub mod open311;
pub mod open311_form;
mod ops;
pub mod store;
pub mod web;

use std::sync::Arc;
use tokio::task::JoinHandle;
use touchstone_api::gateway::v1::gateway_service_server::GatewayServiceServer;
use touchstone_auth::{AuthInterceptor, ServiceToken, Verifier};
use touchstone_platform::crypto::MasterKey;
use touchstone_platform::db::{Db, Migration, MigrationSet};

/// Full gRPC name, for health and reflection.
pub const SERVICE_NAME: &str = "touchstone.gateway.v1.GatewayService";

/// The gateway's tables, per backend.
pub static MIGRATIONS: MigrationSet = MigrationSet {
    component: "gateway",
    sqlite: &[
        Migration {
            version: 1,
            name: "gateway",
            sql: include_str!("../migrations/sqlite/0001_gateway.sql"),
        },
        Migration {
            version: 2,
            name: "open311",
            sql: include_str!("../migrations/sqlite/0002_open311.sql"),
        },
        Migration {
            version: 3,
            name: "open311_requests",
            sql: include_str!("../migrations/sqlite/0003_open311_requests.sql"),
        },
        Migration {
            version: 4,
            name: "open311_surveys",
            sql: include_str!("../migrations/sqlite/0004_open311_surveys.sql"),
        },
    ],
    postgres: &[
        Migration {
            version: 1,
            name: "gateway",
            sql: include_str!("../migrations/postgres/0001_gateway.sql"),
        },
        Migration {
            version: 2,
            name: "open311",
            sql: include_str!("../migrations/postgres/0002_open311.sql"),
        },
        Migration {
            version: 3,
            name: "open311_requests",
            sql: include_str!("../migrations/postgres/0003_open311_requests.sql"),
        },
        Migration {
            version: 4,
            name: "open311_surveys",
            sql: include_str!("../migrations/postgres/0004_open311_surveys.sql"),
        },
    ],
};

/// The service's sealed columns besides the platform's, for the start-up
/// key check: none (only the platform's stored request responses).
pub fn sealed_columns() -> &'static [touchstone_platform::keycheck::SealedColumn] {
    &[]
}

/// Every migration set the gateway's database needs, in order.
pub fn migration_sets() -> [&'static MigrationSet; 2] {
    [&touchstone_platform::db::PLATFORM_MIGRATIONS, &MIGRATIONS]
}

/// Calls in flight to one backend at a time (below the services' default
/// per-connection limit of 256).
pub const MAX_CALLS_PER_BACKEND: usize = 128;

/// The services the gateway joins, and what it needs besides.
#[derive(Debug, Clone)]
pub struct Peers {
    /// Channels to the backends and the gateway's own token.
    pub backends: backends::Backends,
    /// The suppression threshold for benchmarks (k).
    pub min_count: u64,
    /// How long a whole dashboard is kept for its caller (`cache`); zero
    /// keeps none. [`cache::DEFAULT_TTL`] from `connect`.
    pub dashboard_cache: std::time::Duration,
}

impl Peers {
    /// Channels to the services at these URLs, connected lazily.
    pub fn connect(
        register: &str,
        complaints: &str,
        feedback: &str,
        kpi: &str,
        token: ServiceToken,
        min_count: u64,
    ) -> Result<Peers, touchstone_server::peer::InvalidPeer> {
        // One HTTP/2 connection per backend replica carries every dashboard's
        // calls; past this many at once they wait their turn here rather than
        // be shed by the backend's per-connection limit.
        let options = touchstone_server::peer::PeerOptions {
            concurrency_limit: Some(MAX_CALLS_PER_BACKEND),
            ..Default::default()
        };
        let lazy = |url: &str| touchstone_server::peer::Balanced::connect(url, options);
        Ok(Peers {
            backends: backends::Backends {
                register: lazy(register)?,
                complaints: lazy(complaints)?,
                feedback: lazy(feedback)?,
                kpi: lazy(kpi)?,
                service_token: token,
            },
            min_count,
            dashboard_cache: cache::DEFAULT_TTL,
        })
    }
}

/// The gateway's gRPC routes (behind token authentication) and its
/// background tasks: the web dashboard on `http`, when given.
pub fn start(
    db: Db,
    master: MasterKey,
    verifier: Arc<Verifier>,
    peers: Peers,
    http: Option<tokio::net::TcpListener>,
) -> (tonic::service::Routes, Vec<JoinHandle<()>>) {
    let gateway = api::Gateway::new(db, master, peers.backends, peers.min_count)
        .with_dashboard_cache(peers.dashboard_cache);
    let mut tasks = Vec::new();
    if let Some(listener) = http {
        let app = web::router(Arc::new(gateway.clone()), verifier.clone());
        tasks.push(tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "the web dashboard stopped");
            }
        }));
    }
    let routes = tonic::service::Routes::new(GatewayServiceServer::with_interceptor(
        gateway,
        AuthInterceptor::new(verifier),
    ));
    (routes, tasks)
}
