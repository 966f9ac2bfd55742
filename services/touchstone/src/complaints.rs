//! `touchstone complaints import`: migrating historic complaints from
//! another system through the complaints service's `ImportComplaint`, so
//! every rule (validation, the transition table, encryption, history,
//! events for the KPIs) applies exactly as for any other caller. Re-running
//! the same file creates nothing twice.

use crate::csv_import::{self, Imported, RowError, authorized};
use clap::Subcommand;
use std::collections::HashMap;
use std::path::PathBuf;
use touchstone_api::common::v1::Channel as Via;
use touchstone_api::complaints::v1 as pb;
use touchstone_api::complaints::v1::complaints_service_client::ComplaintsServiceClient;
use touchstone_auth::Role;
use touchstone_platform::config::Settings;

/// Complaint import.
#[derive(Debug, Subcommand)]
pub(crate) enum ComplaintsCommand {
    /// Import historic complaints from a CSV file (one ImportComplaint per
    /// row). Columns are listed in docs/cli.md.
    Import {
        /// The CSV file, with a header row.
        file: PathBuf,
        /// The agency.
        #[arg(long)]
        agency: String,
        /// The complaints service's address; default: setting peers.complaints.
        #[arg(long)]
        addr: Option<String>,
        /// Bearer token (agency_admin or senior_officer); by default one is
        /// minted with the local development key.
        #[arg(long, env = "TOUCHSTONE_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Rows in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Where to write the per-row error report (default FILE.errors.csv).
        #[arg(long)]
        errors: Option<PathBuf>,
    },
}

/// Columns of the CSV format.
pub(crate) const COLUMNS: &[&str] = &[
    "reference",
    "received",
    "channel",
    "unit",
    "service",
    "category",
    "severity",
    "description",
    "remedy_sought",
    "client",
    "contact_name",
    "contact_email",
    "contact_phone",
    "officer",
    "acknowledged",
    "escalated",
    "stage",
    "resolved",
    "outcome",
    "remedies",
    "root_causes",
    "resolution_summary",
    "closed",
    "withdrawn",
];

pub(crate) async fn run(cmd: ComplaintsCommand, settings: &Settings) -> anyhow::Result<()> {
    let ComplaintsCommand::Import {
        file,
        agency,
        addr,
        token,
        concurrency,
        errors,
    } = cmd;
    let report = errors.unwrap_or_else(|| csv_import::default_report(&file));
    let bearer = csv_import::bearer(
        token.as_deref(),
        &agency,
        settings,
        vec![Role::AgencyAdmin, Role::SeniorOfficer],
    )?;
    let addr = addr.unwrap_or_else(|| settings.peers.complaints.clone());
    let client =
        ComplaintsServiceClient::new(csv_import::connect(&addr, "complaints service").await?);
    let started = std::time::SystemTime::now();
    csv_import::import(
        &file,
        COLUMNS,
        "complaints",
        concurrency,
        &report,
        |line, row| {
            let mut client = client.clone();
            let bearer = bearer.clone();
            let agency = agency.clone();
            async move {
                let req = parse_row(&agency, &row).map_err(|bad| {
                    bad.into_iter()
                        .map(|(field, message)| RowError::new(line, field, message))
                        .collect::<Vec<_>>()
                })?;
                let steps: Vec<i32> = req.steps.iter().map(|s| s.action).collect();
                client
                    .import_complaint(authorized(req, &bearer))
                    .await
                    .map(|r| Imported::since(r.get_ref().create_time.as_ref(), started))
                    .map_err(|s| {
                        csv_import::status_errors(line, &s, &|f: &str| column_of(f, &steps))
                    })
            }
        },
    )
    .await
}

/// The CSV column an ImportComplaint field comes from; a step's field is
/// the column of that step's action (`steps[2].time` of a resolve step is
/// `resolved`).
fn column_of(field: &str, steps: &[i32]) -> String {
    use pb::historic_step::Action as A;
    let f = field.strip_prefix("complaint.").unwrap_or(field);
    if let Some(rest) = f.strip_prefix("steps[") {
        let step = rest
            .split(']')
            .next()
            .and_then(|i| i.parse::<usize>().ok())
            .and_then(|i| steps.get(i))
            .and_then(|a| A::try_from(*a).ok());
        return match step {
            Some(A::Acknowledge) => "acknowledged",
            Some(A::Escalate) => "escalated",
            Some(A::Resolve) => "resolved",
            Some(A::Close) => "closed",
            Some(A::Withdraw) => "withdrawn",
            Some(A::Assign) => "officer",
            _ => "(row) steps",
        }
        .to_string();
    }
    let column = match f {
        "receive_time" => "received",
        "complainant.client" => "client",
        "complainant.contact.display_name" => "contact_name",
        "complainant.contact.email" => "contact_email",
        "complainant.contact.phone" => "contact_phone",
        "assignment.officer" => "officer",
        "resolution.outcome" => "outcome",
        "resolution.summary" => "resolution_summary",
        "complaint_id" | "request_id" => "reference",
        _ if f.starts_with("resolution.remedies") => "remedies",
        _ if f.starts_with("resolution.root_causes") => "root_causes",
        other => other,
    };
    if COLUMNS.contains(&column) {
        column.to_string()
    } else {
        format!("(row) {f}")
    }
}

