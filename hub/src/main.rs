//! hub: the AGOG regional fleet service and its CLI.
//!
//! Exit codes: 0 success; 1 an operation failed; 2 bad usage or a bad config/spec file.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hub::config::{self, HubConfig};
use sync_core::cli::{load_spec, plan_or_apply};
use sync_core::{FacilityId, NodeName, TenantId};

#[derive(Parser)]
#[command(name = "hub", version, about = "AGOG regional hub")]
struct Cli {
    /// Config file (for serve and edges).
    #[arg(long, global = true, env = "AGOG_HUB_CONFIG", default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run this replica: the 30-second health monitor and the alert outbox.
    Serve,
    /// Edges of this region: state, last check, last error.
    Edges {
        #[arg(long)]
        json: bool,
        #[command(subcommand)]
        action: Option<EdgesAction>,
    },
    /// Show the SQL that would bring the nodes of a topology spec to it; changes nothing.
    Plan {
        #[arg(long)]
        spec: PathBuf,
        /// Nodes to plan (default: every node in the spec).
        #[arg(long = "node")]
        nodes: Vec<NodeName>,
    },
    /// Bring the nodes of a topology spec to it (idempotent).
    Apply {
        #[arg(long)]
        spec: PathBuf,
        #[arg(long = "node")]
        nodes: Vec<NodeName>,
    },
}

#[derive(Subcommand)]
enum EdgesAction {
    /// Watch an edge (enrollment does this by itself; this is for edges set up by hand).
    Add {
        #[arg(long)]
        facility: FacilityId,
        #[arg(long)]
        tenant: TenantId,
        /// Node name in the topology (default: the facility id).
        #[arg(long)]
        node: Option<NodeName>,
        #[arg(long)]
        name: Option<String>,
        /// e.g. http://10.8.0.12:4010/health
        #[arg(long)]
        health_url: String,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Plan { spec, nodes } => spec_command(&spec, &nodes, false).await,
        Command::Apply { spec, nodes } => spec_command(&spec, &nodes, true).await,
        Command::Serve => {
            let Some(cfg) = load_config(&cli.config) else {
                return ExitCode::from(2);
            };
            match hub::serve::serve(cfg).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "hub stopped");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Edges { json, action } => {
            let Some(cfg) = load_config(&cli.config) else {
                return ExitCode::from(2);
            };
            match edges(&cfg, json, action).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn load_config(path: &std::path::Path) -> Option<HubConfig> {
    match HubConfig::load(path) {
        Ok(c) => Some(c),
        Err(e) => {
            eprintln!("error: {e:#}");
            None
        }
    }
}

async fn spec_command(spec: &std::path::Path, nodes: &[NodeName], apply: bool) -> ExitCode {
    let topo = match load_spec(spec) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if plan_or_apply(&topo, nodes, apply).await {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

async fn edges(cfg: &HubConfig, json: bool, action: Option<EdgesAction>) -> anyhow::Result<()> {
    let db = hub::db::connect_and_migrate(&cfg.database).await?;
    if let Some(EdgesAction::Add {
        facility,
        tenant,
        node,
        name,
        health_url,
    }) = action
    {
        let node = node
            .map(|n| n.to_string())
            .unwrap_or_else(|| facility.to_string());
        let name = name.unwrap_or_else(|| facility.to_string());
        hub::monitor::upsert_edge(
            &db,
            facility.as_str(),
            &node,
            tenant.as_str(),
            cfg.region.as_str(),
            &name,
            &health_url,
        )
        .await?;
        println!("watching {facility} at {health_url}");
        return Ok(());
    }
    let rows = db
        .query(
            "SELECT facility_id, display_name, state, to_char(last_ok_at, 'YYYY-MM-DD HH24:MI:SS'),
                    to_char(offline_since, 'YYYY-MM-DD HH24:MI:SS'), last_error, last_latency_ms
               FROM agog_hub.edges ORDER BY facility_id",
            &[],
        )
        .await?;
    if json {
        let list: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "facility_id": r.get::<_, String>(0),
                    "name": r.get::<_, String>(1),
                    "state": r.get::<_, String>(2),
                    "last_ok_at": r.get::<_, Option<String>>(3),
                    "offline_since": r.get::<_, Option<String>>(4),
                    "last_error": r.get::<_, Option<String>>(5),
                    "last_latency_ms": r.get::<_, Option<i32>>(6),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        println!(
            "{:<28} {:<10} {:<20} {:<20} last error",
            "facility", "state", "last ok", "offline since"
        );
        for r in &rows {
            println!(
                "{:<28} {:<10} {:<20} {:<20} {}",
                r.get::<_, String>(0),
                r.get::<_, String>(2),
                r.get::<_, Option<String>>(3).unwrap_or_else(|| "-".into()),
                r.get::<_, Option<String>>(4).unwrap_or_else(|| "-".into()),
                r.get::<_, Option<String>>(5).unwrap_or_default()
            );
        }
    }
    Ok(())
}
