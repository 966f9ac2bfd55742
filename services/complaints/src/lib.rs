//! Complaints: the cases front-line staff work all day, the working-day
//! clocks whose timeliness agencies publish, escalation, and the learning
//! register of systemic issues. Complainants' personal data is encrypted at
//! the field level; every access is audited; every change lands in the
//! history and the outbox.

pub mod api;
pub mod clock;
pub mod domain;
pub mod error;
pub mod intake;
pub mod metrics;
pub mod store;

use std::sync::Arc;
use tokio::task::JoinHandle;
use touchstone_api::complaints::v1::complaints_service_server::ComplaintsServiceServer;
use touchstone_auth::{AuthInterceptor, ServiceToken, Verifier};
use touchstone_crypto::MasterKey;
use touchstone_platform::consumer;
use touchstone_platform::db::{Db, Migration, MigrationSet};

/// Full gRPC name, for health and reflection.
pub const SERVICE_NAME: &str = "touchstone.complaints.v1.ComplaintsService";

/// The complaints service's tables, per backend.
pub static MIGRATIONS: MigrationSet = MigrationSet {
    component: "complaints",
    sqlite: &[Migration {
        version: 1,
        name: "complaints",
        sql: include_str!("../migrations/sqlite/0001_complaints.sql"),
    }],
    postgres: &[Migration {
        version: 1,
        name: "complaints",
        sql: include_str!("../migrations/postgres/0001_complaints.sql"),
    }],
};

/// The service's sealed columns besides the platform's, for the start-up
/// key check.
pub fn sealed_columns() -> &'static [touchstone_platform::keycheck::SealedColumn] {
    store::SEALED
}

/// Every migration set the service's database needs, in order.
pub fn migration_sets() -> [&'static MigrationSet; 2] {
    [&touchstone_platform::db::PLATFORM_MIGRATIONS, &MIGRATIONS]
}

/// The other services this one calls, and the token it presents when it
/// calls them on its own behalf.
#[derive(Debug, Clone)]
pub struct Peers {
    /// The client register.
    pub register: touchstone_server::peer::Balanced,
    /// This service's own token.
    pub token: ServiceToken,
}

impl Peers {
    /// Channels to the peers at these URLs, connected lazily.
    pub fn connect(
        register: &str,
        token: ServiceToken,
    ) -> Result<Peers, touchstone_server::peer::InvalidPeer> {
        Ok(Peers {
            register: touchstone_server::peer::Balanced::connect(register, Default::default())?,
            token,
        })
    }
}

/// The service's routes (behind token authentication) and its background
/// tasks: the check of client references left pending at intake, and the
/// register's change feed (erasures).
pub fn start(
    db: Db,
    master: MasterKey,
    verifier: Arc<Verifier>,
    peers: Peers,
) -> (tonic::service::Routes, Vec<JoinHandle<()>>) {
    let register = intake::RegisterClient::new(peers.register, peers.token);
    let service = api::Complaints::new(db.clone(), master, register.clone());
    let routes = tonic::service::Routes::new(ComplaintsServiceServer::with_interceptor(
        service,
        AuthInterceptor::new(verifier),
    ));
    let tasks = vec![
        intake::spawn_verifier(db.clone(), register.clone()),
        consumer::spawn(
            db,
            intake::REGISTER_FEED,
            Arc::new(intake::RegisterFeed(register)),
            Arc::new(intake::Erasure),
        ),
    ];
    (routes, tasks)
}
