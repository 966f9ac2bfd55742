//! `touchstone api-keys`: issue, list and revoke the API keys agency systems
//! present to the Open311 intake, through the gateway's gRPC API (so the
//! same role check, idempotency and storage of only a hash apply).

use anyhow::Context;
use clap::Subcommand;
use touchstone_api::gateway::v1 as pb;
use touchstone_api::gateway::v1::gateway_service_client::GatewayServiceClient;
use touchstone_auth::Role;
use touchstone_platform::config::Settings;

use crate::csv_import::{authorized, bearer, connect};

/// API key commands.
#[derive(Debug, Subcommand)]
pub(crate) enum ApiKeysCommand {
    /// Issue a key to one agency system; prints the key once (it is stored
    /// only as a hash).
    Create {
        /// The agency.
        #[arg(long)]
        agency: String,
        /// The key's id, e.g. web-forms.
        #[arg(long)]
        id: String,
        /// The system it is for, e.g. "Web forms".
        #[arg(long)]
        display_name: String,
        /// Requests per minute (default 60).
        #[arg(long, default_value_t = 0)]
        rate: i32,
        #[command(flatten)]
        target: Target,
    },
    /// List an agency's keys (never the keys themselves).
    List {
        /// The agency.
        #[arg(long)]
        agency: String,
        #[command(flatten)]
        target: Target,
    },
    /// Revoke a key: requests with it are refused from then on.
    Revoke {
        /// The agency.
        #[arg(long)]
        agency: String,
        /// The key's id.
        #[arg(long)]
        id: String,
        #[command(flatten)]
        target: Target,
    },
}

/// Where the gateway is and who calls it.
#[derive(Debug, clap::Args)]
pub(crate) struct Target {
    /// The gateway's address.
    #[arg(long, default_value = "http://127.0.0.1:50055")]
    addr: String,
    /// Bearer token (agency_admin); by default one is minted with the local development key.
    #[arg(long, env = "TOUCHSTONE_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

fn show(k: &pb::ApiKey) -> String {
    let state = if k.revoke_time.is_some() {
        "revoked"
    } else {
        "active"
    };
    format!(
        "{}\t{}\t{}/min\t{state}",
        k.name, k.display_name, k.requests_per_minute
    )
}

/// Runs an API key command.
pub(crate) async fn run(cmd: ApiKeysCommand, settings: &Settings) -> anyhow::Result<()> {
    let (agency, target) = match &cmd {
        ApiKeysCommand::Create { agency, target, .. }
        | ApiKeysCommand::List { agency, target }
        | ApiKeysCommand::Revoke { agency, target, .. } => (agency.clone(), target),
    };
    let token = bearer(
        target.token.as_deref(),
        &agency,
        settings,
        vec![Role::AgencyAdmin],
    )?;
    let mut client = GatewayServiceClient::new(connect(&target.addr, "gateway").await?);
    match cmd {
        ApiKeysCommand::Create {
            id,
            display_name,
            rate,
            ..
        } => {
            let key = client
                .create_api_key(authorized(
                    pb::CreateApiKeyRequest {
                        parent: format!("agencies/{agency}"),
                        api_key: Some(pb::ApiKey {
                            display_name,
                            requests_per_minute: rate,
                            ..Default::default()
                        }),
                        api_key_id: id,
                        request_id: String::new(),
                    },
                    &token,
                ))
                .await
                .context("creating the API key")?
                .into_inner();
            eprintln!("{}", show(&key));
            eprintln!("the key (shown once; keep it secret):");
            println!("{}", key.key);
        }
        ApiKeysCommand::List { .. } => {
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_api_keys(authorized(
                        pb::ListApiKeysRequest {
                            parent: format!("agencies/{agency}"),
                            page_size: 1000,
                            page_token,
                        },
                        &token,
                    ))
                    .await
                    .context("listing API keys")?
                    .into_inner();
                for k in &page.api_keys {
                    println!("{}", show(k));
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
        }
        ApiKeysCommand::Revoke { id, .. } => {
            let key = client
                .revoke_api_key(authorized(
                    pb::RevokeApiKeyRequest {
                        name: format!("agencies/{agency}/apiKeys/{id}"),
                        request_id: String::new(),
                    },
                    &token,
                ))
                .await
                .context("revoking the API key")?
                .into_inner();
            println!("{}", show(&key));
        }
    }
    Ok(())
}
