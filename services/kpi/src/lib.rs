//! The kpi service: the indicator catalogue, service standards (the
//! charter), and indicators computed from rollups of the feedback and
//! complaints change feeds (DESIGN §6–§7, docs/kpi.md).

pub mod api;
pub mod domain;
pub mod error;
pub mod feeds;
pub mod query;
pub mod store;

use std::sync::Arc;
use tokio::task::JoinHandle;
use touchstone_api::kpi::v1::kpi_service_server::KpiServiceServer;
use touchstone_auth::{AuthInterceptor, ServiceToken, Verifier};
use touchstone_crypto::MasterKey;
use touchstone_platform::db::{Db, Migration, MigrationSet};

/// Full gRPC name, for health and reflection.
pub const SERVICE_NAME: &str = "touchstone.kpi.v1.KpiService";

/// The service's tables, per backend.
pub static MIGRATIONS: MigrationSet = MigrationSet {
    component: "kpi",
    sqlite: &[
        Migration {
            version: 1,
            name: "kpi",
            sql: include_str!("../migrations/sqlite/0001_kpi.sql"),
        },
        Migration {
            version: 2,
            name: "unit days",
            sql: include_str!("../migrations/sqlite/0002_unit_days.sql"),
        },
        Migration {
            version: 3,
            name: "unit months",
            sql: include_str!("../migrations/sqlite/0003_unit_months.sql"),
        },
        Migration {
            version: 4,
            name: "versions",
            sql: include_str!("../migrations/sqlite/0004_versions.sql"),
        },
    ],
    postgres: &[
        Migration {
            version: 1,
            name: "kpi",
            sql: include_str!("../migrations/postgres/0001_kpi.sql"),
        },
        Migration {
            version: 2,
            name: "unit days",
            sql: include_str!("../migrations/postgres/0002_unit_days.sql"),
        },
        Migration {
            version: 3,
            name: "unit months",
            sql: include_str!("../migrations/postgres/0003_unit_months.sql"),
        },
        Migration {
            version: 4,
            name: "versions",
            sql: include_str!("../migrations/postgres/0004_versions.sql"),
        },
    ],
};

/// The service's sealed columns besides the platform's, for the start-up
/// key check: none (only the platform's stored request responses).
pub fn sealed_columns() -> &'static [touchstone_platform::keycheck::SealedColumn] {
    &[]
}

/// Every migration set the service's database needs, in order.
pub fn migration_sets() -> [&'static MigrationSet; 2] {
    [&touchstone_platform::db::PLATFORM_MIGRATIONS, &MIGRATIONS]
}

/// The other services this one calls, and the token it presents when it
/// calls them on its own behalf.
#[derive(Debug, Clone)]
pub struct Peers {
    /// The complaints service (its change feed).
    pub complaints: touchstone_server::peer::Balanced,
    /// The feedback service (its change feed).
    pub feedback: touchstone_server::peer::Balanced,
    /// This service's own token.
    pub token: ServiceToken,
}

impl Peers {
    /// Channels to the peers at these URLs, connected lazily.
    pub fn connect(
        complaints: &str,
        feedback: &str,
        token: ServiceToken,
    ) -> Result<Peers, touchstone_server::peer::InvalidPeer> {
        use touchstone_server::peer::Balanced;
        Ok(Peers {
            complaints: Balanced::connect(complaints, Default::default())?,
            feedback: Balanced::connect(feedback, Default::default())?,
            token,
        })
    }
}

/// The service's routes (behind token authentication) with suppression
/// threshold `min_count`, without consumers (tests start those themselves).
pub fn routes(
    db: Db,
    master: MasterKey,
    verifier: Arc<Verifier>,
    min_count: u64,
) -> tonic::service::Routes {
    tonic::service::Routes::new(KpiServiceServer::with_interceptor(
        api::Kpi::new(db, master, min_count),
        AuthInterceptor::new(verifier),
    ))
}

/// The service's routes (behind token authentication) and its background
/// tasks: the consumers of the complaints and feedback change feeds.
pub fn start(
    db: Db,
    master: MasterKey,
    verifier: Arc<Verifier>,
    peers: Peers,
    min_count: u64,
) -> (tonic::service::Routes, Vec<JoinHandle<()>>) {
    let tasks = feeds::spawn(
        &db,
        feeds::ComplaintsFeed {
            channel: peers.complaints.clone(),
            token: peers.token.clone(),
        },
        feeds::FeedbackFeed {
            channel: peers.feedback.clone(),
            token: peers.token.clone(),
        },
    );
    (routes(db, master, verifier, min_count), tasks)
}
