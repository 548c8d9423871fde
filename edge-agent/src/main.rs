//! edge-agent: the AGOG edge box daemon and its support CLI.
//!
//! Exit codes: 0 success; 1 a check failed, the agent is not healthy, or an operation failed;
//! 2 bad usage or a bad config file.

mod config;
mod daemon;
mod disk;
mod doctor;
mod health_server;
mod postgres;
mod probes;
mod state;
mod status;
mod topology;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use config::EdgeConfig;

#[derive(Parser)]
#[command(
    name = "edge-agent",
    version,
    about = "AGOG edge sync agent: keeps this facility's PostgreSQL in sync with its region"
)]
struct Cli {
    /// Config file.
    #[arg(long, global = true, env = "AGOG_EDGE_CONFIG", default_value = config::DEFAULT_PATH)]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: PostgreSQL, reconcile, heartbeats, /health (what systemd starts).
    Run,
    /// What the running agent reports (exit 1 unless healthy).
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Check PostgreSQL, subscriptions, slots, disk, the upstream and the clock; each failure
    /// with its fix (exit 1 when any check fails).
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Show the SQL the next reconcile would run; changes nothing.
    Plan,
}

fn init_logging() {
    use tracing_subscriber::prelude::*;
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Started by systemd: log to the journal with structured fields; otherwise to stderr.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        if let Ok(journald) = tracing_journald::layer() {
            tracing_subscriber::registry()
                .with(filter)
                .with(journald)
                .init();
            return;
        }
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
        .init();
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    // One TLS provider for the whole process: ring (static musl builds; no aws-lc).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cfg = match EdgeConfig::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Command::Run => match daemon::run(cfg).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "agent stopped");
                ExitCode::FAILURE
            }
        },
        Command::Status { json } => match status::fetch(&cfg).await {
            Ok(r) => {
                if json {
                    println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
                } else {
                    print!("{}", status::render(&r));
                }
                if r.status == sync_core::health::Status::Healthy {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("error: {e}\n  fix: systemctl status agog-edge-agent; edge-agent doctor");
                ExitCode::FAILURE
            }
        },
        Command::Doctor { json } => {
            let checks = doctor::run(&cfg).await;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&checks).unwrap_or_default()
                );
            } else {
                print!("{}", doctor::render(&checks));
            }
            if checks.iter().any(|c| c.outcome == doctor::Outcome::Fail) {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Command::Plan => {
            let topo = match topology::edge_topology(&cfg) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            let node = cfg.node_name().expect("validated at load");
            if sync_core::cli::plan_or_apply(&topo, &[node], false).await {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
