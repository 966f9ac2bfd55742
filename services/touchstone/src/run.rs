//! Starting services: all of them on loopback (`up`), or one (`serve`), and
//! migrating their databases.

use anyhow::{Context, bail};
use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use touchstone_auth::{AuthConfig, DevKey, Role, ServiceToken, TokenRequest, Verifier};
use touchstone_crypto::MasterKey;
use touchstone_platform::config::{HubSettings, Peers, ServiceSettings, Settings};
use touchstone_platform::db::{Db, MigrationSet};
use touchstone_platform::keycheck;
use touchstone_server::{Readiness, ServeOptions};

/// The services this binary can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ServiceName {
    /// The client register.
    Register,
    /// Complaints, calendars and the learning register.
    Complaints,
    /// Surveys, responses and follow-ups.
    Feedback,
    /// Indicators, standards and charters.
    Kpi,
    /// Hub directory, dashboards, benchmarks and the web dashboard.
    Gateway,
}

impl ServiceName {
    /// Every service, in start order.
    pub(crate) const ALL: [ServiceName; 5] = [
        ServiceName::Register,
        ServiceName::Complaints,
        ServiceName::Feedback,
        ServiceName::Kpi,
        ServiceName::Gateway,
    ];
}

/// The agency `up` mints its ready-to-use token for.
pub(crate) const DEV_AGENCY: &str = "demo";

fn init_telemetry(
    settings: &Settings,
    name: &str,
    banner: bool,
) -> anyhow::Result<touchstone_server::telemetry::TelemetryGuard> {
    // Every command opens its databases after this: the durability setting
    // of SQLite connections comes first.
    touchstone_platform::db::set_sqlite_synchronous(settings.sqlite_synchronous);
    touchstone_server::sample_gauge(
        "touchstone_outbox_horizon_lag_seconds",
        "PostgreSQL change feed: age of the oldest event written but not yet released to \
         readers because an older transaction is still running, at the last feed read \
         (0 on SQLite)",
        touchstone_platform::outbox::horizon_lag_seconds,
    );
    touchstone_server::register_collector("db-pools", touchstone_platform::metrics::encode_pools);
    touchstone_server::register_collector(
        "feed-consumers",
        touchstone_platform::metrics::encode_feeds,
    );
    touchstone_server::register_collector(
        "complaint-timeframes",
        touchstone_complaints::metrics::encode,
    );
    let (json, level) = settings.log_output(std::io::stdout().is_terminal(), banner);
    let ca_pem = match settings
        .otlp_ca_file
        .as_deref()
        .filter(|p| !p.as_os_str().is_empty())
    {
        Some(path) => Some(
            std::fs::read(path)
                .with_context(|| format!("reading {} (setting otlp_ca_file)", path.display()))?,
        ),
        None => None,
    };
    let otlp = settings
        .otlp_endpoint
        .as_deref()
        .filter(|e| !e.is_empty())
        .map(|endpoint| touchstone_server::telemetry::Otlp {
            endpoint,
            ca_pem: ca_pem.as_deref(),
        });
    touchstone_server::telemetry::init(name, json, &level, otlp).context("starting telemetry")
}

/// The master key from configuration, or (development only) one kept in
/// `<data_dir>/master.key`, created on first run.
fn dev_master_key(settings: &Settings) -> anyhow::Result<MasterKey> {
    if let Some(k) = settings.master_key.as_deref().filter(|k| !k.is_empty()) {
        return Ok(MasterKey::from_base64(k)?);
    }
    let path = settings.data_dir.join("master.key");
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        return MasterKey::from_base64(text.trim())
            .with_context(|| format!("{} is not a master key", path.display()));
    }
    let key = MasterKey::generate();
    write_private(&path, key.to_base64().as_bytes())?;
    Ok(key)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}

async fn verifier(settings: &Settings) -> anyhow::Result<Arc<Verifier>> {
    Verifier::new(AuthConfig {
        issuer: settings.auth.issuer.clone(),
        audience: settings.auth.audience.clone(),
        jwks_file: settings.auth.jwks_file.clone(),
        jwks_url: settings.auth.jwks_url.clone().filter(|u| !u.is_empty()),
        leeway_secs: settings.auth.leeway_secs,
    })
    .await
    .context("loading token verification keys (setting auth.jwks_file or auth.jwks_url)")
}