fn enum_of(prefix: &str, value: &str, parse: fn(&str) -> Option<i32>) -> Option<i32> {
    let v = value.trim();
    if v.is_empty() {
        return Some(0);
    }
    parse(&format!(
        "{prefix}{}",
        v.to_ascii_uppercase().replace([' ', '-'], "_")
    ))
}

fn timestamp(value: &str) -> Option<prost_types::Timestamp> {
    let t =
        time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339).ok()?;
    Some(prost_types::Timestamp {
        seconds: t.unix_timestamp(),
        nanos: t.nanosecond() as i32,
    })
}

/// One row as an ImportComplaint request, or the columns that are wrong.
fn parse_row(
    agency: &str,
    row: &HashMap<String, String>,
) -> Result<pb::ImportComplaintRequest, Vec<(String, String)>> {
    let get = |k: &str| row.get(k).map(|v| v.trim().to_string()).unwrap_or_default();
    let mut bad: Vec<(String, String)> = Vec::new();
    let reference = get("reference");
    if reference.is_empty() {
        bad.push((
            "reference".into(),
            "required: the complaint's id in the old system".into(),
        ));
    }
    let mut time_of = |column: &str| -> Option<prost_types::Timestamp> {
        let v = get(column);
        if v.is_empty() {
            return None;
        }
        let t = timestamp(&v);
        if t.is_none() {
            bad.push((
                column.into(),
                "not an RFC 3339 time like 2026-03-01T09:30:00+11:00".into(),
            ));
        }
        t
    };
    let received = time_of("received");
    let acknowledged = time_of("acknowledged");
    let escalated = time_of("escalated");
    let resolved = time_of("resolved");
    let closed = time_of("closed");
    let withdrawn = time_of("withdrawn");
    if received.is_none() && !bad.iter().any(|(c, _)| c == "received") {
        bad.push(("received".into(), "required".into()));
    }
    let channel = enum_of("CHANNEL_", &get("channel"), |s| {
        Via::from_str_name(s).map(|v| v as i32)
    });
    let severity = enum_of("SEVERITY_", &get("severity"), |s| {
        pb::Severity::from_str_name(s).map(|v| v as i32)
    });
    let stage = enum_of("STAGE_", &get("stage"), |s| {
        pb::Stage::from_str_name(s).map(|v| v as i32)
    });
    let outcome = enum_of("OUTCOME_", &get("outcome"), |s| {
        pb::Outcome::from_str_name(s).map(|v| v as i32)
    });
    for (column, value) in [
        ("channel", channel),
        ("severity", severity),
        ("stage", stage),
        ("outcome", outcome),
    ] {
        if value.is_none() {
            bad.push((column.into(), format!("unknown {column} {:?}", get(column))));
        }
    }
    let mut remedies = Vec::new();
    for item in get("remedies").split(';').filter(|s| !s.trim().is_empty()) {
        match enum_of("REMEDY_", item, |s| {
            pb::Remedy::from_str_name(s).map(|v| v as i32)
        }) {
            Some(v) => remedies.push(v),
            None => bad.push((
                "remedies".into(),
                format!("unknown remedy {:?}", item.trim()),
            )),
        }
    }
    if resolved.is_some() && outcome == Some(0) {
        bad.push(("outcome".into(), "required when resolved is given".into()));
    }
    if escalated.is_some() != (stage.unwrap_or(0) > 1) {
        bad.push((
            "stage".into(),
            "escalated and a stage after frontline go together".into(),
        ));
    }
    if !bad.is_empty() {
        return Err(bad);
    }
    let who = if !get("client").is_empty() {
        let c = get("client");
        Some(pb::complainant::Who::Client(
            if c.starts_with("agencies/") {
                c
            } else {
                format!("agencies/{agency}/clients/{c}")
            },
        ))
    } else if !(get("contact_name").is_empty()
        && get("contact_email").is_empty()
        && get("contact_phone").is_empty())
    {
        Some(pb::complainant::Who::Contact(pb::ContactDetails {
            display_name: get("contact_name"),
            email: get("contact_email"),
            phone: get("contact_phone"),
        }))
    } else {
        Some(pb::complainant::Who::Anonymous(true))
    };
    use pb::historic_step::Action as A;
    let step = |action: A, time: Option<prost_types::Timestamp>| pb::HistoricStep {
        action: action as i32,
        time,
        ..Default::default()
    };
    let mut steps = Vec::new();
    if !get("officer").is_empty() {
        steps.push(pb::HistoricStep {
            assignment: Some(pb::Assignment {
                unit: get("unit"),
                officer: get("officer"),
            }),
            ..step(A::Assign, received)
        });
    }
    if acknowledged.is_some() {
        steps.push(step(A::Acknowledge, acknowledged));
    }
    if escalated.is_some() {
        steps.push(pb::HistoricStep {
            stage: stage.unwrap_or_default(),
            ..step(A::Escalate, escalated)
        });
    }
    if resolved.is_some() {
        steps.push(pb::HistoricStep {
            resolution: Some(pb::Resolution {
                outcome: outcome.unwrap_or_default(),
                remedies,
                root_causes: get("root_causes")
                    .split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect(),
                summary: get("resolution_summary"),
                ..Default::default()
            }),
            ..step(A::Resolve, resolved)
        });
    }
    if closed.is_some() {
        steps.push(step(A::Close, closed));
    }
    if withdrawn.is_some() {
        steps.push(step(A::Withdraw, withdrawn));
    }
    // The server checks the order against the transition table; sorting by
    // time keeps a row whose columns are merely out of order importable.
    steps.sort_by_key(|s| s.time.map(|t| (t.seconds, t.nanos)));
    let id = reference.to_ascii_lowercase();
    let complaint_id = if touchstone_platform::names::check_id(&id).is_ok() {
        id
    } else {
        String::new()
    };
    Ok(pb::ImportComplaintRequest {
        parent: format!("agencies/{agency}"),
        complaint: Some(pb::Complaint {
            complainant: Some(pb::Complainant { who }),
            channel: channel.unwrap_or_default(),
            receive_time: received,
            unit: get("unit"),
            service: get("service"),
            category: get("category"),
            severity: severity.unwrap_or_default(),
            description: get("description"),
            remedy_sought: get("remedy_sought"),
            ..Default::default()
        }),
        complaint_id,
        request_id: format!("import-{}", reference.chars().take(90).collect::<String>()),
        steps,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn row(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_full_row_becomes_ordered_steps() {
        let r = row(&[
            ("reference", "CMS-00042"),
            ("received", "2026-03-02T09:00:00+11:00"),
            ("channel", "phone"),
            ("severity", "high"),
            ("description", "Lost documents"),
            ("officer", "jsmith"),
            ("acknowledged", "2026-03-03T10:00:00+11:00"),
            ("escalated", "2026-03-05T10:00:00+11:00"),
            ("stage", "investigation"),
            ("resolved", "2026-03-20T10:00:00+11:00"),
            ("outcome", "partly upheld"),
            ("remedies", "apology; explanation"),
            ("closed", "2026-03-21T10:00:00+11:00"),
        ]);
        let req = parse_row("dia", &r).unwrap();
        assert_eq!(req.complaint_id, "cms-00042");
        assert_eq!(req.request_id, "import-CMS-00042");
        let actions: Vec<i32> = req.steps.iter().map(|s| s.action).collect();
        use pb::historic_step::Action as A;
        assert_eq!(
            actions,
            [A::Assign, A::Acknowledge, A::Escalate, A::Resolve, A::Close].map(|a| a as i32)
        );
        let c = req.complaint.unwrap();
        assert_eq!(c.channel, Via::Phone as i32);
        assert_eq!(c.severity, pb::Severity::High as i32);
        assert!(matches!(
            c.complainant.unwrap().who,
            Some(pb::complainant::Who::Anonymous(true))
        ));
    }

    #[test]
    fn bad_columns_are_named() {
        let r = row(&[
            ("received", "yesterday"),
            ("channel", "pigeon"),
            ("resolved", "2026-03-20T10:00:00Z"),
        ]);
        let mut cols: Vec<String> = parse_row("dia", &r)
            .unwrap_err()
            .into_iter()
            .map(|(c, _)| c)
            .collect();
        cols.sort();
        assert_eq!(cols, ["channel", "outcome", "received", "reference"]);
    }
}
