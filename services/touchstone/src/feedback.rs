//! `touchstone feedback import|export`: survey responses in from a CSV file
//! through `ImportResponses` (one client stream, a result per row), and the
//! quarterly A-11 CX data file out through `GetA11Report`. Both go through
//! the public gRPC API, so every rule applies as for any other caller.

use crate::csv_import::{self, RowError};
use anyhow::{Context, bail};
use clap::Subcommand;
use indicatif::ProgressBar;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use touchstone_api::common::v1::Channel as Via;
use touchstone_api::feedback::v1 as pb;
use touchstone_api::feedback::v1::feedback_service_client::FeedbackServiceClient;
use touchstone_auth::Role;
use touchstone_platform::config::Settings;

/// Rows sent per ImportResponses stream (the service takes at most 100 000).
const ROWS_PER_STREAM: usize = 20_000;

/// Feedback import and export.
#[derive(Debug, Subcommand)]
pub(crate) enum FeedbackCommand {
    /// Import survey responses from a CSV file (columns in docs/feedback.md).
    /// Re-running the same file stores nothing twice.
    Import {
        /// The CSV file, with a header row.
        file: PathBuf,
        /// The survey: agencies/{agency}/surveys/{survey}.
        #[arg(long)]
        survey: String,
        /// The feedback service's address; default: setting peers.feedback.
        #[arg(long)]
        addr: Option<String>,
        /// Bearer token (officer); by default one is minted with the local development key.
        #[arg(long, env = "TOUCHSTONE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Where to write the per-row error report (default FILE.errors.csv).
        #[arg(long)]
        errors: Option<PathBuf>,
    },
    /// Export an agency's quarterly A-11 CX data as the two CSV files
    /// Touchpoints takes: the CX collection summary and the per-response upload.
    Export {
        /// The A-11 files (the only export so far).
        #[arg(long, required = true)]
        a11: bool,
        /// Calendar quarter (2026Q3 or 2026-Q3) or federal fiscal quarter
        /// (FY2027Q1 = October to December 2026).
        #[arg(long)]
        quarter: String,
        /// The agency.
        #[arg(long)]
        agency: String,
        /// The feedback service's address; default: setting peers.feedback.
        #[arg(long)]
        addr: Option<String>,
        /// Bearer token (analyst); by default one is minted with the local development key.
        #[arg(long, env = "TOUCHSTONE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// The CX collection summary file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The per-response upload file; not written unless given.
        #[arg(long)]
        responses: Option<PathBuf>,
    },
}

/// Columns that are not question keys.
pub(crate) const FIXED_COLUMNS: &[&str] = &[
    "row_id",
    "transaction_id",
    "channel",
    "unit",
    "submit_time",
    "client",
    "contact_agreed",
];

/// Runs a feedback command.
pub(crate) async fn run(cmd: FeedbackCommand, settings: &Settings) -> anyhow::Result<()> {
    match cmd {
        FeedbackCommand::Import {
            file,
            survey,
            addr,
            token,
            errors,
        } => {
            let errors = errors.unwrap_or_else(|| csv_import::default_report(&file));
            let agency = survey_agency(&survey)?;
            let bearer =
                csv_import::bearer(token.as_deref(), &agency, settings, vec![Role::Officer])?;
            let addr = addr.unwrap_or_else(|| settings.peers.feedback.clone());
            import(&file, &survey, &addr, &bearer, &errors).await
        }
        FeedbackCommand::Export {
            a11: _,
            quarter,
            agency,
            addr,
            token,
            out,
            responses,
        } => {
            let bearer =
                csv_import::bearer(token.as_deref(), &agency, settings, vec![Role::Analyst])?;
            let addr = addr.unwrap_or_else(|| settings.peers.feedback.clone());
            let files = (out.as_deref(), responses.as_deref());
            export_a11(&agency, &quarter, &addr, &bearer, files).await
        }
    }
}

fn survey_agency(survey: &str) -> anyhow::Result<String> {
    match survey.split('/').collect::<Vec<_>>()[..] {
        ["agencies", agency, "surveys", _] => Ok(agency.to_string()),
        _ => bail!("--survey must have the form agencies/{{agency}}/surveys/{{survey}}"),
    }
}

async fn connect(addr: &str) -> anyhow::Result<FeedbackServiceClient<Channel>> {
    let channel = csv_import::connect(addr, "feedback service").await?;
    Ok(FeedbackServiceClient::new(channel).max_decoding_message_size(64 << 20))
}

/// A request with the bearer header and no deadline: an import stream takes
/// as long as its rows do.
fn authorized<T>(message: T, bearer: &MetadataValue<tonic::metadata::Ascii>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.metadata_mut().insert("authorization", bearer.clone());
    req
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "y" | "true" | "1" => Some(true),
        "no" | "n" | "false" | "0" => Some(false),
        _ => None,
    }
}