pub(crate) async fn open_db(
    settings: &Settings,
    svc: &ServiceSettings,
    name: &str,
    sets: &[&touchstone_platform::db::MigrationSet],
    migrate: bool,
) -> anyhow::Result<Db> {
    let url = svc.database_url(&settings.data_dir, name);
    let owner_url = svc.migration_url.as_deref().filter(|u| !u.is_empty());
    if let Some(owner_url) = owner_url.filter(|_| migrate) {
        let owner = Db::connect(owner_url, 1)
            .await
            .with_context(|| format!("connecting with setting {name}.migration_url"))?;
        owner
            .migrate(sets, svc.app_role.as_deref())
            .await
            .with_context(|| format!("migrating the {name} database"))?;
        owner.close().await;
    }
    let db = Db::connect_via(&url, svc.max_connections, svc.database_pooler)
        .await
        .with_context(|| format!("connecting with setting {name}.database_url"))?;
    // The pool's and its feed consumers' name in the metrics.
    db.set_name(name);
    if migrate && owner_url.is_none() {
        db.migrate(sets, svc.app_role.as_deref())
            .await
            .with_context(|| format!("migrating the {name} database"))?;
    }
    Ok(db)
}

/// A running service.
struct Running {
    name: &'static str,
    addr: SocketAddr,
    task: JoinHandle<anyhow::Result<()>>,
}

/// What every service is started with.
#[derive(Clone)]
pub(crate) struct Env {
    /// Wraps the data keys; each service builds its own keyring over its
    /// own database from it (DESIGN §5: no key cache is shared).
    pub(crate) master: MasterKey,
    pub(crate) verifier: Arc<Verifier>,
    /// The token a service presents when it calls another on its own behalf.
    pub(crate) service_token: ServiceToken,
    pub(crate) peers: Peers,
    /// The hub's settings (web dashboard, benchmark threshold).
    pub(crate) hub: HubSettings,
}

/// A service's gRPC routes and the background tasks that run beside it
/// (aborted on shutdown).
pub(crate) struct Parts {
    routes: tonic::service::Routes,
    tasks: Vec<JoinHandle<()>>,
}

impl ServiceName {
    pub(crate) fn label(self) -> &'static str {
        match self {
            ServiceName::Register => "register",
            ServiceName::Complaints => "complaints",
            ServiceName::Feedback => "feedback",
            ServiceName::Kpi => "kpi",
            ServiceName::Gateway => "gateway",
        }
    }

    fn grpc_name(self) -> &'static str {
        match self {
            ServiceName::Register => touchstone_register::SERVICE_NAME,
            ServiceName::Complaints => touchstone_complaints::SERVICE_NAME,
            ServiceName::Feedback => touchstone_feedback::SERVICE_NAME,
            ServiceName::Kpi => touchstone_kpi::SERVICE_NAME,
            ServiceName::Gateway => touchstone_gateway::SERVICE_NAME,
        }
    }

    fn settings(self, settings: &Settings) -> &ServiceSettings {
        match self {
            ServiceName::Register => &settings.register,
            ServiceName::Complaints => &settings.complaints,
            ServiceName::Feedback => &settings.feedback,
            ServiceName::Kpi => &settings.kpi,
            ServiceName::Gateway => &settings.gateway,
        }
    }

    fn sealed_columns(self) -> &'static [keycheck::SealedColumn] {
        match self {
            ServiceName::Register => touchstone_register::sealed_columns(),
            ServiceName::Complaints => touchstone_complaints::sealed_columns(),
            ServiceName::Feedback => touchstone_feedback::sealed_columns(),
            ServiceName::Kpi => touchstone_kpi::sealed_columns(),
            ServiceName::Gateway => touchstone_gateway::sealed_columns(),
        }
    }

    pub(crate) fn migration_sets(self) -> Vec<&'static MigrationSet> {
        match self {
            ServiceName::Register => touchstone_register::migration_sets().to_vec(),
            ServiceName::Complaints => touchstone_complaints::migration_sets().to_vec(),
            ServiceName::Feedback => touchstone_feedback::migration_sets().to_vec(),
            ServiceName::Kpi => touchstone_kpi::migration_sets().to_vec(),
            ServiceName::Gateway => touchstone_gateway::migration_sets().to_vec(),
        }
    }

    fn parts(self, db: &Db, env: &Env) -> anyhow::Result<Parts> {
        let purger = touchstone_platform::idempotency::spawn_purger(db.clone());
        let (routes, mut tasks) = match self {
            ServiceName::Register => (
                touchstone_register::routes(db.clone(), env.master.clone(), env.verifier.clone()),
                Vec::new(),
            ),
            ServiceName::Complaints => {
                let peers = touchstone_complaints::Peers::connect(
                    &env.peers.register,
                    env.service_token.clone(),
                )
                .context("setting peers.register")?;
                touchstone_complaints::start(
                    db.clone(),
                    env.master.clone(),
                    env.verifier.clone(),
                    peers,
                )
            }
            ServiceName::Feedback => {
                let peers = touchstone_feedback::Peers::connect(
                    &env.peers.register,
                    env.service_token.clone(),
                )
                .context("setting peers.register")?;
                touchstone_feedback::start(
                    db.clone(),
                    env.master.clone(),
                    env.verifier.clone(),
                    peers,
                )
            }
            ServiceName::Kpi => {
                let peers = touchstone_kpi::Peers::connect(
                    &env.peers.complaints,
                    &env.peers.feedback,
                    env.service_token.clone(),
                )
                .context("settings peers.complaints, peers.feedback")?;
                touchstone_kpi::start(
                    db.clone(),
                    env.master.clone(),
                    env.verifier.clone(),
                    peers,
                    env.hub.min_count,
                )
            }
            ServiceName::Gateway => {
                let mut peers = touchstone_gateway::Peers::connect(
                    &env.peers.register,
                    &env.peers.complaints,
                    &env.peers.feedback,
                    &env.peers.kpi,
                    env.service_token.clone(),
                    env.hub.min_count,
                )
                .context("settings peers.*")?;
                peers.dashboard_cache =
                    std::time::Duration::from_millis(env.hub.dashboard_cache_ms);
                let http = if env.hub.dashboard {
                    let addr = env.hub.http_listen;
                    let listener = std::net::TcpListener::bind(addr).with_context(|| {
                        format!("listening on {addr} (setting hub.http_listen)")
                    })?;
                    listener.set_nonblocking(true)?;
                    Some(tokio::net::TcpListener::from_std(listener)?)
                } else {
                    None
                };
                touchstone_gateway::start(
                    db.clone(),
                    env.master.clone(),
                    env.verifier.clone(),
                    peers,
                    http,
                )
            }
        };
        tasks.push(purger);
        Ok(Parts { routes, tasks })
    }
}

