//! The `touchstone` binary: run every service locally (`up`), run one for
//! Kubernetes (`serve`), migrate, mint development tokens, import and export
//! clients, and generate load for benchmarks.

/// mimalloc rather than glibc's allocator: a gRPC call allocates and frees
/// many small buffers, often on different threads (a Tokio worker and
/// SQLite's connection thread), and glibc spent a fifth to a quarter of an
/// import's CPU in `malloc`, `free` and `malloc_consolidate`. Measured in
/// one run each (BENCHMARKS.md): ImportResponses +25 %, SubmitResponse
/// +30 %, GetClient +8 %, the bare echo +65 %.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod apikeys;
mod bench;
mod clients;
mod complaints;
mod csv_import;
mod demo;
mod feedback;
mod kpi;
mod run;

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::time::Duration;
use touchstone_auth::{DevKey, Role, TokenRequest};
use touchstone_platform::config::Settings;

#[derive(Debug, Parser)]
#[command(
    name = "touchstone",
    version,
    about = "Client service quality for public-sector agencies"
)]
struct Cli {
    /// Configuration file (TOML); environment variables TOUCHSTONE_* override it.
    #[arg(long, global = true, env = "TOUCHSTONE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run every service on the embedded SQLite default, with development keys.
    Up {
        /// Fill the hub with demo data (as `touchstone demo`) once the services are up.
        #[arg(long)]
        demo: bool,
        #[command(flatten)]
        demo_options: demo::DemoOptions,
    },
    /// Run one service (for Kubernetes): needs a master key and a JWKS source.
    Serve {
        /// The service to run.
        #[arg(value_enum)]
        service: run::ServiceName,
    },
    /// Apply database migrations of every service (or one) and exit.
    Migrate {
        /// Only this service.
        #[arg(value_enum)]
        service: Option<run::ServiceName>,
    },
    /// Data keys: check and repair the keys stored in the services' databases.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Mint a development token signed by the local development key.
    Token(TokenArgs),
    /// Issue, list and revoke the API keys of agency systems (Open311 intake).
    #[command(subcommand)]
    ApiKeys(apikeys::ApiKeysCommand),
    /// Import or export clients of the register.
    #[command(subcommand)]
    Clients(clients::ClientsCommand),
    /// Import survey responses, or export the A-11 CX data file.
    #[command(subcommand)]
    Feedback(feedback::FeedbackCommand),
    /// Import historic complaints from another system.
    #[command(subcommand)]
    Complaints(complaints::ComplaintsCommand),
    /// KPI maintenance: rebuild the rollups from the change feeds.
    #[command(subcommand)]
    Kpi(kpi::KpiCommand),
    /// Create a demo hub of several agencies with a year of activity,
    /// through the services' APIs (run `touchstone up` first).
    Demo(demo::DemoOptions),
    /// Generate load against a fresh register and a bare tonic echo server in
    /// this process, and report req/s, latency percentiles and ratios.
    Bench(bench::BenchArgs),
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Open every service's database (as configured), check that each sealed value opens
    /// with a key stored in its own database, and copy a missing key from another database.
    /// For split deployments, whose `serve` sees only its own database; run it while the
    /// services are stopped.
    Repair,
}

#[derive(Debug, clap::Args)]
struct TokenArgs {
    /// The caller's agency (tenant).
    #[arg(long)]
    agency: Option<String>,
    /// Extra agencies a hub role may act for; "*" for all.
    #[arg(long, value_delimiter = ',')]
    agencies: Vec<String>,
    /// Roles: officer, senior_officer, analyst, agency_admin, intake, hub_admin, service.
    #[arg(long = "role", required = true, value_parser = parse_role)]
    roles: Vec<Role>,
    /// Token subject.
    #[arg(long, default_value = "dev-user")]
    subject: String,
    /// Lifetime in hours (at most a year).
    #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u64).range(1..=8760))]
    hours: u64,
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| {
        format!("unknown role {s:?}; one of officer, senior_officer, analyst, agency_admin, intake, hub_admin, service")
    })
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("touchstone: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("touchstone: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli.command, settings)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("touchstone: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn dispatch(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Up { demo, demo_options } => run::up(settings, demo.then_some(demo_options)).await,
        Command::Serve { service } => run::serve(settings, service).await,
        Command::Migrate { service } => run::migrate(settings, service).await,
        Command::Keys(KeysCommand::Repair) => run::repair_keys(settings).await,
        Command::Token(args) => {
            let key = DevKey::load_or_create(&settings.data_dir)
                .context("loading the development signing key")?;
            let token = key.mint(&TokenRequest {
                subject: args.subject,
                agency: args.agency,
                agencies: (!args.agencies.is_empty()).then_some(args.agencies),
                roles: args.roles,
                ttl: Duration::from_secs(args.hours * 3600),
                issuer: settings.auth.issuer.clone(),
                audience: settings.auth.audience.clone(),
            })?;
            println!("{token}");
            Ok(())
        }
        Command::Clients(cmd) => clients::run(cmd, &settings).await,
        Command::Feedback(cmd) => feedback::run(cmd, &settings).await,
        Command::Complaints(cmd) => complaints::run(cmd, &settings).await,
        Command::Kpi(cmd) => kpi::run(cmd, &settings).await,
        Command::ApiKeys(cmd) => apikeys::run(cmd, &settings).await,
        Command::Demo(options) => {
            let targets = demo::Targets::from_settings(&settings);
            demo::run(&settings, &targets, &options, true).await
        }
        Command::Bench(args) => bench::run(args, &settings).await,
    }
}
