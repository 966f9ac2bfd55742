//! The client register: who an agency's clients are, how to reach them, what
//! they need and what they consented to. Personal data is encrypted at the
//! field level; every access is audited; every change lands in the outbox.

pub mod api;
pub mod domain;
pub mod error;
pub mod store;

use std::sync::Arc;
use touchstone_api::register::v1::register_service_server::RegisterServiceServer;
use touchstone_auth::{AuthInterceptor, Verifier};
use touchstone_crypto::MasterKey;
use touchstone_platform::db::{Db, Migration, MigrationSet};

/// Full gRPC name, for health and reflection.
pub const SERVICE_NAME: &str = "touchstone.register.v1.RegisterService";

/// The register's tables, per backend.
pub static MIGRATIONS: MigrationSet = MigrationSet {
    component: "register",
    sqlite: &[Migration {
        version: 1,
        name: "register",
        sql: include_str!("../migrations/sqlite/0001_register.sql"),
    }],
    postgres: &[Migration {
        version: 1,
        name: "register",
        sql: include_str!("../migrations/postgres/0001_register.sql"),
    }],
};

/// The service's sealed columns besides the platform's, for the start-up
/// key check.
pub fn sealed_columns() -> &'static [touchstone_platform::keycheck::SealedColumn] {
    store::SEALED
}

/// Every migration set the register's database needs, in order.
pub fn migration_sets() -> [&'static MigrationSet; 2] {
    [&touchstone_platform::db::PLATFORM_MIGRATIONS, &MIGRATIONS]
}

/// The register's routes, behind token authentication.
pub fn routes(db: Db, master: MasterKey, verifier: Arc<Verifier>) -> tonic::service::Routes {
    let service = api::Register::new(db, master);
    tonic::service::Routes::new(RegisterServiceServer::with_interceptor(
        service,
        AuthInterceptor::new(verifier),
    ))
}
