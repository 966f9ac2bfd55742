//! What every `touchstone … import FILE.csv` command shares: reading a CSV
//! file with a header row, sending one request per row through a service's
//! public API with a few in flight at once, a progress bar, and a report of
//! the rows that failed (row number, field, message) beside the file.

use anyhow::{Context, bail};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic_types::StatusExt;
use touchstone_auth::{DevKey, Role, TokenRequest};
use touchstone_platform::config::Settings;

/// One problem with one row.
#[derive(Debug)]
pub(crate) struct RowError {
    /// Line number in the file (the header is line 1).
    pub(crate) row: usize,
    /// Column or request field, or empty.
    pub(crate) field: String,
    /// What is wrong.
    pub(crate) message: String,
}

impl RowError {
    pub(crate) fn new(row: usize, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            row,
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The report path used when none is given: `FILE.errors.csv`.
pub(crate) fn default_report(file: &Path) -> PathBuf {
    let mut p = file.to_path_buf().into_os_string();
    p.push(".errors.csv");
    PathBuf::from(p)
}

/// The rows' errors a failed call reports: one per field violation, with
/// `prefix` (e.g. "client.") taken off the field names.
pub(crate) fn status_errors(row: usize, status: &tonic::Status, prefix: &str) -> Vec<RowError> {
    let details = status.get_error_details();
    match details.bad_request() {
        Some(bad) if !bad.field_violations.is_empty() => bad
            .field_violations
            .iter()
            .map(|v| {
                RowError::new(
                    row,
                    v.field.trim_start_matches(prefix),
                    v.description.clone(),
                )
            })
            .collect(),
        _ => vec![RowError::new(
            row,
            "",
            format!("{:?}: {}", status.code(), status.message()),
        )],
    }
}

/// The bearer header: `token` if given, else one minted for `agency` with
/// the local development key.
pub(crate) fn bearer(
    token: Option<&str>,
    agency: &str,
    settings: &Settings,
    roles: Vec<Role>,
) -> anyhow::Result<MetadataValue<Ascii>> {
    let token = match token {
        Some(t) => t.to_string(),
        None => {
            if !settings.data_dir.join("dev-signing-key.pem").exists() {
                bail!(
                    "pass --token (or set TOUCHSTONE_TOKEN): no development key in {}",
                    settings.data_dir.display()
                );
            }
            let key = DevKey::load_or_create(&settings.data_dir)?;
            key.mint(&TokenRequest {
                subject: "touchstone-cli".into(),
                agency: Some(agency.to_string()),
                agencies: None,
                roles,
                ttl: Duration::from_secs(3600),
                issuer: settings.auth.issuer.clone(),
                audience: settings.auth.audience.clone(),
            })?
        }
    };
    format!("Bearer {token}")
        .parse()
        .context("the token is not valid header text")
}

/// A request with the bearer header and a 30-second deadline.
pub(crate) fn authorized<T>(message: T, bearer: &MetadataValue<Ascii>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut().insert("authorization", bearer.clone());
    req.set_timeout(Duration::from_secs(30));
    req
}

/// A channel to a service, connected now so a wrong address fails at once.
pub(crate) async fn connect(addr: &str, what: &str) -> anyhow::Result<tonic::transport::Channel> {
    tonic::transport::Channel::from_shared(addr.to_string())
        .context("--addr is not a URL")?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connecting to the {what} at {addr}"))
}

/// Imports `file`: checks its header against `columns`, calls `send` for
/// each row (its line number and its cells by column) with `concurrency`
/// rows in flight, and writes the failed rows to `report` (removing an old
/// report when every row succeeded). `what` names the rows, e.g. "clients".
pub(crate) async fn import<F, Fut>(
    file: &Path,
    columns: &[&str],
    what: &str,
    concurrency: usize,
    report: &Path,
    send: F,
) -> anyhow::Result<()>
where
    F: Fn(usize, HashMap<String, String>) -> Fut,
    Fut: Future<Output = Result<(), Vec<RowError>>>,
{
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_path(file)
        .with_context(|| format!("opening {}", file.display()))?;
    let headers = reader.headers()?.clone();
    for h in headers.iter() {
        if !columns.contains(&h) {
            bail!(
                "{}: unknown column {h:?}; expected some of: {}",
                file.display(),
                columns.join(", ")
            );
        }
    }
    let records: Vec<(usize, Result<csv::StringRecord, csv::Error>)> = reader
        .records()
        .enumerate()
        .map(|(i, r)| (i + 2, r))
        .collect();
    let bar = ProgressBar::new(records.len() as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} importing [{bar:40}] {pos}/{len} rows, {per_sec}, eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let send = &send;
    let headers = &headers;
    let results = futures::stream::iter(records.into_iter().map(|(line, record)| async move {
        let record =
            record.map_err(|e| vec![RowError::new(line, "", format!("unreadable row: {e}"))])?;
        let row: HashMap<String, String> = headers
            .iter()
            .zip(record.iter())
            .map(|(h, v)| (h.to_string(), v.to_string()))
            .collect();
        send(line, row).await
    }))
    .buffer_unordered(concurrency.max(1));
    futures::pin_mut!(results);
    let mut failures: Vec<RowError> = Vec::new();
    let mut imported = 0usize;
    while let Some(result) = results.next().await {
        match result {
            Ok(()) => imported += 1,
            Err(errs) => failures.extend(errs),
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    failures.sort_by_key(|f| f.row);
    let failed_rows = {
        let mut rows: Vec<usize> = failures.iter().map(|f| f.row).collect();
        rows.dedup();
        rows.len()
    };
    if failures.is_empty() {
        match std::fs::remove_file(report) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!("could not remove the old report {}: {e}", report.display()),
        }
        println!("imported {imported} {what} from {}", file.display());
        return Ok(());
    }
    let mut w =
        csv::Writer::from_path(report).with_context(|| format!("writing {}", report.display()))?;
    w.write_record(["row", "field", "error"])?;
    for f in &failures {
        w.write_record([f.row.to_string(), f.field.clone(), f.message.clone()])?;
    }
    w.flush()?;
    println!(
        "imported {imported} {what}; {failed_rows} rows failed and were not imported (see {})",
        report.display()
    );
    bail!("{failed_rows} rows failed")
}
