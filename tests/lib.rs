//! Helpers for the end-to-end tests: find (or build) the real `touchstone`
//! binary, run it with its own data directory and port, talk to it, and make
//! sure no child process outlives a test, even one that panics or times out.

use std::ffi::OsString;
use std::future::Future;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Channel;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// The agency `touchstone up` mints its banner token for.
pub const AGENCY: &str = "demo";

/// The full gRPC name of the register service.
pub const REGISTER_SERVICE: &str = "touchstone.register.v1.RegisterService";

/// How long a short command (`token`, `migrate`, `clients …`) may run.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// The services `up` runs besides the register, by their setting names.
pub const OTHER_SERVICES: &[&str] = &["complaints", "feedback", "kpi", "gateway"];

/// How long `touchstone up` may take to report SERVING.
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(50);

/// Names a `touchstone` binary to test instead of the one in the target
/// directory (e.g. a release build or an installed copy).
pub const BIN_ENV: &str = "E2E_TOUCHSTONE_BIN";

/// The `touchstone` binary next to this test executable (target/<profile>/),
/// brought up to date with `cargo build -p touchstone` first, or the one
/// named by `E2E_TOUCHSTONE_BIN`. Panics with instructions when it cannot be
/// found or built.
///
/// Blocks (possibly for a build); call it before starting timed work.
pub fn touchstone_bin() -> &'static Path {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match BIN.get_or_init(locate_or_build) {
        Ok(path) => path,
        Err(message) => panic!("{message}"),
    }
}

fn locate_or_build() -> Result<PathBuf, String> {
    if let Some(bin) = std::env::var_os(BIN_ENV).filter(|v| !v.is_empty()) {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(format!("{BIN_ENV}={} is not a file", bin.display()))
        };
    }
    let exe = std::env::current_exe()
        .map_err(|e| format!("cannot find the test executable to locate `touchstone`: {e}"))?;
    // target/<profile>/deps/e2e-xxxx → target/<profile>/touchstone
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("unexpected test executable path {}", exe.display()))?;
    let bin = profile_dir.join(format!("touchstone{}", std::env::consts::EXE_SUFFIX));
    // Always ask cargo: a binary left by an earlier build would test old code
    // (`cargo test` does not rebuild the binary of a package without
    // integration tests); when it is up to date this costs a moment.
    let how = "build it with `cargo build -p touchstone` (same profile and --target as the \
               tests) and name it in E2E_TOUCHSTONE_BIN";
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut build = Command::new(&cargo);
    build
        .args(["build", "--quiet", "-p", "touchstone", "--manifest-path"])
        .arg(&manifest);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            build.arg("--release");
        }
        Some(other) => {
            build.args(["--profile", other]);
        }
    }
    let status = build.stdin(Stdio::null()).status().map_err(|e| {
        format!("running cargo to build the `touchstone` binary failed ({e}); {how}")
    })?;
    if !status.success() {
        return Err(format!(
            "`cargo build -p touchstone` failed ({status}); {how}"
        ));
    }
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "`cargo build -p touchstone` succeeded but {} still does not exist; {how}",
            bin.display()
        ))
    }
}

/// A `touchstone` command with a clean configuration: every inherited
/// `TOUCHSTONE_*` variable removed, the data directory set, JSON logs.
pub fn touchstone(data_dir: &Path) -> Command {
    let mut cmd = Command::new(touchstone_bin());
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("TOUCHSTONE_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("TOUCHSTONE_DATA_DIR", data_dir)
        .env("TOUCHSTONE_LOG_FORMAT", "json")
        .current_dir(data_dir)
        .stdin(Stdio::null());
    cmd
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// Runs `fut`, panicking if it takes longer than `limit`. Child processes
/// owned by the future are killed when it is dropped.
pub async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("{what}: did not finish within {limit:?}"),
    }
}

type Captured = Arc<Mutex<Vec<u8>>>;

fn capture(mut from: impl Read + Send + 'static, into: Captured) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => into
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend_from_slice(&buf[..n]),
            }
        }
    })
}