/// Opens a service's database, migrating it if `migrate`.
async fn open_service_db(
    settings: &Settings,
    service: ServiceName,
    migrate: bool,
) -> anyhow::Result<Db> {
    open_db(
        settings,
        service.settings(settings),
        service.label(),
        &service.migration_sets(),
        migrate,
    )
    .await
}

/// Checks the data keys stored in `dbs` and repairs what keys found in one
/// of them can (see `touchstone_platform::keycheck`); an error stops the
/// start with a message that names the service, table and agency.
async fn check_keys(
    dbs: &[(ServiceName, Db)],
    master: &MasterKey,
    rescan: bool,
) -> anyhow::Result<()> {
    let stores: Vec<keycheck::Store<'_>> = dbs
        .iter()
        .map(|(service, db)| keycheck::Store {
            service: service.label(),
            db,
            sealed: service.sealed_columns(),
        })
        .collect();
    let outcomes = keycheck::check_and_repair(&stores, master, rescan)
        .await
        .context("checking the stored data keys")?;
    for (store, outcome) in stores.iter().zip(outcomes) {
        for (agency, key_id) in &outcome.keys_added {
            tracing::warn!(
                service = store.service,
                agency,
                key_id,
                "data key copied from another service's database (repair)"
            );
        }
        if !outcome.already_proved {
            tracing::info!(
                service = store.service,
                values = outcome.values_checked,
                "every sealed value opens with a key stored in the service's database"
            );
        }
    }
    Ok(())
}

