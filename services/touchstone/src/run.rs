//! Starting services: all of them on loopback (`up`), or one (`serve`), and
//! migrating their databases.

use anyhow::{Context, bail};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use touchstone_auth::{AuthConfig, DevKey, Role, TokenRequest, Verifier};
use touchstone_crypto::MasterKey;
use touchstone_platform::config::{LogFormat, ServiceSettings, Settings};
use touchstone_platform::db::Db;
use touchstone_platform::keyring::Keyring;
use touchstone_server::{Readiness, ServeOptions};

/// The services this binary can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum ServiceName {
    /// The client register.
    Register,
}

/// The agency `up` mints its ready-to-use token for.
pub(crate) const DEV_AGENCY: &str = "demo";

fn init_telemetry(
    settings: &Settings,
    name: &str,
) -> anyhow::Result<touchstone_server::telemetry::TelemetryGuard> {
    touchstone_server::telemetry::init(
        name,
        settings.log_format == LogFormat::Json,
        &settings.log_level,
        settings.otlp_endpoint.as_deref().filter(|e| !e.is_empty()),
    )
    .context("starting telemetry")
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

async fn open_db(
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
    let db = Db::connect(&url, svc.max_connections)
        .await
        .with_context(|| format!("connecting with setting {name}.database_url"))?;
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

async fn start_register(
    settings: &Settings,
    keys: Arc<Keyring>,
    verifier: Arc<Verifier>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<Running> {
    let svc = &settings.register;
    let db = open_db(
        settings,
        svc,
        "register",
        &touchstone_register::migration_sets(),
        svc.migrate_on_start,
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(svc.listen)
        .await
        .with_context(|| format!("listening on {} (setting register.listen)", svc.listen))?;
    let addr = listener.local_addr()?;
    let routes = touchstone_register::routes(db.clone(), keys, verifier);
    let probe_db = db.clone();
    let readiness: Readiness = Arc::new(move || {
        let db = probe_db.clone();
        Box::pin(async move { db.ping().await })
    });
    let opts = ServeOptions {
        service: "register",
        grpc_services: vec![touchstone_register::SERVICE_NAME],
        max_concurrent_per_connection: settings.max_concurrent_per_connection,
        readiness_interval: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(settings.shutdown_grace_secs),
    };
    let purger = touchstone_platform::idempotency::spawn_purger(db.clone());
    let task = tokio::spawn(async move {
        let mut rx = shutdown;
        let stop = async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let served = touchstone_server::serve(listener, routes, opts, readiness, stop).await;
        purger.abort();
        db.close().await;
        served.context("serving register")
    });
    Ok(Running {
        name: "register",
        addr,
        task,
    })
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

/// `touchstone up`: every service, development keys, a token to try it with.
pub(crate) async fn up(mut settings: Settings) -> anyhow::Result<()> {
    std::fs::create_dir_all(&settings.data_dir).with_context(|| {
        format!(
            "creating {} (setting data_dir)",
            settings.data_dir.display()
        )
    })?;
    let _telemetry = init_telemetry(&settings, "touchstone")?;
    let dev = DevKey::load_or_create(&settings.data_dir)
        .context("creating the development signing key")?;
    if settings.auth.jwks_file.is_none()
        && settings.auth.jwks_url.as_deref().is_none_or(str::is_empty)
    {
        settings.auth.jwks_file = Some(DevKey::jwks_path(&settings.data_dir));
    }
    let keys = Arc::new(Keyring::new(dev_master_key(&settings)?));
    let verifier = verifier(&settings).await?;
    let (stop, rx) = watch::channel(false);
    let running = vec![start_register(&settings, keys, verifier, rx).await?];
    let token = dev.mint(&TokenRequest {
        subject: "dev-user".into(),
        agency: Some(DEV_AGENCY.into()),
        agencies: None,
        roles: vec![Role::Officer, Role::SeniorOfficer, Role::AgencyAdmin],
        ttl: Duration::from_secs(12 * 3600),
        issuer: settings.auth.issuer.clone(),
        audience: settings.auth.audience.clone(),
    })?;
    print_banner(&running, &token);
    wait_all(running, stop).await
}

fn print_banner(running: &[Running], token: &str) {
    println!("Touchstone is up.");
    for r in running {
        println!("  {:<10} {}  (gRPC, gRPC-Web, /metrics)", r.name, r.addr);
    }
    println!();
    println!(
        "Development token (agency \"{DEV_AGENCY}\"; roles officer, senior_officer, agency_admin; 12 hours):"
    );
    println!("  export TOKEN={token}");
    if let Some(register) = running.iter().find(|r| r.name == "register") {
        println!();
        println!("Try it:");
        println!(
            "  grpcurl -plaintext -H \"authorization: Bearer $TOKEN\" -d '{{\"parent\":\"agencies/{DEV_AGENCY}\"}}' {} touchstone.register.v1.RegisterService/ListClients",
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
    let _telemetry = init_telemetry(&settings, &format!("touchstone-{}", service_label(service)))?;
    let keys = Arc::new(Keyring::new(MasterKey::from_base64(master)?));
    let verifier = verifier(&settings).await?;
    let (stop, rx) = watch::channel(false);
    let running = match service {
        ServiceName::Register => vec![start_register(&settings, keys, verifier, rx).await?],
    };
    for r in &running {
        tracing::info!(service = r.name, addr = %r.addr, "serving");
    }
    wait_all(running, stop).await
}

fn service_label(s: ServiceName) -> &'static str {
    match s {
        ServiceName::Register => "register",
    }
}

/// `touchstone migrate`: applies migrations and exits.
pub(crate) async fn migrate(settings: Settings, only: Option<ServiceName>) -> anyhow::Result<()> {
    let _telemetry = init_telemetry(&settings, "touchstone-migrate")?;
    if only.is_none_or(|s| s == ServiceName::Register) {
        let db = open_db(
            &settings,
            &settings.register,
            "register",
            &touchstone_register::migration_sets(),
            true,
        )
        .await?;
        db.close().await;
        println!("register: migrated");
    }
    Ok(())
}
