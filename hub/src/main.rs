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
    /// Bootstrap tokens for enrolling edges (one token enrolls one edge, once).
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// Cloud fallback: a destroyed facility works from a workspace in the regional database
    /// until a rebuilt edge takes everything back.
    Fallback {
        #[command(subcommand)]
        action: hub::fallback::cli::Action,
    },
    /// The alert delivery log, newest first: channel, recipient, outcome, time.
    Alerts {
        #[arg(long)]
        facility: Option<FacilityId>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
    },
    /// The people of a facility who get its alerts (SMS if opted in, voice if primary, email).
    Contacts {
        #[command(subcommand)]
        action: ContactsAction,
    },
    /// A facility's own webhook or PagerDuty key on a configured channel (besides its default).
    Routes {
        #[command(subcommand)]
        action: RoutesAction,
    },
    /// Operators of the dashboard and the read API, and their tokens.
    Operator {
        #[command(subcommand)]
        action: OperatorAction,
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
enum TokenAction {
    /// Create a token and print it (the only time it is shown; the hub stores its hash).
    Create {
        #[arg(long)]
        facility: FacilityId,
        #[arg(long)]
        tenant: TenantId,
        /// The edge's display name (default: the facility id).
        #[arg(long)]
        name: Option<String>,
        /// How long it is valid: 30m, 24h, 7d, or a time (2026-12-01T12:00:00Z).
        #[arg(long, default_value = "24h")]
        expires: String,
    },
    /// Tokens with their state (active, used, expired, revoked); never the tokens themselves.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke an unused token.
    Revoke { id: i64 },
}

#[derive(Subcommand)]
enum OperatorAction {
    /// Add an operator. Without --password-stdin a password is made and printed once.
    Add {
        name: String,
        /// Limit the operator to one tenant's facilities (default: every tenant of the region).
        #[arg(long)]
        tenant: Option<TenantId>,
        /// Read the password from the first line of standard input.
        #[arg(long)]
        password_stdin: bool,
        /// No password: the operator signs in with tokens only.
        #[arg(long, conflicts_with = "password_stdin")]
        no_password: bool,
    },
    /// Set a new password (read from standard input, or made and printed); ends the sessions.
    Password {
        name: String,
        #[arg(long)]
        password_stdin: bool,
    },
    /// Make a bearer token for the read API and the dashboard; printed once.
    Token {
        name: String,
        /// 30m, 24h, 90d, or a time (2026-12-01T12:00:00Z).
        #[arg(long, default_value = "90d")]
        expires: String,
        #[arg(long, default_value = "")]
        label: String,
    },
    /// Revoke a token by its id (from `hub operator list`).
    Revoke { id: i64 },
    /// Operators, their tokens (never the tokens themselves) and open sessions.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove an operator with its tokens and sessions.
    Remove { name: String },
}

#[derive(Subcommand)]
enum EdgesAction {
    /// Remove an edge: its row, its role on the master-data publisher; the hub's next
    /// reconcile drops the regional's subscription to it.
    Decommission { facility: FacilityId },
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

#[derive(Subcommand)]
enum ContactsAction {
    /// Add a contact (or update the one with this name).
    Add {
        #[arg(long)]
        facility: FacilityId,
        #[arg(long)]
        name: String,
        /// E.164, e.g. +14155550100
        #[arg(long)]
        phone: Option<String>,
        #[arg(long)]
        email: Option<String>,
        /// Text this contact on alerts (needs --phone).
        #[arg(long)]
        sms: bool,
        /// The one contact the voice call goes to.
        #[arg(long)]
        primary: bool,
    },
    List {
        #[arg(long)]
        facility: Option<FacilityId>,
        #[arg(long)]
        json: bool,
    },
    Remove {
        #[arg(long)]
        facility: FacilityId,
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum RoutesAction {
    /// Also send this facility's alerts on channel CHANNEL (a name from [alerts]) to TARGET.
    Add {
        #[arg(long)]
        facility: FacilityId,
        #[arg(long)]
        channel: String,
        /// A Slack/Teams webhook URL or a PagerDuty integration key.
        #[arg(long)]
        target: String,
    },
    List {
        #[arg(long)]
        facility: Option<FacilityId>,
        #[arg(long)]
        json: bool,
    },
    Remove {
        #[arg(long)]
        facility: FacilityId,
        #[arg(long)]
        channel: String,
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
        Command::Token { action } => {
            let Some(cfg) = load_config(&cli.config) else {
                return ExitCode::from(2);
            };
            finish(token(&cfg, action).await)
        }
        Command::Operator { action } => {
            let Some(cfg) = load_config(&cli.config) else {
                return ExitCode::from(2);
            };
            finish(operator(&cfg, action).await)
        }
        Command::Fallback { action } => {
            let Some(cfg) = load_config(&cli.config) else {
                return ExitCode::from(2);
            };
            finish(hub::fallback::cli::run(&cfg, action).await)
        }
        Command::Edges { json, action } => {
            let Some(cfg) = load_config(&cli.config) else {
                return ExitCode::from(2);
            };
            finish(edges(&cfg, json, action).await)
        }
        Command::Alerts {
            facility,
            limit,
            json,
        } => {
            let Some(cfg) = load_config(&cli.config) else {
                return ExitCode::from(2);
            };
            finish(alerts(&cfg, facility, limit, json).await)
        }
        Command::Contacts { action } => {
            let Some(cfg) = load_config(&cli.config) else {
                return ExitCode::from(2);
            };
            finish(contacts(&cfg, action).await)
        }
        Command::Routes { action } => {
            let Some(cfg) = load_config(&cli.config) else {
                return ExitCode::from(2);
            };
            finish(routes(&cfg, action).await)
        }
    }
}

/// "12s 4.0 MiB" at a glance; "-" when not sampled.
fn lag_cell(seconds: Option<f64>, bytes: Option<i64>) -> String {
    let s = seconds.map(|s| format!("{:.0}s", s));
    let b = bytes.map(|b| {
        if b >= 1 << 20 {
            format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
        } else {
            format!("{} kB", b / 1024)
        }
    });
    match (s, b) {
        (None, None) => "-".into(),
        (s, b) => [s, b].into_iter().flatten().collect::<Vec<_>>().join(" "),
    }
}

/// An operation's result as the exit code (its error on stderr).
fn finish(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn alerts(
    cfg: &HubConfig,
    facility: Option<FacilityId>,
    limit: i64,
    json: bool,
) -> anyhow::Result<()> {
    let db = hub::db::connect_and_migrate(&cfg.database).await?;
    let list = hub::alert_log::recent(&db, facility.as_ref().map(|f| f.as_str()), limit).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<24} {:<12} {:<14} {:<28} {:<10} detail",
        "time", "facility", "event", "channel", "recipient", "outcome"
    );
    for a in list {
        println!(
            "{:<20} {:<24} {:<12} {:<14} {:<28} {:<10} {}",
            a.created_at.format("%Y-%m-%d %H:%M:%S"),
            a.facility_id,
            a.event,
            a.channel,
            a.recipient,
            a.status,
            a.last_error.unwrap_or_default()
        );
    }
    Ok(())
}

async fn contacts(cfg: &HubConfig, action: ContactsAction) -> anyhow::Result<()> {
    let mut db = hub::db::connect_and_migrate(&cfg.database).await?;
    match action {
        ContactsAction::Add {
            facility,
            name,
            phone,
            email,
            sms,
            primary,
        } => {
            let c = hub::contacts::Contact {
                facility_id: facility.to_string(),
                name,
                phone,
                email,
                sms_opt_in: sms,
                is_primary: primary,
            };
            hub::contacts::upsert_contact(&mut db, &c).await?;
            println!("{} is a contact of {facility}", c.name);
        }
        ContactsAction::List { facility, json } => {
            let list =
                hub::contacts::list_contacts(&db, facility.as_ref().map(|f| f.as_str())).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<24} {:<24} {:<16} {:<28} {:<4} primary",
                    "facility", "name", "phone", "email", "sms"
                );
                for c in list {
                    println!(
                        "{:<24} {:<24} {:<16} {:<28} {:<4} {}",
                        c.facility_id,
                        c.name,
                        c.phone.unwrap_or_default(),
                        c.email.unwrap_or_default(),
                        if c.sms_opt_in { "yes" } else { "no" },
                        if c.is_primary { "yes" } else { "" }
                    );
                }
            }
        }
        ContactsAction::Remove { facility, name } => {
            hub::contacts::remove_contact(&db, facility.as_str(), &name).await?;
            println!("{name} removed from {facility}");
        }
    }
    Ok(())
}

