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
    /// The service refused the caller, not the row (no role for this, or
    /// another agency's token): no other row would do better.
    pub(crate) denied: bool,
}

/// What became of a row that went through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Imported {
    /// Created by this run.
    New,
    /// There from an earlier run (the same row's request id, or created
    /// before this run started).
    AlreadyPresent,
}

impl Imported {
    /// New unless the stored resource was created before `started`.
    pub(crate) fn since(
        create_time: Option<&prost_types::Timestamp>,
        started: std::time::SystemTime,
    ) -> Imported {
        // Whole nanoseconds: a re-run within the same second as the first
        // run must still tell the first run's rows from its own.
        let started = started
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| (d.as_secs() as i64, d.subsec_nanos() as i32))
            .unwrap_or((0, 0));
        match create_time {
            Some(t) if (t.seconds, t.nanos) < started => Imported::AlreadyPresent,
            _ => Imported::New,
        }
    }
}

impl RowError {
    pub(crate) fn new(row: usize, field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            row,
            field: field.into(),
            message: message.into(),
            denied: false,
        }
    }
}

/// A time as RFC 3339 in UTC (`2026-07-01T09:30:00Z`), as every export
/// writes times; empty when out of range.
pub(crate) fn rfc3339(t: &prost_types::Timestamp) -> String {
    let nanos = i128::from(t.seconds) * 1_000_000_000 + i128::from(t.nanos);
    time::OffsetDateTime::from_unix_timestamp_nanos(nanos)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

/// A rate for people: whole units with thousands separators, `2,300/s`.
pub(crate) fn rate(per_second: f64) -> String {
    if !per_second.is_finite() || per_second < 0.0 {
        return "-/s".to_string();
    }
    let whole = per_second.round() as u64;
    let digits = whole.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    format!("{out}/s")
}

/// A progress bar for rows: position, length, rate as [`rate`] gives it.
pub(crate) fn rows_bar(len: u64, verb: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "{{spinner}} {verb} [{{bar:40}}] {{pos}}/{{len}} rows, {{rate}}, eta {{eta}}"
        ))
        .map(|s| {
            s.with_key(
                "rate",
                |state: &indicatif::ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = w.write_str(&rate(state.per_sec()));
                },
            )
        })
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

/// The report path used when none is given: `FILE.errors.csv`.
pub(crate) fn default_report(file: &Path) -> PathBuf {
    let mut p = file.to_path_buf().into_os_string();
    p.push(".errors.csv");
    PathBuf::from(p)
}

/// The rows' errors a failed call reports: one per field violation, named
/// by the CSV column that `column` finds for the request field (the report
/// is read beside the file, not beside the API).
pub(crate) fn status_errors(
    row: usize,
    status: &tonic::Status,
    column: &dyn Fn(&str) -> String,
) -> Vec<RowError> {
    if matches!(
        status.code(),
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated
    ) {
        let mut e = RowError::new(row, "", status.message().to_string());
        e.denied = true;
        return vec![e];
    }
    let details = status.get_error_details();
    match details.bad_request() {
        Some(bad) if !bad.field_violations.is_empty() => bad
            .field_violations
            .iter()
            .map(|v| RowError::new(row, column(&v.field), v.description.clone()))
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
/// Of a peer setting that lists several replicas, the first.
pub(crate) async fn connect(addr: &str, what: &str) -> anyhow::Result<tonic::transport::Channel> {
    let addr = addr.split(',').next().unwrap_or(addr).trim();
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
/// The first row goes alone: a token the service refuses (no role for
/// this, another agency) stops the import there with one message, rather
/// than failing every row.
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
    Fut: Future<Output = Result<Imported, Vec<RowError>>>,
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
    let bar = rows_bar(records.len() as u64, "importing");
    let send = &send;
    let headers = &headers;
    let one = |(line, record): (usize, Result<csv::StringRecord, csv::Error>)| async move {
        let record =
            record.map_err(|e| vec![RowError::new(line, "", format!("unreadable row: {e}"))])?;
        let row: HashMap<String, String> = headers
            .iter()
            .zip(record.iter())
            .map(|(h, v)| (h.to_string(), v.to_string()))
            .collect();
        send(line, row).await
    };
    let mut records = records.into_iter();
    let mut failures: Vec<RowError> = Vec::new();
    let (mut new, mut present) = (0usize, 0usize);
    let mut tally = |result: Result<Imported, Vec<RowError>>| match result {
        Ok(Imported::New) => new += 1,
        Ok(Imported::AlreadyPresent) => present += 1,
        Err(errs) => failures.extend(errs),
    };
    if let Some(first) = records.next() {
        let result = one(first).await;
        if let Err(errs) = &result
            && let Some(denied) = errs.iter().find(|e| e.denied)
        {
            bar.finish_and_clear();
            bail!(
                "the service refused this token, so no {what} were imported: {}. \
                 The token needs a role that may import {what} and must be for the agency imported into \
                 (mint one with `touchstone token --agency AGENCY --role ROLE`, see docs/cli.md)",
                denied.message
            );
        }
        tally(result);
        bar.inc(1);
    }
    let results = futures::stream::iter(records.map(one)).buffer_unordered(concurrency.max(1));
    futures::pin_mut!(results);
    while let Some(result) = results.next().await {
        tally(result);
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
        println!(
            "imported {what} from {}: {new} new, {present} already present",
            file.display()
        );
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
        "imported {what} from {}: {new} new, {present} already present; {failed_rows} rows failed and were not imported (see {})",
        file.display(),
        report.display()
    );
    bail!("{failed_rows} rows failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_made_earlier_in_the_same_second_was_already_present() {
        let started = std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_500);
        let at = |seconds, nanos| prost_types::Timestamp { seconds, nanos };
        let earlier = at(1_700_000_000, 200_000_000);
        let later = at(1_700_000_000, 900_000_000);
        assert_eq!(
            Imported::since(Some(&earlier), started),
            Imported::AlreadyPresent
        );
        assert_eq!(Imported::since(Some(&later), started), Imported::New);
        assert_eq!(Imported::since(None, started), Imported::New);
    }

    #[test]
    fn rates_read_as_people_write_them() {
        assert_eq!(rate(2_300.4), "2,300/s");
        assert_eq!(rate(999.6), "1,000/s");
        assert_eq!(rate(12.0), "12/s");
        assert_eq!(rate(1_234_567.0), "1,234,567/s");
        assert_eq!(rate(0.0), "0/s");
        assert_eq!(rate(f64::NAN), "-/s");
    }

    #[test]
    fn export_times_are_rfc3339() {
        let t = prost_types::Timestamp {
            seconds: 1_782_898_200,
            nanos: 0,
        };
        assert_eq!(rfc3339(&t), "2026-07-01T09:30:00Z");
        let t = prost_types::Timestamp {
            seconds: 1_782_898_200,
            nanos: 500_000_000,
        };
        assert_eq!(rfc3339(&t), "2026-07-01T09:30:00.5Z");
    }
}
