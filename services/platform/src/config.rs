//! Configuration: built-in defaults, then an optional TOML file, then
//! `TOUCHSTONE_*` environment variables (nested keys joined with `__`, e.g.
//! `TOUCHSTONE_REGISTER__LISTEN`). Start-up stops on a bad value with a
//! message naming the setting. Every setting is documented in
//! docs/configuration.md.

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when stdout is not a terminal (what log shippers read), text
    /// when a person is watching it (the default).
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable lines.
    Text,
}

/// How callers are authenticated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    /// Required `iss` claim.
    pub issuer: String,
    /// Required `aud` claim.
    pub audience: String,
    /// JWKS file with the token signing keys.
    pub jwks_file: Option<PathBuf>,
    /// JWKS URL with the token signing keys (refreshed on an unknown key id).
    pub jwks_url: Option<String>,
    /// Allowed clock skew in seconds.
    pub leeway_secs: u64,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            issuer: touchstone_auth::DevKey::ISSUER.to_string(),
            audience: touchstone_auth::DevKey::AUDIENCE.to_string(),
            jwks_file: None,
            jwks_url: None,
            leeway_secs: 30,
        }
    }
}

/// Where one service listens and keeps its data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSettings {
    /// gRPC (and gRPC-Web, /metrics) address.
    pub listen: SocketAddr,
    /// `sqlite://path?mode=rwc` or `postgres://…`; empty means
    /// `<data_dir>/<service>.db`. TLS to PostgreSQL is set in the URL:
    /// `sslmode=verify-full&sslrootcert=/path/to/ca.crt`.
    pub database_url: Option<String>,
    /// URL of a role that owns the tables, used only to migrate
    /// (PostgreSQL); empty means `database_url`. Must reach PostgreSQL
    /// directly, not through a transaction pooler.
    pub migration_url: Option<String>,
    /// What `database_url` goes through: `none` (directly, or a pooler in
    /// session mode) or `transaction` (a pooler in transaction mode, such
    /// as CloudNativePG's `Pooler`; see [`crate::db::Pooler`]).
    pub database_pooler: crate::db::Pooler,
    /// PostgreSQL role that the service connects as, granted table access
    /// after migrations.
    pub app_role: Option<String>,
    /// Pool size.
    pub max_connections: u32,
    /// Whether `serve` and `up` apply migrations at start. Turn it off when a
    /// separate `touchstone migrate` job does it and the service's role may
    /// not change the schema.
    pub migrate_on_start: bool,
}

impl ServiceSettings {
    fn on_port(port: u16) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            database_url: None,
            migration_url: None,
            database_pooler: crate::db::Pooler::None,
            app_role: None,
            max_connections: 8,
            migrate_on_start: true,
        }
    }

    /// The database URL, defaulting to a SQLite file in `data_dir`.
    pub fn database_url(&self, data_dir: &Path, service: &str) -> String {
        match &self.database_url {
            Some(url) if !url.is_empty() => url.clone(),
            _ => crate::db::sqlite_url(&data_dir.join(format!("{service}.db"))),
        }
    }
}

/// The top-level settings, as named in files and environment variables.
const TOP_LEVEL_KEYS: &[&str] = &[
    "data_dir",
    "log_format",
    "log_level",
    "otlp_endpoint",
    "otlp_ca_file",
    "master_key",
    "max_concurrent_per_connection",
    "max_concurrent_per_service",
    "shutdown_grace_secs",
    "auth",
    "service_token_file",
    "peers",
    "register",
    "complaints",
    "feedback",
    "kpi",
    "gateway",
    "hub",
];

/// Where each service is reached by the others (Kubernetes: the Service's
/// DNS name). `up` runs them all on loopback at these defaults.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Peers {
    /// The client register, e.g. `http://touchstone-register:50051`. Any peer
    /// may name several replicas, separated by commas, and a DNS name stands
    /// for every address it resolves to (a headless Service: one per pod).
    pub register: String,
    /// The complaints service.
    pub complaints: String,
    /// The feedback service.
    pub feedback: String,
    /// The KPI service.
    pub kpi: String,
    /// The gateway.
    pub gateway: String,
}