async fn routes(cfg: &HubConfig, action: RoutesAction) -> anyhow::Result<()> {
    let db = hub::db::connect_and_migrate(&cfg.database).await?;
    match action {
        RoutesAction::Add {
            facility,
            channel,
            target,
        } => {
            hub::contacts::add_route(cfg, &db, facility.as_str(), &channel, &target).await?;
            println!("{facility}'s alerts on {channel} also go to its own target");
        }
        RoutesAction::List { facility, json } => {
            let list =
                hub::contacts::list_routes(&db, facility.as_ref().map(|f| f.as_str())).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                for r in list {
                    println!("{:<24} {:<16} {}", r.facility_id, r.channel, r.target);
                }
            }
        }
        RoutesAction::Remove { facility, channel } => {
            let n = hub::contacts::remove_route(&db, facility.as_str(), &channel).await?;
            println!("{n} route(s) of {facility} on {channel} removed");
        }
    }
    Ok(())
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

async fn token(cfg: &HubConfig, action: TokenAction) -> anyhow::Result<()> {
    let db = hub::db::connect_and_migrate(&cfg.database).await?;
    match action {
        TokenAction::Create {
            facility,
            tenant,
            name,
            expires,
        } => {
            let expires_at = hub::enroll::parse_expiry(&expires, chrono::Utc::now())
                .map_err(anyhow::Error::msg)?;
            let name = name.unwrap_or_else(|| facility.to_string());
            anyhow::ensure!(
                !name.is_empty() && name.len() <= 200 && !name.chars().any(|c| c.is_control()),
                "--name: 1 to 200 characters, no control characters"
            );
            let (id, token) =
                hub::enroll::create_token(&db, &facility, &tenant, &name, expires_at).await?;
            // The token alone on stdout (for scripts); the rest on stderr.
            println!("{token}");
            eprintln!(
                "token {id} for {facility} ({tenant}), valid until {}; shown once, store it now",
                expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
        }
        TokenAction::List { json } => {
            let tokens = hub::enroll::list_tokens(&db).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tokens)?);
            } else {
                println!(
                    "{:<6} {:<28} {:<24} {:<8} {:<20} used by",
                    "id", "facility", "tenant", "status", "expires"
                );
                for t in tokens {
                    println!(
                        "{:<6} {:<28} {:<24} {:<8} {:<20} {}",
                        t.id,
                        t.facility_id,
                        t.tenant_id,
                        t.status,
                        t.expires_at.format("%Y-%m-%d %H:%M:%S"),
                        t.used_by.unwrap_or_default()
                    );
                }
            }
        }
        TokenAction::Revoke { id } => {
            hub::enroll::revoke_token(&db, id).await?;
            println!("token {id} revoked");
        }
    }
    Ok(())
}

