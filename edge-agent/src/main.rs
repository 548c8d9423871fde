//! edge-agent: the AGOG edge box daemon and its support CLI.
//!
//! Exit codes: 0 success; 1 a check failed, the agent is not healthy, or an operation failed;
//! 2 bad usage or a bad config file.

mod config;
mod daemon;
mod disk;
mod doctor;
mod enroll;
mod health_server;
mod postgres;
mod probes;
mod state;
mod status;
mod tls;
mod topology;
mod tunnel;
mod tunnel_ipsec;
mod tunnel_openvpn;

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
    /// Enroll with the hub now (`run` also does this when the box is not enrolled). Retries
    /// until the hub answers; exit 1 when it refuses.
    Enroll,
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
    let mut cfg = match EdgeConfig::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(2);
        }
    };
    // Once enrolled, the enrollment provides the upstream.
    let enrolled = match enroll::load(&cfg) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: enrollment state: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(en) = &enrolled {
        enroll::apply(&mut cfg, en);
    }
    match cli.command {
        Command::Enroll => {
            if cfg.enroll.is_none() {
                eprintln!("error: the config has no [enroll] section");
                return ExitCode::from(2);
            }
            if let Some(en) = enrolled {
                println!(
                    "already enrolled: node {} of {} at {}, since {}",
                    en.response.node, en.response.facility_id, en.response.region, en.enrolled_at
                );
                return ExitCode::SUCCESS;
            }
            tokio::select! {
                r = enroll::enroll(&cfg) => match r {
                    Ok(en) => {
                        println!(
                            "enrolled: node {} of {}, subscribed by {}, master data from {}",
                            en.response.node, en.response.facility_id, en.response.regional_node, en.response.master_node
                        );
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("error: {e}");
                        ExitCode::FAILURE
                    }
                },
                _ = tokio::signal::ctrl_c() => {
                    eprintln!("interrupted; not enrolled");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run => match daemon::run(cfg, enrolled.is_some(), &cli.config).await {
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