async fn start_service(
    settings: &Settings,
    service: ServiceName,
    db: Db,
    env: &Env,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Running> {
    let name = service.label();
    let svc = service.settings(settings);
    let listener = tokio::net::TcpListener::bind(svc.listen)
        .await
        .with_context(|| format!("listening on {} (setting {name}.listen)", svc.listen))?;
    let addr = listener.local_addr()?;
    let Parts { routes, tasks } = service.parts(&db, env)?;
    let probe_db = db.clone();
    let readiness: Readiness = Arc::new(move || {
        let db = probe_db.clone();
        Box::pin(async move { db.writable().await })
    });
    let opts = ServeOptions {
        service: name,
        grpc_services: vec![service.grpc_name()],
        max_concurrent_per_connection: settings.max_concurrent_per_connection,
        max_concurrent_total: settings.max_concurrent_per_service,
        readiness_interval: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(settings.shutdown_grace_secs),
    };
    let task = tokio::spawn(async move {
        let mut rx = shutdown;
        let stop = async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let served = touchstone_server::serve(listener, routes, opts, readiness, stop).await;
        for t in tasks {
            t.abort();
        }
        db.close().await;
        served.with_context(|| format!("serving {name}"))
    });
    Ok(Running { name, addr, task })
}

async fn wait_all(running: Vec<Running>, stop: watch::Sender<bool>) -> anyhow::Result<()> {
    touchstone_server::shutdown::signal().await;
    tracing::info!("shutting down");
    let _ = stop.send(true);
    let mut first_error = None;
    for r in running {
        match r.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(service = r.name, error = %e, "service stopped with an error");
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(anyhow::anyhow!("{} panicked: {e}", r.name));
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// `touchstone up`: every service, development keys, a token to try it with;
/// with `demo`, the demo hub created through their APIs before the banner.
pub(crate) async fn up(
    mut settings: Settings,
    demo: Option<crate::demo::DemoOptions>,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "creating {} (setting data_dir)",
            settings.data_dir.display()
        )
    })?;
    let _telemetry = init_telemetry(&settings, "touchstone", true)?;
    let dev = DevKey::load_or_create(&settings.data_dir)
        .context("creating the development signing key")?;
    if settings.auth.jwks_file.is_none()
        && settings.auth.jwks_url.as_deref().is_none_or(str::is_empty)
    {
        settings.auth.jwks_file = Some(DevKey::jwks_path(&settings.data_dir));
    }
    let dev = Arc::new(dev);
    let service_token = match &settings.service_token_file {
        Some(path) => ServiceToken::File(path.clone()),
        None => ServiceToken::Dev {
            key: dev.clone(),
            issuer: settings.auth.issuer.clone(),
            audience: settings.auth.audience.clone(),
            subject: "touchstone".into(),
        },
    };
    let env = Env {
        master: dev_master_key(&settings)?,
        verifier: verifier(&settings).await?,
        service_token,
        peers: settings.peers.clone(),
        hub: settings.hub.clone(),
    };
    let mut dbs = Vec::new();
    for service in ServiceName::ALL {
        let migrate = service.settings(&settings).migrate_on_start;
        dbs.push((service, open_service_db(&settings, service, migrate).await?));
    }
    // Every database is at hand here: a key one service's database lacks is
    // found in another's.
    check_keys(&dbs, &env.master, false).await?;
    let (stop, rx) = watch::channel(false);
    let mut running = Vec::new();
    for (service, db) in dbs {
        running.push(start_service(&settings, service, db, &env, rx.clone()).await?);
    }
    if let Some(options) = &demo {
        let addr = |name: &str| {
            running
                .iter()
                .find(|r| r.name == name)
                .map_or_else(String::new, |r| format!("http://{}", r.addr))
        };
        let targets = crate::demo::Targets {
            register: addr("register"),
            complaints: addr("complaints"),
            feedback: addr("feedback"),
            kpi: addr("kpi"),
            gateway: addr("gateway"),
        };
        if let Err(e) = crate::demo::run(&settings, &targets, options, false).await {
            let _ = stop.send(true);
            return Err(e.context("creating the demo data"));
        }
    }
    // With the demo, the ready-to-use token is for an agency that has data,
    // with the demo's roles (analyst too, for benchmarks).
    let (agency, roles) = if demo.is_some() {
        (crate::demo::SIGN_IN_AGENCY, crate::demo::SIGN_IN_ROLES)
    } else {
        (DEV_AGENCY, DEV_ROLES)
    };
    let token = dev.mint(&TokenRequest {
        subject: "dev-user".into(),
        agency: Some(agency.into()),
        agencies: None,
        roles: roles.to_vec(),
        ttl: Duration::from_secs(12 * 3600),
        issuer: settings.auth.issuer.clone(),
        audience: settings.auth.audience.clone(),
    })?;
    let dashboard = settings.hub.dashboard.then_some(settings.hub.http_listen);
    print_banner(&running, &token, agency, roles, dashboard);
    wait_all(running, stop).await
}

/// The roles of the token `up` prints without the demo.
const DEV_ROLES: &[Role] = &[Role::Officer, Role::SeniorOfficer, Role::AgencyAdmin];