fn text(captured: &Captured) -> String {
    String::from_utf8_lossy(&captured.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// A child process whose output is captured; killed when dropped while it
/// still runs.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    what: String,
    status: Option<ExitStatus>,
    stdout: Captured,
    stderr: Captured,
    readers: Vec<JoinHandle<()>>,
}

impl Proc {
    /// Starts `cmd` with stdout and stderr captured.
    pub fn spawn(mut cmd: Command) -> Proc {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {what}: {e}"));
        let stdout = Captured::default();
        let stderr = Captured::default();
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(capture(out, stdout.clone()));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(capture(err, stderr.clone()));
        }
        Proc {
            child,
            what,
            status: None,
            stdout,
            stderr,
            readers,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Standard output so far.
    pub fn stdout(&self) -> String {
        text(&self.stdout)
    }

    /// Standard error so far.
    pub fn stderr(&self) -> String {
        text(&self.stderr)
    }

    /// Both outputs, for failure messages.
    pub fn output_report(&self) -> String {
        format!(
            "command: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.what,
            self.stdout(),
            self.stderr()
        )
    }

    /// The exit status, if the process has exited.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().expect("polling a child process");
        }
        self.status
    }

    /// Waits up to `limit` for the process to exit and its output to be
    /// read; `None` if it is still running.
    pub async fn wait(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.try_status() {
                break status;
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        };
        // The pipes close when the process exits; give the readers a moment.
        let drained = Instant::now() + Duration::from_secs(5);
        while self.readers.iter().any(|r| !r.is_finished()) && Instant::now() < drained {
            tokio::time::sleep(POLL).await;
        }
        Some(status)
    }

    /// Waits until stdout satisfies `ready`; panics if the process exits
    /// first or `limit` passes.
    pub async fn wait_for_stdout(&mut self, limit: Duration, ready: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + limit;
        loop {
            if ready(&self.stdout()) {
                return;
            }
            if let Some(status) = self.try_status() {
                // Read what is left before judging.
                self.wait(Duration::from_secs(5)).await;
                if ready(&self.stdout()) {
                    return;
                }
                panic!(
                    "process exited ({status}) before the expected output\n{}",
                    self.output_report()
                );
            }
            assert!(
                Instant::now() < deadline,
                "the expected output did not appear within {limit:?}\n{}",
                self.output_report()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Kills the process with SIGKILL (a crash: nothing is flushed or
    /// closed) and waits for it to be gone.
    pub async fn kill9(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
        }
        let status = self.wait(COMMAND_TIMEOUT).await;
        assert!(status.is_some(), "the process outlived SIGKILL");
    }

    /// Sends SIGTERM (through the `kill` command).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .stdin(Stdio::null())
            .status()
            .expect("running `kill -TERM`");
        assert!(
            status.success(),
            "`kill -TERM {}` failed: {status}",
            self.pid()
        );
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.try_status().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a finished command left behind.
#[derive(Debug)]
pub struct Finished {
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// The command and both outputs, for failure messages.
    pub report: String,
}

/// Runs `cmd` to completion; panics (after killing it) if it takes longer
/// than `limit`.
pub async fn run(cmd: Command, limit: Duration) -> Finished {
    let mut proc = Proc::spawn(cmd);
    let Some(status) = proc.wait(limit).await else {
        panic!(
            "command did not finish within {limit:?}\n{}",
            proc.output_report()
        );
    };
    Finished {
        status,
        stdout: proc.stdout(),
        stderr: proc.stderr(),
        report: format!("status: {status}\n{}", proc.output_report()),
    }
}

/// Runs `cmd` and panics unless it succeeds.
pub async fn run_ok(cmd: Command) -> Finished {
    let done = run(cmd, COMMAND_TIMEOUT).await;
    assert!(done.status.success(), "command failed\n{}", done.report);
    done
}

/// A running `touchstone up`.
#[derive(Debug)]
pub struct Up {
    /// The process.
    pub proc: Proc,
    /// Its register port on 127.0.0.1.
    pub port: u16,
    /// The other services' ports, by setting name.
    pub ports: Vec<(&'static str, u16)>,
    /// The gateway's web dashboard and JSON API (plain HTTP).
    pub http: u16,
}

impl Up {
    /// Starts `touchstone up` on a free port with `data_dir`, and waits until
    /// health reports SERVING for the server and the register.
    pub async fn start(data_dir: &Path) -> Up {
        Up::start_with(data_dir, &[]).await
    }

    /// [`Up::start`] with extra environment variables (settings).
    pub async fn start_with(data_dir: &Path, vars: &[(String, String)]) -> Up {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let port = free_port();
            let mut ports = Vec::new();
            let mut cmd = touchstone(data_dir);
            cmd.envs(vars.iter().map(|(k, v)| (k, v)));
            cmd.arg("up")
                .env("TOUCHSTONE_REGISTER__LISTEN", format!("127.0.0.1:{port}"))
                .env(
                    "TOUCHSTONE_PEERS__REGISTER",
                    format!("http://127.0.0.1:{port}"),
                );
            // Every other service on a port of its own too, so that tests
            // running side by side never meet on the defaults.
            for service in OTHER_SERVICES {
                let p = free_port();
                ports.push((*service, p));
                let upper = service.to_ascii_uppercase();
                cmd.env(
                    format!("TOUCHSTONE_{upper}__LISTEN"),
                    format!("127.0.0.1:{p}"),
                )
                .env(
                    format!("TOUCHSTONE_PEERS__{upper}"),
                    format!("http://127.0.0.1:{p}"),
                );
            }
            // The gateway's web dashboard, likewise.
            let http = free_port();
            cmd.env("TOUCHSTONE_HUB__HTTP_LISTEN", format!("127.0.0.1:{http}"));
            let mut up = Up {
                proc: Proc::spawn(cmd),
                port,
                ports,
                http,
            };
            match up.wait_serving().await {
                Ok(()) => return up,
                // Someone else took the port between our probe and the bind.
                Err(report) if attempts < 3 && report.contains(".listen") => continue,
                Err(report) => panic!("`touchstone up` did not become ready: {report}"),
            }
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A fresh channel to the server.
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.url())
            .expect("a valid URL")
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", self.url()))
    }

    async fn wait_serving(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            if let Some(status) = self.proc.try_status() {
                self.proc.wait(Duration::from_secs(5)).await;
                return Err(format!(
                    "exited ({status}) before SERVING\n{}",
                    self.proc.output_report()
                ));
            }
            let last = match self.health().await {
                Ok(statuses) if statuses.iter().all(|s| *s == ServingStatus::Serving) => {
                    match self.others_serving().await {
                        Ok(()) => return Ok(()),
                        Err(e) => e,
                    }
                }
                Ok(statuses) => format!("health: {statuses:?}"),
                Err(e) => e,
            };
            if Instant::now() >= deadline {
                return Err(format!(
                    "not SERVING within {STARTUP_TIMEOUT:?} (last: {last})\n{}",
                    self.proc.output_report()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The port of another service, by setting name (e.g. "complaints").
    pub fn port_of(&self, service: &str) -> u16 {
        self.ports
            .iter()
            .find(|(s, _)| *s == service)
            .map(|(_, p)| *p)
            .unwrap_or_else(|| panic!("no port for {service}"))
    }

    /// Whether every other service's server reports SERVING.
    async fn others_serving(&self) -> Result<(), String> {
        for (service, port) in &self.ports {
            let channel = Channel::from_shared(format!("http://127.0.0.1:{port}"))
                .map_err(|e| e.to_string())?
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(2))
                .connect()
                .await
                .map_err(|e| format!("{service}: connect: {e}"))?;
            let status = HealthClient::new(channel)
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .map_err(|s| format!("{service}: {:?}", s.code()))?
                .into_inner()
                .status;
            if status != ServingStatus::Serving as i32 {
                return Err(format!("{service}: not SERVING"));
            }
        }
        Ok(())
    }

    /// grpc.health.v1 Check for the server ("") and the register.
    pub async fn health(&self) -> Result<Vec<ServingStatus>, String> {
        let channel = Channel::from_shared(self.url())
            .map_err(|e| e.to_string())?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(2))
            .connect()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut client = HealthClient::new(channel);
        let mut out = Vec::new();
        for service in ["", REGISTER_SERVICE] {
            let resp = client
                .check(HealthCheckRequest {
                    service: service.into(),
                })
                .await
                .map_err(|s| format!("Check({service:?}): {:?}: {}", s.code(), s.message()))?;
            out.push(
                ServingStatus::try_from(resp.into_inner().status).unwrap_or(ServingStatus::Unknown),
            );
        }
        Ok(out)
    }
}

/// `GET <path>` over plain HTTP/1.1 on 127.0.0.1:`port`: the status line and
/// the (de-chunked) body.
pub async fn http_get(port: u16, path: &str) -> (String, String) {
    http_request(port, "GET", path, &[], "").await
}

/// `method path` over plain HTTP/1.1 on 127.0.0.1:`port` with extra
/// `headers` and `body` (sent with its length): the status line and the
/// (de-chunked) body.
pub async fn http_request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connecting for HTTP");
    let mut request =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method != "GET" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream
        .write_all(request.as_bytes())
        .await
        .expect("writing the HTTP request");
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .expect("reading the HTTP response");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("not an HTTP response: {raw:?}"));
    let status = head.lines().next().unwrap_or_default().to_string();
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = size.split(';').next().unwrap_or_default().trim();
        let Ok(n) = usize::from_str_radix(size, 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        out.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::dechunk;

    #[test]
    fn dechunks() {
        assert_eq!(
            dechunk("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "hello world"
        );
    }
}
