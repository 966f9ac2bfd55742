//! gRPC health (`grpc.health.v1`) driven by the service's readiness probe,
//! plus a liveness name that does not depend on it.

use std::panic::AssertUnwindSafe;
use std::time::Duration;

use futures::FutureExt as _;

use tokio::task::JoinHandle;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::Readiness;

/// The health name that answers SERVING for as long as the server answers at
/// all, whatever the database does: Kubernetes' liveness probe asks it, so a
/// database outage takes pods out of rotation (readiness, `""` and each
/// service's name) without restarting them all (DESIGN §12).
pub const LIVENESS: &str = "liveness";

/// A probe that has not answered in this long counts as failed.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// The statuses one server reports: the whole server (`""`) and each of its gRPC services.
#[derive(Debug)]
pub(crate) struct Health {
    reporter: HealthReporter,
    names: Vec<&'static str>,
}

impl Health {
    /// Starts NOT_SERVING: nothing may route traffic here before the first probe passes.
    pub(crate) async fn new(reporter: HealthReporter, grpc_services: &[&'static str]) -> Self {
        let mut names = vec![""];
        names.extend(
            grpc_services
                .iter()
                .copied()
                .filter(|name| !name.is_empty()),
        );
        let health = Self { reporter, names };
        health.set(ServingStatus::NotServing).await;
        health
            .reporter
            .set_service_status(LIVENESS, ServingStatus::Serving)
            .await;
        health
    }

    async fn set(&self, status: ServingStatus) {
        for name in &self.names {
            self.reporter.set_service_status(name, status).await;
        }
    }

    /// Probes every `interval` and reports each change, until the task is aborted.
    pub(crate) fn watch_readiness(
        &self,
        readiness: Readiness,
        interval: Duration,
    ) -> JoinHandle<()> {
        let health = Self {
            reporter: self.reporter.clone(),
            names: self.names.clone(),
        };
        tokio::spawn(async move {
            let mut serving = false;
            loop {
                // A probe that panics is a failed probe, not the end of health reporting.
                let probe = AssertUnwindSafe(readiness()).catch_unwind();
                let ready = matches!(
                    tokio::time::timeout(PROBE_TIMEOUT, probe).await,
                    Ok(Ok(true))
                );
                if ready != serving {
                    serving = ready;
                    if ready {
                        tracing::info!("readiness probe passed; SERVING");
                        health.set(ServingStatus::Serving).await;
                    } else {
                        tracing::warn!("readiness probe failed; NOT_SERVING");
                        health.set(ServingStatus::NotServing).await;
                    }
                }
                tokio::time::sleep(interval).await;
            }
        })
    }

    /// Reports NOT_SERVING for good: the first step of a drain, so balancers move away.
    pub(crate) async fn stop_serving(&self) {
        self.set(ServingStatus::NotServing).await;
    }

    /// Ends open `Watch` streams (they would otherwise hold their connection open until the
    /// drain deadline). Watchers have already seen NOT_SERVING.
    pub(crate) async fn close_watches(mut self) {
        for name in std::mem::take(&mut self.names) {
            self.reporter.clear_service_status(name).await;
        }
        self.reporter.clear_service_status(LIVENESS).await;
    }
}
