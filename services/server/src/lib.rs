//! Server bootstrap every Touchstone service uses: one port carrying the service's gRPC routes,
//! gRPC health, server reflection, gRPC-Web and Prometheus `/metrics`, with per-connection load
//! shedding, trace-context propagation, request logs and a graceful drain on shutdown.
//!
//! ```no_run
//! # async fn run(routes: tonic::service::Routes) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use futures::FutureExt as _;
//!
//! let _telemetry = touchstone_server::telemetry::init("register", true, "info", None)?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:50051").await?;
//! let opts = touchstone_server::ServeOptions::new(
//!     "register",
//!     vec!["touchstone.register.v1.RegisterService"],
//! );
//! let readiness: touchstone_server::Readiness = Arc::new(|| async { true }.boxed());
//! touchstone_server::serve(listener, routes, opts, readiness, touchstone_server::shutdown::signal())
//!     .await?;
//! # Ok(())
//! # }
//! ```

pub mod deadline;
mod health;
mod methods;
pub mod metrics;
mod observe;
pub mod peer;
mod process;
mod serve;
mod shed;
pub mod shutdown;
pub mod telemetry;

pub use health::LIVENESS;
pub use metrics::{register_collector, sample_gauge};
pub use peer::{PeerChannel, traced};
pub use serve::{Readiness, ServeError, ServeOptions, serve};
pub use telemetry::inject_trace_context;
