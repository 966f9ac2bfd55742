//! `touchstone clients import|export`: moving clients in and out of the
//! register through its public gRPC API, so every rule (validation,
//! encryption, audit, events) applies exactly as for any other caller.

use crate::csv_import::{self, Imported, RowError, authorized};
use anyhow::Context;
use clap::Subcommand;
use indicatif::ProgressBar;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use tonic::transport::Channel;
use touchstone_api::register::v1 as pb;
use touchstone_api::register::v1::register_service_client::RegisterServiceClient;
use touchstone_auth::Role;
use touchstone_platform::config::Settings;

/// Client import and export.
#[derive(Debug, Subcommand)]
pub(crate) enum ClientsCommand {
    /// Import clients from a CSV file (one CreateClient per row; re-running
    /// the same file creates nothing twice). Columns are listed in docs/cli.md.
    Import {
        /// The CSV file, with a header row.
        file: PathBuf,
        #[command(flatten)]
        target: Target,
        /// Rows in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Where to write the per-row error report (default FILE.errors.csv).
        #[arg(long)]
        errors: Option<PathBuf>,
    },
    /// Export every client of an agency as CSV (the import format plus name and times).
    Export {
        #[command(flatten)]
        target: Target,
        /// Output file (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// Which register, which agency, which token.
#[derive(Debug, clap::Args)]
pub(crate) struct Target {
    /// The agency.
    #[arg(long)]
    agency: String,
    /// The register's address; default: setting peers.register.
    #[arg(long)]
    addr: Option<String>,
    /// Bearer token; by default one is minted with the local development key.
    #[arg(long, env = "TOUCHSTONE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// Columns of the CSV format, in order.
pub(crate) const COLUMNS: &[&str] = &[
    "client_id",
    "kind",
    "given_names",
    "family_name",
    "preferred_name",
    "organisation_name",
    "email",
    "phone",
    "preferred_language",
    "preferred_channel",
    "interpreter_needed",
    "accessibility_needs",
    "external_system",
    "external_id",
    "address_line1",
    "address_line2",
    "locality",
    "region",
    "postal_code",
    "region_code",
];

/// Runs a clients command.
pub(crate) async fn run(cmd: ClientsCommand, settings: &Settings) -> anyhow::Result<()> {
    match cmd {
        ClientsCommand::Import {
            file,
            target,
            concurrency,
            errors,
        } => {
            let errors = errors.unwrap_or_else(|| csv_import::default_report(&file));
            import(&file, &target, concurrency.max(1), &errors, settings).await
        }
        ClientsCommand::Export { target, out } => export(&target, out.as_deref(), settings).await,
    }
}

fn enum_value(prefix: &str, value: &str, parse: fn(&str) -> Option<i32>) -> Option<i32> {
    let v = value.trim();
    if v.is_empty() {
        return Some(0);
    }
    parse(&format!(
        "{prefix}{}",
        v.to_ascii_uppercase().replace([' ', '-'], "_")
    ))
}

/// The CSV column a CreateClient field comes from (`client.email` is
/// `email`, `client.postal_address.address_lines[1]` is `address_line2`).
fn column_of(field: &str) -> String {
    let f = field.strip_prefix("client.").unwrap_or(field);
    let column = match f {
        "postal_address.address_lines" | "postal_address.address_lines[0]" => "address_line1",
        "postal_address.address_lines[1]" => "address_line2",
        _ if f.starts_with("postal_address.") => f.trim_start_matches("postal_address."),
        _ if f.starts_with("external_references") && f.ends_with(".system") => "external_system",
        _ if f.starts_with("external_references") => "external_id",
        _ if f.starts_with("accessibility_needs") => "accessibility_needs",
        "client_id" => "client_id",
        other => other,
    };
    if COLUMNS.contains(&column) {
        column.to_string()
    } else {
        // A rule across columns, or one the file cannot set: say so plainly.
        format!("(row) {f}")
    }
}

/// Turns one CSV record into a CreateClientRequest, or the errors of its cells.
fn parse_row(
    agency: &str,
    row: &HashMap<&str, &str>,
) -> Result<pb::CreateClientRequest, Vec<(String, String)>> {
    let get = |k: &str| row.get(k).copied().unwrap_or("").trim().to_string();
    let mut bad = Vec::new();
    let kind = enum_value("CLIENT_KIND_", &get("kind"), |s| {
        pb::ClientKind::from_str_name(s).map(|v| v as i32)
    });
    let channel = enum_value("CHANNEL_", &get("preferred_channel"), |s| {
        touchstone_api::common::v1::Channel::from_str_name(s).map(|v| v as i32)
    });
    let interpreter = match get("interpreter_needed").to_ascii_lowercase().as_str() {
        "" | "false" | "no" | "n" | "0" => Some(false),
        "true" | "yes" | "y" | "1" => Some(true),
        _ => None,
    };
    let mut needs = Vec::new();
    for item in get("accessibility_needs")
        .split(';')
        .filter(|s| !s.trim().is_empty())
    {
        match enum_value("ACCESSIBILITY_NEED_", item, |s| {
            pb::AccessibilityNeed::from_str_name(s).map(|v| v as i32)
        }) {
            Some(v) => needs.push(v),
            None => bad.push((
                "accessibility_needs".to_string(),
                format!("unknown need {:?}", item.trim()),
            )),
        }
    }
    if kind.is_none() {
        bad.push(("kind".into(), "must be person or organisation".into()));
    }
    if channel.is_none() {
        bad.push(("preferred_channel".into(), "unknown channel".into()));
    }
    if interpreter.is_none() {
        bad.push(("interpreter_needed".into(), "must be true or false".into()));
    }
    let (system, ext_id) = (get("external_system"), get("external_id"));
    if system.is_empty() != ext_id.is_empty() {
        bad.push((
            "external_id".into(),
            "external_system and external_id go together".into(),
        ));
    }
    if !bad.is_empty() {
        return Err(bad);
    }
    let lines: Vec<String> = [get("address_line1"), get("address_line2")]
        .into_iter()
        .filter(|l| !l.is_empty())
        .collect();
    let address = (!lines.is_empty()
        || !get("locality").is_empty()
        || !get("postal_code").is_empty())
    .then(|| pb::PostalAddress {
        address_lines: lines,
        locality: get("locality"),
        region: get("region"),
        postal_code: get("postal_code"),
        region_code: get("region_code"),
    });
    let client = pb::Client {
        kind: kind.unwrap_or_default(),
        given_names: get("given_names"),
        family_name: get("family_name"),
        preferred_name: get("preferred_name"),
        organisation_name: get("organisation_name"),
        email: get("email"),
        phone: get("phone"),
        postal_address: address,
        preferred_channel: channel.unwrap_or_default(),
        preferred_language: get("preferred_language"),
        interpreter_needed: interpreter.unwrap_or_default(),
        accessibility_needs: needs,
        external_references: if system.is_empty() {
            vec![]
        } else {
            vec![pb::ExternalReference { system, id: ext_id }]
        },
        ..Default::default()
    };
    let mut req = pb::CreateClientRequest {
        parent: format!("agencies/{agency}"),
        client: Some(client),
        client_id: get("client_id"),
        request_id: String::new(),
    };
    // The request id is a digest of the row itself, so re-running an import
    // (after a crash, or with fixed rows appended) never creates a client twice.
    let digest = Sha256::digest(prost::Message::encode_to_vec(&req));
    req.request_id = format!(
        "import-{}",
        digest
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    Ok(req)
}

async fn import(
    file: &Path,
    target: &Target,
    concurrency: usize,
    report: &Path,
    settings: &Settings,
) -> anyhow::Result<()> {
    let bearer = csv_import::bearer(
        target.token.as_deref(),
        &target.agency,
        settings,
        vec![Role::Officer],
    )?;
    let client = connect(target, settings).await?;
    let started = std::time::SystemTime::now();
    csv_import::import(
        file,
        COLUMNS,
        "clients",
        concurrency,
        report,
        |line, row| {
            let mut client = client.clone();
            let bearer = bearer.clone();
            async move {
                let row: HashMap<&str, &str> =
                    row.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let req = parse_row(&target.agency, &row).map_err(|bad| {
                    bad.into_iter()
                        .map(|(field, message)| RowError::new(line, field, message))
                        .collect::<Vec<_>>()
                })?;
                client
                    .create_client(authorized(req, &bearer))
                    .await
                    .map(|r| Imported::since(r.get_ref().create_time.as_ref(), started))
                    .map_err(|s| csv_import::status_errors(line, &s, &column_of))
            }
        },
    )
    .await
}

async fn connect(
    target: &Target,
    settings: &Settings,
) -> anyhow::Result<RegisterServiceClient<Channel>> {
    let addr = target.addr.as_deref().unwrap_or(&settings.peers.register);
    let channel = csv_import::connect(addr, "register").await?;
    Ok(RegisterServiceClient::new(channel).max_decoding_message_size(64 << 20))
}

fn enum_label(name: &str, prefix: &str) -> String {
    name.strip_prefix(prefix)
        .unwrap_or(name)
        .to_ascii_lowercase()
}

async fn export(target: &Target, out: Option<&Path>, settings: &Settings) -> anyhow::Result<()> {
    let bearer = csv_import::bearer(
        target.token.as_deref(),
        &target.agency,
        settings,
        vec![Role::Officer],
    )?;
    let mut client = connect(target, settings).await?;
    let sink: Box<dyn std::io::Write> = match out {
        Some(path) => Box::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        ),
        None => Box::new(std::io::stdout()),
    };
    let mut w = csv::Writer::from_writer(sink);
    let mut header: Vec<&str> = vec!["name"];
    header.extend_from_slice(COLUMNS);
    header.extend_from_slice(&["create_time", "update_time", "erased"]);
    w.write_record(&header)?;
    let bar = ProgressBar::new_spinner();
    let mut page_token = String::new();
    let mut count = 0u64;
    loop {
        let resp = client
            .list_clients(authorized(
                pb::ListClientsRequest {
                    parent: format!("agencies/{}", target.agency),
                    page_size: 1000,
                    page_token: page_token.clone(),
                    filter: String::new(),
                    order_by: "create_time".into(),
                },
                &bearer,
            ))
            .await
            .map_err(|s| anyhow::anyhow!("ListClients failed: {:?}: {}", s.code(), s.message()))?
            .into_inner();
        for c in &resp.clients {
            let id = c.name.rsplit('/').next().unwrap_or_default().to_string();
            let ext = c.external_references.first();
            let addr = c.postal_address.clone().unwrap_or_default();
            let line = |i: usize| addr.address_lines.get(i).cloned().unwrap_or_default();
            let kind = pb::ClientKind::try_from(c.kind)
                .map(|k| enum_label(k.as_str_name(), "CLIENT_KIND_"))
                .unwrap_or_default();
            let channel = touchstone_api::common::v1::Channel::try_from(c.preferred_channel)
                .ok()
                .filter(|ch| *ch as i32 != 0)
                .map(|ch| enum_label(ch.as_str_name(), "CHANNEL_"))
                .unwrap_or_default();
            let needs: Vec<String> = c
                .accessibility_needs
                .iter()
                .filter_map(|n| pb::AccessibilityNeed::try_from(*n).ok())
                .map(|n| enum_label(n.as_str_name(), "ACCESSIBILITY_NEED_"))
                .collect();
            let ts = |t: &Option<prost_types::Timestamp>| {
                t.as_ref().map(csv_import::rfc3339).unwrap_or_default()
            };
            w.write_record([
                c.name.clone(),
                id,
                kind,
                c.given_names.clone(),
                c.family_name.clone(),
                c.preferred_name.clone(),
                c.organisation_name.clone(),
                c.email.clone(),
                c.phone.clone(),
                c.preferred_language.clone(),
                channel,
                c.interpreter_needed.to_string(),
                needs.join(";"),
                ext.map(|e| e.system.clone()).unwrap_or_default(),
                ext.map(|e| e.id.clone()).unwrap_or_default(),
                line(0),
                line(1),
                addr.locality.clone(),
                addr.region.clone(),
                addr.postal_code.clone(),
                addr.region_code.clone(),
                ts(&c.create_time),
                ts(&c.update_time),
                c.erased.to_string(),
            ])?;
            count += 1;
        }
        bar.set_message(format!("exported {count} clients"));
        if resp.next_page_token.is_empty() {
            break;
        }
        page_token = resp.next_page_token;
    }
    w.flush()?;
    bar.finish_and_clear();
    eprintln!("exported {count} clients");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_csv_column() {
        assert_eq!(column_of("client.email"), "email");
        assert_eq!(
            column_of("client.postal_address.address_lines[1]"),
            "address_line2"
        );
        assert_eq!(
            column_of("client.postal_address.region_code"),
            "region_code"
        );
        assert_eq!(
            column_of("client.external_references[0].system"),
            "external_system"
        );
        assert_eq!(column_of("client.external_references[0].id"), "external_id");
        assert_eq!(
            column_of("client.accessibility_needs[2]"),
            "accessibility_needs"
        );
        assert_eq!(column_of("client_id"), "client_id");
        assert_eq!(
            column_of("client.characteristics.age_band"),
            "(row) characteristics.age_band"
        );
    }
}
