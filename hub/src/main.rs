//! hub: the AGOG regional fleet service.
//!
//! This build carries the reconciler commands for the regional side; enrollment, the health
//! monitor and alerts follow (see ARCHITECTURE.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sync_core::cli::{load_spec, plan_or_apply};
use sync_core::NodeName;

#[derive(Parser)]
#[command(name = "hub", version, about = "AGOG regional hub")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the SQL that would bring the nodes to the spec; changes nothing.
    Plan {
        #[arg(long)]
        spec: PathBuf,
        /// Nodes to plan (default: every node in the spec).
        #[arg(long = "node")]
        nodes: Vec<NodeName>,
    },
    /// Bring the nodes to the spec (idempotent; publishers are reached before subscribers when
    /// run twice, so run it again if a subscription reports it waits for a publication).
    Apply {
        #[arg(long)]
        spec: PathBuf,
        #[arg(long = "node")]
        nodes: Vec<NodeName>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let (spec, nodes, apply) = match cli.command {
        Command::Plan { spec, nodes } => (spec, nodes, false),
        Command::Apply { spec, nodes } => (spec, nodes, true),
    };
    let topo = match load_spec(&spec) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if plan_or_apply(&topo, &nodes, apply).await {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
