//! The feedback service: surveys with typed questions and standard items,
//! responses submitted one by one or imported in bulk, service volumes,
//! comments (personal data masked for analysis, the original encrypted and
//! erased with the client, sentiment and topics), closed-loop follow-ups,
//! the A-11 export, and a change feed for KPIs.

pub mod a11;
pub mod api;
pub mod comments;
pub mod domain;
pub mod error;
pub mod peers;
pub mod store;

use std::sync::Arc;
use tokio::task::JoinHandle;
use touchstone_api::feedback::v1::feedback_service_server::FeedbackServiceServer;
use touchstone_auth::{AuthInterceptor, ServiceToken, Verifier};
use touchstone_crypto::MasterKey;
use touchstone_platform::db::{Db, Migration, MigrationSet};

/// Full gRPC name, for health and reflection.
pub const SERVICE_NAME: &str = "touchstone.feedback.v1.FeedbackService";

/// The service's tables, per backend.
pub static MIGRATIONS: MigrationSet = MigrationSet {
    component: "feedback",
    sqlite: &[
        Migration {
            version: 1,
            name: "feedback",
            sql: include_str!("../migrations/sqlite/0001_feedback.sql"),
        },
        Migration {
            version: 2,
            name: "responses_by_submit_time",
            sql: include_str!("../migrations/sqlite/0002_responses_by_submit_time.sql"),
        },
    ],
    postgres: &[
        Migration {
            version: 1,
            name: "feedback",
            sql: include_str!("../migrations/postgres/0001_feedback.sql"),
        },
        Migration {
            version: 2,
            name: "responses_by_submit_time",
            sql: include_str!("../migrations/postgres/0002_responses_by_submit_time.sql"),
        },
    ],
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

/// The service's routes (behind token authentication) and its background tasks.
pub fn start(
    db: Db,
    master: MasterKey,
    verifier: Arc<Verifier>,
    peers: Peers,
) -> (tonic::service::Routes, Vec<JoinHandle<()>>) {
    let register = peers::Register::new(peers.register, peers.token);
    let service = api::Feedback::new(db.clone(), master, register.clone());
    let routes = tonic::service::Routes::new(FeedbackServiceServer::with_interceptor(
        service,
        AuthInterceptor::new(verifier),
    ));
    let erasure = touchstone_platform::consumer::spawn(
        db,
        peers::REGISTER_FEED,
        Arc::new(register),
        Arc::new(peers::Eraser),
    );
    (routes, vec![erasure])
}