/// Turns one CSV record into an import row, or the errors of its cells.
/// Question columns are read by the kind of their question.
pub(crate) fn parse_row(
    survey: &pb::Survey,
    row: &HashMap<&str, &str>,
    default_row_id: &str,
) -> Result<pb::ImportResponsesRequest, Vec<(String, String)>> {
    use pb::QuestionKind as K;
    let mut bad = Vec::new();
    let cell = |c: &str| row.get(c).map_or("", |v| v.trim());
    let mut response = pb::Response {
        transaction_id: cell("transaction_id").to_string(),
        unit: cell("unit").to_string(),
        ..Default::default()
    };
    let channel = cell("channel");
    if !channel.is_empty() {
        let name = format!(
            "CHANNEL_{}",
            channel.to_ascii_uppercase().replace([' ', '-'], "_")
        );
        match Via::from_str_name(&name) {
            Some(c) => response.channel = c as i32,
            None => bad.push(("channel".into(), "not a known channel".into())),
        }
    }
    let submitted = cell("submit_time");
    if !submitted.is_empty() {
        match time::OffsetDateTime::parse(submitted, &time::format_description::well_known::Rfc3339)
        {
            Ok(t) => {
                response.submit_time = Some(prost_types::Timestamp {
                    seconds: t.unix_timestamp(),
                    nanos: t.nanosecond() as i32,
                })
            }
            Err(_) => bad.push((
                "submit_time".into(),
                "an RFC 3339 time, e.g. 2026-07-01T09:30:00Z".into(),
            )),
        }
    }
    let client = cell("client");
    if !client.is_empty() {
        response.client = if client.starts_with("agencies/") {
            client.to_string()
        } else {
            format!(
                "{}/clients/{client}",
                survey.name.split("/surveys/").next().unwrap_or("")
            )
        };
    }
    let contact = cell("contact_agreed");
    if !contact.is_empty() {
        match parse_bool(contact) {
            Some(b) => response.contact_agreed = b,
            None => bad.push(("contact_agreed".into(), "yes or no".into())),
        }
    }
    for q in &survey.questions {
        let value = cell(&q.key);
        if value.is_empty() {
            continue;
        }
        let mut answer = pb::Answer {
            question_key: q.key.clone(),
            ..Default::default()
        };
        match K::try_from(q.kind).unwrap_or(K::Unspecified) {
            K::Agreement5 | K::Satisfaction5 | K::Likelihood11 | K::Effort7 => {
                match value.parse::<i32>() {
                    Ok(s) => answer.score = Some(s),
                    Err(_) => bad.push((
                        q.key.clone(),
                        "a whole number on the question's scale".into(),
                    )),
                }
            }
            K::YesNo => match parse_bool(value) {
                Some(b) => answer.yes = Some(b),
                None => bad.push((q.key.clone(), "yes or no".into())),
            },
            K::SingleChoice | K::MultipleChoice => {
                answer.choices = value
                    .split([';', '|'])
                    .map(|c| c.trim().to_string())
                    .filter(|c| !c.is_empty())
                    .collect();
            }
            K::FreeText | K::Unspecified => answer.text = value.to_string(),
        }
        response.answers.push(answer);
    }
    if !bad.is_empty() {
        return Err(bad);
    }
    let row_id = match cell("row_id") {
        "" if response.transaction_id.is_empty() => default_row_id.to_string(),
        id => id.to_string(),
    };
    Ok(pb::ImportResponsesRequest {
        parent: survey.name.clone(),
        row_id,
        response: Some(response),
    })
}

async fn import(
    file: &Path,
    survey_name: &str,
    addr: &str,
    bearer: &MetadataValue<tonic::metadata::Ascii>,
    errors_path: &Path,
) -> anyhow::Result<()> {
    let mut client = connect(addr).await?;
    let survey = client
        .get_survey(authorized(
            pb::GetSurveyRequest {
                name: survey_name.to_string(),
            },
            bearer,
        ))
        .await
        .with_context(|| format!("reading the survey {survey_name}"))?
        .into_inner();
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_path(file)
        .with_context(|| format!("opening {}", file.display()))?;
    let headers = reader.headers()?.clone();
    for h in headers.iter() {
        if !FIXED_COLUMNS.contains(&h) && !survey.questions.iter().any(|q| q.key == h) {
            bail!(
                "{}: column {h:?} is neither one of {} nor a question of the survey",
                file.display(),
                FIXED_COLUMNS.join(", ")
            );
        }
    }
    let stem = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Rows in file order; the line number (header = 1) names each in reports.
    let mut rows: Vec<(usize, pb::ImportResponsesRequest)> = Vec::new();
    let mut failures: Vec<RowError> = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                failures.push(RowError::new(line, "", format!("unreadable row: {e}")));
                continue;
            }
        };
        let cells: HashMap<&str, &str> = headers.iter().zip(record.iter()).collect();
        match parse_row(&survey, &cells, &format!("{stem}:{line}")) {
            Ok(r) => rows.push((line, r)),
            Err(bad) => failures.extend(
                bad.into_iter()
                    .map(|(field, message)| RowError::new(line, field, message)),
            ),
        }
    }
    let bar = csv_import::rows_bar(rows.len() as u64, "importing");
    let (mut created, mut already) = (0i64, 0i64);
    for chunk in rows.chunks(ROWS_PER_STREAM) {
        let lines: Vec<usize> = chunk.iter().map(|(l, _)| *l).collect();
        let messages: Vec<pb::ImportResponsesRequest> =
            chunk.iter().map(|(_, r)| r.clone()).collect();
        let progress = bar.clone();
        let stream = tokio_stream::iter(messages.into_iter().inspect(move |_| progress.inc(1)));
        let result = client
            .import_responses(authorized(stream, bearer))
            .await
            .context("importing responses")?
            .into_inner();
        created += result.created;
        already += result.already_imported;
        for r in result.results {
            if r.outcome != pb::RowOutcome::Rejected as i32 {
                continue;
            }
            let row = lines.get(r.row as usize).copied().unwrap_or(0);
            for v in r.violations {
                failures.push(RowError::new(
                    row,
                    v.field.trim_start_matches("response."),
                    v.description,
                ));
            }
        }
    }
    bar.finish_and_clear();
    failures.sort_by_key(|f| f.row);
    let failed_rows = {
        let mut rows: Vec<usize> = failures.iter().map(|f| f.row).collect();
        rows.dedup();
        rows.len()
    };
    if failures.is_empty() {
        match std::fs::remove_file(errors_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => eprintln!(
                "could not remove the old report {}: {e}",
                errors_path.display()
            ),
        }
        println!(
            "imported responses from {}: {created} new, {already} already present",
            file.display()
        );
        return Ok(());
    }
    let mut w = csv::Writer::from_path(errors_path)
        .with_context(|| format!("writing {}", errors_path.display()))?;
    w.write_record(["row", "field", "error"])?;
    for f in &failures {
        w.write_record([f.row.to_string(), f.field.clone(), f.message.clone()])?;
    }
    w.flush()?;
    println!(
        "imported responses from {}: {created} new, {already} already present; {failed_rows} rows failed and were not imported (see {})",
        file.display(),
        errors_path.display()
    );
    bail!("{failed_rows} rows failed")
}