impl Default for Peers {
    fn default() -> Self {
        Self {
            register: "http://127.0.0.1:50051".into(),
            complaints: "http://127.0.0.1:50052".into(),
            feedback: "http://127.0.0.1:50053".into(),
            kpi: "http://127.0.0.1:50054".into(),
            gateway: "http://127.0.0.1:50055".into(),
        }
    }
}

/// Every setting of the `touchstone` binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Directory for SQLite files and development keys.
    pub data_dir: PathBuf,
    /// `auto`, `json` or `text`.
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `touchstone_register=debug,info`; empty
    /// chooses (see [`Settings::log_output`]).
    pub log_level: String,
    /// OTLP/gRPC endpoint for traces, e.g. `http://otel-collector:4317`,
    /// or `https://…` for TLS.
    pub otlp_endpoint: Option<String>,
    /// PEM file of the CA that signed the collector's certificate, for an
    /// `https://` `otlp_endpoint`; empty trusts the public web roots
    /// (webpki-roots).
    pub otlp_ca_file: Option<PathBuf>,
    /// Base64 of the 32-byte master key that wraps agency data keys.
    pub master_key: Option<String>,
    /// Requests in flight per connection before new ones are shed.
    pub max_concurrent_per_connection: usize,
    /// Requests in flight in one service, over all its connections, before
    /// new ones are shed.
    pub max_concurrent_per_service: usize,
    /// Seconds to let in-flight calls finish on shutdown.
    pub shutdown_grace_secs: u64,
    /// SQLite's `synchronous`: `full` (the default) makes every commit
    /// durable against power loss; `normal` only against a crash of the
    /// process (WAL mode may then lose the last commits when power fails).
    pub sqlite_synchronous: crate::db::Synchronous,
    /// Token verification.
    pub auth: AuthSettings,
    /// File holding the token a service presents when it calls another on
    /// its own behalf (change feeds, background checks); `up` mints one.
    pub service_token_file: Option<PathBuf>,
    /// Addresses of the services, for the calls between them.
    pub peers: Peers,
    /// The client register service.
    pub register: ServiceSettings,
    /// The complaints service.
    pub complaints: ServiceSettings,
    /// The feedback service.
    pub feedback: ServiceSettings,
    /// The KPI service.
    pub kpi: ServiceSettings,
    /// The gateway (hub directory, dashboards, benchmarks).
    pub gateway: ServiceSettings,
    /// The hub: the web dashboard and benchmark disclosure.
    pub hub: HubSettings,
}

/// Settings of the hub that the gateway serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubSettings {
    /// Address of the web dashboard and its JSON API (HTTP).
    pub http_listen: SocketAddr,
    /// Whether the gateway serves the web dashboard.
    pub dashboard: bool,
    /// Benchmark figures from fewer observations than this are suppressed.
    pub min_count: u64,
    /// Milliseconds a whole dashboard is kept for the caller that asked for
    /// it (0: none); at most [`MAX_DASHBOARD_CACHE_MS`].
    pub dashboard_cache_ms: u64,
}

/// The longest a dashboard may be kept: a cached dashboard is a moment's
/// shortcut, not a report.
pub const MAX_DASHBOARD_CACHE_MS: u64 = 60_000;

impl Default for HubSettings {
    fn default() -> Self {
        Self {
            http_listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            dashboard: true,
            min_count: 10,
            dashboard_cache_ms: 1000,
        }
    }
}

impl Settings {
    /// How logs are written: JSON or not, and the filter. `auto` is JSON
    /// unless stdout is a terminal. An empty `log_level` is `info`, except
    /// for a command that prints something for a person to read on a
    /// terminal (`up` and its banner): there only warnings and errors
    /// follow it, and per-request lines (at debug) need asking for.
    pub fn log_output(&self, terminal: bool, banner: bool) -> (bool, String) {
        let json = match self.log_format {
            LogFormat::Auto => !terminal,
            LogFormat::Json => true,
            LogFormat::Text => false,
        };
        let level = match self.log_level.trim() {
            "" if terminal && banner => "warn".to_string(),
            "" => "info".to_string(),
            set => set.to_string(),
        };
        (json, level)
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            log_format: LogFormat::Auto,
            log_level: String::new(),
            otlp_endpoint: None,
            otlp_ca_file: None,
            master_key: None,
            max_concurrent_per_connection: 256,
            max_concurrent_per_service: 1024,
            shutdown_grace_secs: 20,
            sqlite_synchronous: crate::db::Synchronous::Full,
            auth: AuthSettings::default(),
            service_token_file: None,
            peers: Peers::default(),
            register: ServiceSettings::on_port(50051),
            complaints: ServiceSettings::on_port(50052),
            feedback: ServiceSettings::on_port(50053),
            kpi: ServiceSettings::on_port(50054),
            gateway: ServiceSettings::on_port(50055),
            hub: HubSettings::default(),
        }
    }
}

