//! The kpi service.

pub mod api;

use std::sync::Arc;
use tokio::task::JoinHandle;
use touchstone_api::kpi::v1::kpi_service_server::KpiServiceServer;
use touchstone_auth::{AuthInterceptor, ServiceToken, Verifier};
use touchstone_platform::db::{Db, Migration, MigrationSet};
use touchstone_platform::keyring::Keyring;

/// Full gRPC name, for health and reflection.
pub const SERVICE_NAME: &str = "touchstone.kpi.v1.KpiService";

/// The service's tables, per backend.
pub static MIGRATIONS: MigrationSet = MigrationSet {
    component: "kpi",
    sqlite: &[Migration {
        version: 1,
        name: "kpi",
        sql: include_str!("../migrations/sqlite/0001_kpi.sql"),
    }],
    postgres: &[Migration {
        version: 1,
        name: "kpi",
        sql: include_str!("../migrations/postgres/0001_kpi.sql"),
    }],
};

/// Every migration set the service's database needs, in order.
pub fn migration_sets() -> [&'static MigrationSet; 2] {
    [&touchstone_platform::db::PLATFORM_MIGRATIONS, &MIGRATIONS]
}

/// The other services this one calls, and the token it presents when it
/// calls them on its own behalf.
#[derive(Debug, Clone)]
pub struct Peers {
    /// The complaints service (its change feed).
    pub complaints: tonic::transport::Channel,
    /// The feedback service (its change feed).
    pub feedback: tonic::transport::Channel,
    /// This service's own token.
    pub token: ServiceToken,
}

impl Peers {
    /// Channels to the peers at these URLs, connected lazily.
    pub fn connect(
        complaints: &str,
        feedback: &str,
        token: ServiceToken,
    ) -> Result<Peers, tonic::transport::Error> {
        Ok(Peers {
            complaints: tonic::transport::Endpoint::from_shared(complaints.to_string())?
                .connect_lazy(),
            feedback: tonic::transport::Endpoint::from_shared(feedback.to_string())?.connect_lazy(),
            token,
        })
    }
}

/// The service's routes (behind token authentication) and its background tasks.
pub fn start(
    db: Db,
    keys: Arc<Keyring>,
    verifier: Arc<Verifier>,
    peers: Peers,
) -> (tonic::service::Routes, Vec<JoinHandle<()>>) {
    let _ = (&keys, &peers);
    let service = api::Kpi::new(db);
    let routes = tonic::service::Routes::new(KpiServiceServer::with_interceptor(
        service,
        AuthInterceptor::new(verifier),
    ));
    (routes, Vec::new())
}