/// The password from stdin's first line, or a new random one (printed by the caller).
fn password_from(stdin: bool) -> anyhow::Result<(String, bool)> {
    if stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        let p = line.trim_end_matches(['\r', '\n']).to_string();
        Ok((p, false))
    } else {
        Ok((hub::enroll::new_password(), true))
    }
}

async fn operator(cfg: &HubConfig, action: OperatorAction) -> anyhow::Result<()> {
    use hub::web::operators;
    let mut db = hub::db::connect_and_migrate(&cfg.database).await?;
    match action {
        OperatorAction::Add {
            name,
            tenant,
            password_stdin,
            no_password,
        } => {
            let password = if no_password {
                None
            } else {
                Some(password_from(password_stdin)?)
            };
            operators::add(
                &db,
                &name,
                tenant.as_ref(),
                password.as_ref().map(|p| p.0.as_str()),
            )
            .await?;
            let scope = tenant
                .map(|t| format!("tenant {t}"))
                .unwrap_or_else(|| "every tenant".into());
            match password {
                Some((p, true)) => {
                    println!("{p}");
                    eprintln!("operator {name} added ({scope}); the password above is shown once");
                }
                _ => eprintln!("operator {name} added ({scope})"),
            }
        }
        OperatorAction::Password {
            name,
            password_stdin,
        } => {
            let (p, made) = password_from(password_stdin)?;
            operators::set_password(&mut db, &name, &p).await?;
            if made {
                println!("{p}");
            }
            eprintln!("password of {name} changed; its sessions ended");
        }
        OperatorAction::Token {
            name,
            expires,
            label,
        } => {
            let expires_at = hub::enroll::parse_expiry(&expires, chrono::Utc::now())
                .map_err(anyhow::Error::msg)?;
            let (id, token) = operators::create_token(&db, &name, &label, expires_at).await?;
            println!("{token}");
            eprintln!(
                "token {id} of {name}, valid until {}; shown once, store it now",
                expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
        }
        OperatorAction::Revoke { id } => {
            operators::revoke_token(&db, id).await?;
            println!("operator token {id} revoked");
        }
        OperatorAction::List { json } => {
            let list = operators::list(&db).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                println!(
                    "{:<24} {:<24} {:<9} {:<9} tokens (id status expires)",
                    "operator", "tenant", "password", "sessions"
                );
                for o in list {
                    let tokens: Vec<String> = o
                        .tokens
                        .iter()
                        .map(|t| {
                            format!("{} {} {}", t.id, t.status, t.expires_at.format("%Y-%m-%d"))
                        })
                        .collect();
                    println!(
                        "{:<24} {:<24} {:<9} {:<9} {}",
                        o.name,
                        o.tenant_id.as_deref().unwrap_or("(all)"),
                        if o.password { "yes" } else { "no" },
                        o.active_sessions,
                        tokens.join(", ")
                    );
                }
            }
        }
        OperatorAction::Remove { name } => {
            operators::remove(&db, &name).await?;
            println!("operator {name} removed");
        }
    }
    Ok(())
}

