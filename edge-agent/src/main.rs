//! edge-agent: the AGOG edge box daemon and support CLI.
//!
//! This build carries the reconciler commands; the daemon (`run`), `/health`, `status` and
//! `doctor` follow (see ARCHITECTURE.md).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sync_core::cli::{load_spec, plan_or_apply};
use sync_core::NodeName;

#[derive(Parser)]
#[command(name = "edge-agent", version, about = "AGOG edge sync agent")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the SQL that would bring this node to the spec; changes nothing.
    Plan {
        #[arg(long)]
        spec: PathBuf,
        /// This box's node name in the spec.
        #[arg(long)]
        node: NodeName,
    },
    /// Bring this node to the spec (idempotent).
    Apply {
        #[arg(long)]
        spec: PathBuf,
        #[arg(long)]
        node: NodeName,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let (spec, node, apply) = match cli.command {
        Command::Plan { spec, node } => (spec, node, false),
        Command::Apply { spec, node } => (spec, node, true),
    };
    let topo = match load_spec(&spec) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if plan_or_apply(&topo, &[node], apply).await {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