/// The banner: where everything listens and the one token to use, called
/// "the development token" and `$TOKEN` wherever it is mentioned.
fn print_banner(
    running: &[Running],
    token: &str,
    agency: &str,
    roles: &[Role],
    dashboard: Option<SocketAddr>,
) {
    println!("Touchstone is up.");
    for r in running {
        println!("  {:<10} {}  (gRPC, gRPC-Web, /metrics)", r.name, r.addr);
    }
    if let Some(addr) = dashboard {
        println!(
            "  {:<10} http://{addr}/  (sign in with the development token)",
            "dashboard"
        );
    }
    println!();
    let roles: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    println!(
        "Development token (agency \"{agency}\"; roles {}; 12 hours), for the dashboard's sign-in and the APIs:",
        roles.join(", ")
    );
    println!("  export TOKEN={token}");
    if agency == DEV_AGENCY {
        println!(
            "  (agency \"{DEV_AGENCY}\" has no data yet; `touchstone up --demo` starts with a year of demo data)"
        );
    }
    if let Some(register) = running.iter().find(|r| r.name == "register") {
        println!();
        println!("Try it:");
        println!(
            "  grpcurl -plaintext -H \"authorization: Bearer $TOKEN\" -d '{{\"parent\":\"agencies/{agency}\"}}' {} touchstone.register.v1.RegisterService/ListClients",
            register.addr
        );
    }
    println!();
    println!(
        "Mint other tokens with `touchstone token --agency A --role officer`. Stop with Ctrl-C."
    );
}

/// `touchstone serve <service>`: one service, production settings required.
pub(crate) async fn serve(settings: Settings, service: ServiceName) -> anyhow::Result<()> {
    let Some(master) = settings.master_key.as_deref().filter(|k| !k.is_empty()) else {
        bail!("setting `master_key` (TOUCHSTONE_MASTER_KEY) is required by `serve`");
    };
    if settings.auth.jwks_file.is_none()
        && settings.auth.jwks_url.as_deref().is_none_or(str::is_empty)
    {
        bail!("setting `auth.jwks_file` or `auth.jwks_url` is required by `serve`");
    }
    let _telemetry = init_telemetry(&settings, &format!("touchstone-{}", service.label()), false)?;
    let env = Env {
        master: MasterKey::from_base64(master)?,
        verifier: verifier(&settings).await?,
        service_token: settings
            .service_token_file
            .clone()
            .map_or(ServiceToken::None, ServiceToken::File),
        peers: settings.peers.clone(),
        hub: settings.hub.clone(),
    };
    let migrate = service.settings(&settings).migrate_on_start;
    let db = open_service_db(&settings, service, migrate).await?;
    // Only this database is at hand: what it cannot repair alone stops the
    // start and names `touchstone keys repair`.
    check_keys(&[(service, db.clone())], &env.master, false).await?;
    let (stop, rx) = watch::channel(false);
    let running = vec![start_service(&settings, service, db, &env, rx).await?];
    for r in &running {
        tracing::info!(service = r.name, addr = %r.addr, "serving");
    }
    wait_all(running, stop).await
}

/// `touchstone migrate`: applies migrations and exits.
pub(crate) async fn migrate(settings: Settings, only: Option<ServiceName>) -> anyhow::Result<()> {
    let _telemetry = init_telemetry(&settings, "touchstone-migrate", false)?;
    for service in ServiceName::ALL {
        if only.is_some_and(|s| s != service) {
            continue;
        }
        let db = open_service_db(&settings, service, true).await?;
        db.close().await;
        println!("{}: migrated", service.label());
    }
    Ok(())
}

/// `touchstone keys repair`: migrates every service's database, opens every
/// sealed value in them (even where a start recorded the proof) and copies
/// a key that one lacks from another
/// (the path for split deployments, whose `serve` sees only its own
/// database). Run it while the services are stopped: a running service
/// would not see keys added under it until it restarts.
pub(crate) async fn repair_keys(settings: Settings) -> anyhow::Result<()> {
    let _telemetry = init_telemetry(&settings, "touchstone-keys", false)?;
    let master = existing_master_key(&settings)?;
    let mut dbs = Vec::new();
    for service in ServiceName::ALL {
        dbs.push((service, open_service_db(&settings, service, true).await?));
    }
    let result = check_keys(&dbs, &master, true).await;
    for (_, db) in &dbs {
        db.close().await;
    }
    result?;
    println!("every service's sealed values open with keys stored in its own database");
    Ok(())
}

/// The configured master key, or the development one `up` keeps in the
/// data directory; never a new one (a repair with a fresh key would find
/// every stored key unreadable).
fn existing_master_key(settings: &Settings) -> anyhow::Result<MasterKey> {
    if let Some(k) = settings.master_key.as_deref().filter(|k| !k.is_empty()) {
        return Ok(MasterKey::from_base64(k)?);
    }
    let path = settings.data_dir.join("master.key");
    if !path.exists() {
        bail!(
            "setting `master_key` (TOUCHSTONE_MASTER_KEY) is required: there is no {}",
            path.display()
        );
    }
    dev_master_key(settings)
}