async fn edges(cfg: &HubConfig, json: bool, action: Option<EdgesAction>) -> anyhow::Result<()> {
    let mut db = hub::db::connect_and_migrate(&cfg.database).await?;
    if let Some(EdgesAction::Decommission { facility }) = &action {
        hub::enroll::decommission(cfg, &mut db, facility).await?;
        println!(
            "decommissioned {facility}; the hub's next reconcile (within {} s) drops the regional's subscription",
            cfg.reconcile.interval_secs
        );
        return Ok(());
    }
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
                    to_char(offline_since, 'YYYY-MM-DD HH24:MI:SS'), last_error, last_latency_ms,
                    node, replication_conninfo IS NOT NULL, agent_version,
                    lag_up_seconds, lag_up_bytes, retained_wal_bytes,
                    lag_down_seconds, lag_down_bytes, master_retained_bytes,
                    to_char(lag_sampled_at, 'YYYY-MM-DD HH24:MI:SS'), lag_incident_id IS NOT NULL,
                    host(tunnel_address), wireguard_public_key
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
                    "node": r.get::<_, String>(7),
                    "enrolled": r.get::<_, bool>(8),
                    "agent_version": r.get::<_, Option<String>>(9),
                    "lag": {
                        "up": {
                            "seconds": r.get::<_, Option<f64>>(10),
                            "bytes": r.get::<_, Option<i64>>(11),
                            "retained_bytes": r.get::<_, Option<i64>>(12),
                        },
                        "down": {
                            "seconds": r.get::<_, Option<f64>>(13),
                            "bytes": r.get::<_, Option<i64>>(14),
                            "retained_bytes": r.get::<_, Option<i64>>(15),
                        },
                        "sampled_at": r.get::<_, Option<String>>(16),
                        "alerting": r.get::<_, bool>(17),
                    },
                    "tunnel_address": r.get::<_, Option<String>>(18),
                    "wireguard_public_key": r.get::<_, Option<String>>(19),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        println!(
            "{:<28} {:<10} {:<20} {:<20} {:<16} {:<16} last error",
            "facility", "state", "last ok", "offline since", "lag up", "lag down"
        );
        for r in &rows {
            let lag = |s: usize, b: usize| {
                lag_cell(r.get::<_, Option<f64>>(s), r.get::<_, Option<i64>>(b))
            };
            println!(
                "{:<28} {:<10} {:<20} {:<20} {:<16} {:<16} {}",
                r.get::<_, String>(0),
                r.get::<_, String>(2),
                r.get::<_, Option<String>>(3).unwrap_or_else(|| "-".into()),
                r.get::<_, Option<String>>(4).unwrap_or_else(|| "-".into()),
                lag(10, 11) + if r.get::<_, bool>(17) { " !" } else { "" },
                lag(13, 14),
                r.get::<_, Option<String>>(5).unwrap_or_default()
            );
        }
    }
    Ok(())
}