/// A setting that is present but wrong.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Parsing failed; figment's message names the key and its source.
    #[error("configuration: {0}")]
    Parse(Box<figment::Error>),
    /// A value parsed but is not acceptable.
    #[error("configuration: setting `{setting}` {problem}")]
    Invalid {
        /// Dotted setting name, e.g. `register.database_url`.
        setting: String,
        /// What is wrong.
        problem: String,
    },
}

impl Settings {
    /// Loads defaults, then `file` (if given; it must exist), then the
    /// environment, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Settings, ConfigError> {
        // Only keys whose first part is a setting: Kubernetes adds variables such
        // as TOUCHSTONE_REGISTER_SERVICE_HOST for a Service named touchstone-register,
        // which must not stop start-up. Typos below a known key are still errors.
        let env = Env::prefixed("TOUCHSTONE_").split("__").filter(|key| {
            // figment filters before it maps `__` to `.`; accept either form.
            let raw = key.as_str();
            let first = raw.split("__").next().unwrap_or(raw);
            let first = first.split('.').next().unwrap_or(first);
            TOP_LEVEL_KEYS.iter().any(|k| k.eq_ignore_ascii_case(first))
        });
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::Invalid {
                    setting: "config".into(),
                    problem: format!("names a file that does not exist: {}", path.display()),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let env = env.ignore(&["config", "test_pg_url"]);
        let settings: Settings = figment
            .merge(env)
            .extract()
            .map_err(|e| ConfigError::Parse(Box::new(e)))?;
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting: &str, problem: &str| ConfigError::Invalid {
            setting: setting.to_string(),
            problem: problem.to_string(),
        };
        if let Some(key) = self.master_key.as_deref().filter(|k| !k.is_empty()) {
            touchstone_crypto::MasterKey::from_base64(key)
                .map_err(|_| invalid("master_key", "must be the base64 of 32 random bytes"))?;
        }
        for (name, svc) in [
            ("register", &self.register),
            ("complaints", &self.complaints),
            ("feedback", &self.feedback),
            ("kpi", &self.kpi),
            ("gateway", &self.gateway),
        ] {
            let database_url = svc.database_url.as_deref().filter(|u| !u.is_empty());
            let migration_url = svc.migration_url.as_deref().filter(|u| !u.is_empty());
            if let Some(url) = database_url {
                check_db_url(url).map_err(|p| ConfigError::Invalid {
                    setting: format!("{name}.database_url"),
                    problem: p,
                })?;
            }
            if let Some(url) = migration_url {
                check_db_url(url).map_err(|p| ConfigError::Invalid {
                    setting: format!("{name}.migration_url"),
                    problem: p,
                })?;
            }
            if svc.database_pooler == crate::db::Pooler::Transaction {
                let setting = format!("{name}.database_pooler");
                if !database_url.is_some_and(is_postgres_url) {
                    return Err(invalid(
                        &setting,
                        "is `transaction`, which needs a postgres:// database_url (the pooler's)",
                    ));
                }
                if !migration_url.is_some_and(is_postgres_url) {
                    return Err(invalid(
                        &setting,
                        "is `transaction`, which needs a postgres:// migration_url that reaches \
                         PostgreSQL directly (migrations hold a session lock)",
                    ));
                }
            }
            if svc.max_connections == 0 {
                return Err(invalid(
                    &format!("{name}.max_connections"),
                    "must be at least 1",
                ));
            }
        }
        for (name, url) in [
            ("peers.register", &self.peers.register),
            ("peers.complaints", &self.peers.complaints),
            ("peers.feedback", &self.peers.feedback),
            ("peers.kpi", &self.peers.kpi),
            ("peers.gateway", &self.peers.gateway),
        ] {
            // One URL, or several replicas' separated by commas (each
            // checked in full when the channel is made).
            if !url.split(',').all(|u| {
                let u = u.trim();
                u.starts_with("http://") || u.starts_with("https://")
            }) {
                return Err(invalid(
                    name,
                    "must be an http:// or https:// URL, or several separated by commas",
                ));
            }
        }
        if self.hub.min_count == 0 {
            return Err(invalid("hub.min_count", "must be at least 1"));
        }
        if self.hub.dashboard_cache_ms > MAX_DASHBOARD_CACHE_MS {
            return Err(invalid(
                "hub.dashboard_cache_ms",
                "must be at most 60000 (a minute)",
            ));
        }
        if self.max_concurrent_per_connection == 0 {
            return Err(invalid(
                "max_concurrent_per_connection",
                "must be at least 1",
            ));
        }
        if self.max_concurrent_per_service == 0 {
            return Err(invalid("max_concurrent_per_service", "must be at least 1"));
        }
        if self.auth.issuer.is_empty() {
            return Err(invalid("auth.issuer", "must not be empty"));
        }
        if self.auth.audience.is_empty() {
            return Err(invalid("auth.audience", "must not be empty"));
        }
        let otlp = self.otlp_endpoint.as_deref().filter(|u| !u.is_empty());
        if let Some(url) = otlp
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(invalid(
                "otlp_endpoint",
                "must be an http:// or https:// URL",
            ));
        }
        if let Some(ca) = self
            .otlp_ca_file
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty())
        {
            if !otlp.is_some_and(|u| u.starts_with("https://")) {
                return Err(invalid(
                    "otlp_ca_file",
                    "is set, which needs an https:// otlp_endpoint",
                ));
            }
            check_pem_file(ca).map_err(|p| ConfigError::Invalid {
                setting: "otlp_ca_file".into(),
                problem: p,
            })?;
        }
        Ok(())
    }
}

fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Checks a database URL, and for PostgreSQL its TLS parameters: `sslmode`
/// one that sqlx knows, and `sslrootcert` (the CA file that `verify-ca` and
/// `verify-full` check the server against) a readable PEM file.
fn check_db_url(url: &str) -> Result<(), String> {
    if url.starts_with("sqlite:") {
        return Ok(());
    }
    if !is_postgres_url(url) {
        return Err("must start with sqlite: or postgres://".into());
    }
    let query = url.split_once('?').map_or("", |(_, q)| q);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value);
        match key {
            "sslmode" | "ssl-mode" => {
                const MODES: [&str; 6] = [
                    "disable",
                    "allow",
                    "prefer",
                    "require",
                    "verify-ca",
                    "verify-full",
                ];
                if !MODES.contains(&value.as_str()) {
                    return Err(format!(
                        "has sslmode={value}; expected one of {}",
                        MODES.join(", ")
                    ));
                }
            }
            "sslrootcert" | "ssl-root-cert" | "ssl-ca" => {
                check_pem_file(Path::new(&value)).map_err(|p| format!("has {key}: {p}"))?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// Whether `path` is a readable file holding a PEM certificate.
fn check_pem_file(path: &Path) -> Result<(), String> {
    match std::fs::read_to_string(path) {
        Ok(pem) if pem.contains("-----BEGIN CERTIFICATE-----") => Ok(()),
        Ok(_) => Err(format!(
            "names {}, which holds no PEM certificate",
            path.display()
        )),
        Err(e) => Err(format!(
            "names {}, which cannot be read: {e}",
            path.display()
        )),
    }
}

/// Decodes `%XX` escapes of a URL's query value (`+` stays as it is, as
/// sqlx reads it).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push(((hex(h).unwrap_or(0) << 4) | hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment's Jail fixes the closure's error type
mod tests {
    use super::*;
    use figment::Jail;

    fn with_env(vars: &[(&str, &str)]) -> Result<Settings, String> {
        let mut out = Err(String::new());
        Jail::expect_with(|jail| {
            for (k, v) in vars {
                jail.set_env(format!("TOUCHSTONE_{k}"), v);
            }
            // figment names environment keys in upper case.
            out = Settings::load(None).map_err(|e| e.to_string().to_lowercase());
            Ok(())
        });
        out
    }

    #[test]
    fn defaults_are_valid() {
        let s = with_env(&[]).expect("defaults");
        assert_eq!(s.register.listen.port(), 50051);
        assert_eq!(s.log_format, LogFormat::Auto);
    }

    #[test]
    fn logs_suit_who_reads_them() {
        let s = with_env(&[]).expect("defaults");
        // A person at a terminal running `up`: text, then only warnings.
        assert_eq!(s.log_output(true, true), (false, "warn".to_string()));
        // Other commands on a terminal: text at info.
        assert_eq!(s.log_output(true, false), (false, "info".to_string()));
        // Not a terminal (a container, a pipe): JSON at info.
        assert_eq!(s.log_output(false, true), (true, "info".to_string()));
        // Settings choose.
        let s = with_env(&[("LOG_FORMAT", "json"), ("LOG_LEVEL", "debug")]).expect("valid");
        assert_eq!(s.log_output(true, true), (true, "debug".to_string()));
        let s = with_env(&[("LOG_FORMAT", "text")]).expect("valid");
        assert_eq!(s.log_output(false, false), (false, "info".to_string()));
    }

    #[test]
    fn nested_values_override() {
        let s = with_env(&[
            ("REGISTER__LISTEN", "127.0.0.1:6000"),
            ("LOG_FORMAT", "text"),
            ("OTLP_ENDPOINT", "http://collector:4317"),
        ])
        .expect("valid");
        assert_eq!(s.register.listen.port(), 6000);
        assert_eq!(s.log_format, LogFormat::Text);
        assert_eq!(s.otlp_endpoint.as_deref(), Some("http://collector:4317"));
    }

    #[test]
    fn kubernetes_service_links_are_ignored() {
        let s = with_env(&[
            ("REGISTER_SERVICE_HOST", "10.0.0.1"),
            ("REGISTER_PORT", "tcp://10.0.0.1:50051"),
            ("REGISTER__MIGRATE_ON_START", "false"),
        ])
        .expect("service links do not stop start-up");
        assert!(!s.register.migrate_on_start);
        let e =
            with_env(&[("REGISTER__LISTN", "127.0.0.1:1")]).expect_err("typo below a known key");
        assert!(e.contains("listn"), "{e}");
    }

    #[test]
    fn bad_values_name_the_setting() {
        let e = with_env(&[("REGISTER__LISTEN", "nowhere")]).expect_err("bad address");
        assert!(e.contains("register.listen"), "{e}");
        let e = with_env(&[("MASTER_KEY", "short")]).expect_err("bad key");
        assert!(e.contains("master_key"), "{e}");
        let e = with_env(&[("REGISTER__DATABASE_URL", "mysql://x")]).expect_err("bad url");
        assert!(e.contains("register.database_url"), "{e}");
        let e = with_env(&[("LOG_FORMAT", "xml")]).expect_err("bad format");
        assert!(e.contains("log_format"), "{e}");
        let e = with_env(&[("REGISTER__MAX_CONNECTIONS", "lots")]).expect_err("bad number");
        assert!(e.contains("register.max_connections"), "{e}");
        let e = with_env(&[("PEERS__KPI", "http://a:1,ftp://b:2")]).expect_err("bad peer");
        assert!(e.contains("peers.kpi"), "{e}");
        let e = with_env(&[("PEERS__KPI", "http://a:1,")]).expect_err("empty peer");
        assert!(e.contains("peers.kpi"), "{e}");
        let e = with_env(&[("HUB__DASHBOARD_CACHE_MS", "60001")]).expect_err("too long");
        assert!(e.contains("hub.dashboard_cache_ms"), "{e}");
        let e = with_env(&[("HUB__DASHBOARD_CACHE_MS", "-1")]).expect_err("negative");
        assert!(e.contains("dashboard_cache_ms"), "{e}");
        for (given, kept) in [("0", 0), ("60000", 60_000)] {
            let s = with_env(&[("HUB__DASHBOARD_CACHE_MS", given)]).expect("in range");
            assert_eq!(s.hub.dashboard_cache_ms, kept);
        }
        assert_eq!(
            with_env(&[]).expect("defaults").hub.dashboard_cache_ms,
            1000
        );
        let ok = with_env(&[("PEERS__KPI", "http://10.0.0.5:1, http://kpi-pods:50054")])
            .expect("replicas listed");
        assert_eq!(ok.peers.kpi, "http://10.0.0.5:1, http://kpi-pods:50054");
    }

    #[test]
    fn pooler_and_tls_settings_are_checked() {
        let pg = "postgres://app@pooler:5432/register";
        let direct = "postgres://owner@db:5432/register";
        let e = with_env(&[("REGISTER__DATABASE_POOLER", "statement")]).expect_err("bad mode");
        assert!(e.contains("register.database_pooler"), "{e}");
        let e = with_env(&[("REGISTER__DATABASE_POOLER", "transaction")])
            .expect_err("SQLite through a pooler");
        assert!(e.contains("register.database_pooler"), "{e}");
        let e = with_env(&[
            ("COMPLAINTS__DATABASE_POOLER", "transaction"),
            ("COMPLAINTS__DATABASE_URL", pg),
        ])
        .expect_err("no direct URL to migrate with");
        assert!(
            e.contains("complaints.database_pooler") && e.contains("migration_url"),
            "{e}"
        );
        let s = with_env(&[
            ("KPI__DATABASE_POOLER", "transaction"),
            ("KPI__DATABASE_URL", pg),
            ("KPI__MIGRATION_URL", direct),
        ])
        .expect("pooled");
        assert_eq!(s.kpi.database_pooler, crate::db::Pooler::Transaction);

        let dir = tempfile::tempdir().expect("temporary directory");
        let ca = dir.path().join("ca.crt");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n",
        )
        .expect("write");
        let tls = format!("{direct}?sslmode=verify-full&sslrootcert={}", ca.display());
        with_env(&[("REGISTER__DATABASE_URL", &tls)]).expect("verify-full with a CA file");
        let e = with_env(&[(
            "REGISTER__DATABASE_URL",
            &format!("{direct}?sslmode=verify"),
        )])
        .expect_err("unknown sslmode");
        assert!(
            e.contains("register.database_url") && e.contains("verify-full"),
            "{e}"
        );
        let missing = format!("{direct}?sslmode=verify-full&sslrootcert=/nonexistent/ca.crt");
        let e = with_env(&[("FEEDBACK__MIGRATION_URL", &missing)]).expect_err("missing CA");
        assert!(
            e.contains("feedback.migration_url") && e.contains("sslrootcert"),
            "{e}"
        );

        let e = with_env(&[("OTLP_CA_FILE", &ca.display().to_string())])
            .expect_err("a CA without an endpoint");
        assert!(e.contains("otlp_ca_file"), "{e}");
        with_env(&[
            ("OTLP_ENDPOINT", "https://collector:4317"),
            ("OTLP_CA_FILE", &ca.display().to_string()),
        ])
        .expect("TLS to the collector");
        let e = with_env(&[
            ("OTLP_ENDPOINT", "https://collector:4317"),
            ("OTLP_CA_FILE", "/nonexistent/ca.pem"),
        ])
        .expect_err("missing CA file");
        assert!(e.contains("otlp_ca_file"), "{e}");
        assert_eq!(percent_decode("%2Fetc%2Fca.crt"), "/etc/ca.crt");
    }

    #[test]
    fn files_are_read_and_checked() {
        Jail::expect_with(|jail| {
            let e = Settings::load(Some(Path::new("/nonexistent/touchstone.toml")))
                .expect_err("missing file");
            assert!(e.to_string().contains("config"), "{e}");
            jail.create_file(
                "t.toml",
                "log_level = \"debug\"\n[register]\nmax_connections = 3\n",
            )?;
            let s = Settings::load(Some(Path::new("t.toml"))).expect("load");
            assert_eq!(s.log_level, "debug");
            assert_eq!(s.register.max_connections, 3);
            jail.set_env("TOUCHSTONE_REGISTER__MAX_CONNECTIONS", "5");
            let s = Settings::load(Some(Path::new("t.toml"))).expect("load");
            assert_eq!(s.register.max_connections, 5, "environment beats the file");
            jail.create_file("typo.toml", "[register]\nmax_connectoins = 3\n")?;
            let e = Settings::load(Some(Path::new("typo.toml"))).expect_err("typo");
            assert!(e.to_string().contains("max_connectoins"), "{e}");
            Ok(())
        });
    }
}