async fn export_a11(
    agency: &str,
    quarter: &str,
    addr: &str,
    bearer: &MetadataValue<tonic::metadata::Ascii>,
    (out, responses): (Option<&Path>, Option<&Path>),
) -> anyhow::Result<()> {
    let mut client = connect(addr).await?;
    let bar = ProgressBar::new_spinner();
    bar.set_message(format!("computing the A-11 data for {quarter}"));
    bar.enable_steady_tick(Duration::from_millis(100));
    let report = client
        .get_a11_report(authorized(
            pb::GetA11ReportRequest {
                parent: format!("agencies/{agency}"),
                quarter: quarter.to_string(),
            },
            bearer,
        ))
        .await
        .context("reading the A-11 report")?
        .into_inner();
    bar.finish_and_clear();
    let summary = touchstone_feedback::a11::summary_csv(&report);
    match out {
        Some(path) => {
            std::fs::write(path, &summary)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "{} collection rows (FY{} Q{}) written to {}",
                report.collections.len(),
                report.fiscal_year,
                report.fiscal_quarter,
                path.display()
            );
        }
        None => print!("{summary}"),
    }
    if let Some(path) = responses {
        let csv = touchstone_feedback::a11::responses_csv(&report);
        std::fs::write(path, &csv).with_context(|| format!("writing {}", path.display()))?;
        eprintln!(
            "{} responses written to {}",
            report.responses.len(),
            path.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_read_by_question_kind() {
        let survey = pb::Survey {
            name: "agencies/dia/surveys/s1".into(),
            questions: vec![
                pb::Question {
                    key: "csat".into(),
                    kind: pb::QuestionKind::Satisfaction5 as i32,
                    ..Default::default()
                },
                pb::Question {
                    key: "ok".into(),
                    kind: pb::QuestionKind::YesNo as i32,
                    ..Default::default()
                },
                pb::Question {
                    key: "why".into(),
                    kind: pb::QuestionKind::MultipleChoice as i32,
                    ..Default::default()
                },
                pb::Question {
                    key: "comment".into(),
                    kind: pb::QuestionKind::FreeText as i32,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        let cells: HashMap<&str, &str> = [
            ("csat", "4"),
            ("ok", "yes"),
            ("why", "fees; forms"),
            ("comment", "Fine."),
            ("channel", "phone"),
            ("client", "c-1"),
            ("submit_time", "2026-07-01T09:30:00Z"),
        ]
        .into_iter()
        .collect();
        let row = parse_row(&survey, &cells, "f.csv:2").expect("valid");
        assert_eq!(row.row_id, "f.csv:2");
        let r = row.response.expect("response");
        assert_eq!(r.channel, Via::Phone as i32);
        assert_eq!(r.client, "agencies/dia/clients/c-1");
        assert_eq!(r.answers.len(), 4);
        assert_eq!(r.answers[0].score, Some(4));
        assert_eq!(r.answers[1].yes, Some(true));
        assert_eq!(r.answers[2].choices, vec!["fees", "forms"]);
        let bad: HashMap<&str, &str> = [("csat", "four"), ("channel", "pigeon")]
            .into_iter()
            .collect();
        let errs = parse_row(&survey, &bad, "x").expect_err("bad");
        assert_eq!(errs.len(), 2);
    }
}
