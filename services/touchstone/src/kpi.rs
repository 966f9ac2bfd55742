//! `touchstone kpi rebuild`: clears the kpi service's rollups and replays
//! the complaints and feedback change feeds from their first event, so the
//! figures can be recomputed from the producers' records (after a bug fix,
//! or to prove that they come out identical).

use anyhow::Context;
use clap::Subcommand;
use std::sync::Arc;
use std::time::Instant;
use touchstone_auth::{DevKey, ServiceToken};
use touchstone_kpi::feeds::{self, ComplaintsFeed, FeedbackFeed};
use touchstone_platform::config::Settings;

/// KPI maintenance.
#[derive(Debug, Subcommand)]
pub(crate) enum KpiCommand {
    /// Replay both change feeds from the start into empty rollups. Safe
    /// while the services run; the peers must be reachable.
    Rebuild {
        /// The complaints service; default: setting peers.complaints.
        #[arg(long)]
        complaints: Option<String>,
        /// The feedback service; default: setting peers.feedback.
        #[arg(long)]
        feedback: Option<String>,
    },
}

pub(crate) async fn run(cmd: KpiCommand, settings: &Settings) -> anyhow::Result<()> {
    let KpiCommand::Rebuild {
        complaints,
        feedback,
    } = cmd;
    let svc = &settings.kpi;
    // Migrated as `serve` would (through migration_url when one is set).
    let db = crate::run::open_db(
        settings,
        svc,
        "kpi",
        &touchstone_kpi::migration_sets(),
        svc.migrate_on_start,
    )
    .await?;
    let token = match &settings.service_token_file {
        Some(path) => ServiceToken::File(path.clone()),
        None => ServiceToken::Dev {
            key: Arc::new(
                DevKey::load_or_create(&settings.data_dir)
                    .context("loading the development signing key")?,
            ),
            issuer: settings.auth.issuer.clone(),
            audience: settings.auth.audience.clone(),
            subject: "touchstone-kpi-rebuild".into(),
        },
    };
    let peers = touchstone_kpi::Peers::connect(
        complaints.as_deref().unwrap_or(&settings.peers.complaints),
        feedback.as_deref().unwrap_or(&settings.peers.feedback),
        token,
    )
    .context("peer addresses")?;
    let started = Instant::now();
    let (c, f) = feeds::rebuild(
        &db,
        &ComplaintsFeed {
            channel: peers.complaints.clone(),
            token: peers.token.clone(),
        },
        &FeedbackFeed {
            channel: peers.feedback.clone(),
            token: peers.token.clone(),
        },
    )
    .await
    .context("replaying the change feeds")?;
    db.close().await;
    println!(
        "kpi: rebuilt from {c} complaints events and {f} feedback events in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
