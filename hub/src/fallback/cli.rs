//! `hub fallback ...`: activate, status, restore-token, reset-password, and the operators who
//! may do it.

use clap::Subcommand;
use sync_core::FacilityId;

use super::{activate, notice, operators, record, restore, Refusal};
use crate::config::HubConfig;

#[derive(Debug, Subcommand)]
pub enum Action {
    /// Every fallback (open and past), or one facility's with its log.
    Status {
        facility: Option<FacilityId>,
        #[arg(long)]
        json: bool,
    },
    /// Switch a facility whose edge is gone to a cloud workspace in the regional database.
    Activate {
        facility: FacilityId,
        /// Why (shown to workers and in the log), e.g. "Fire - building destroyed".
        #[arg(long)]
        reason: String,
        /// How long, in words, e.g. "3-6 months rebuild".
        #[arg(long)]
        expected: String,
        /// A worker to tell by email (repeat; default: the email channel's recipients).
        #[arg(long = "notify")]
        notify: Vec<String>,
        /// Who acts (must hold the right; default: the login name).
        #[arg(long, env = "AGOG_OPERATOR")]
        operator: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// A one-time token that enrolls the facility's rebuilt edge and restores it.
    RestoreToken {
        facility: FacilityId,
        /// How long it is valid: 30m, 24h, 7d, or a time.
        #[arg(long, default_value = "7d")]
        expires: String,
        #[arg(long, env = "AGOG_OPERATOR")]
        operator: Option<String>,
    },
    /// A new password for the facility's workspace role, printed once.
    ResetPassword {
        facility: FacilityId,
        #[arg(long, env = "AGOG_OPERATOR")]
        operator: Option<String>,
    },
    /// Give an operator the right to activate fallbacks and issue restore tokens; prints their
    /// API key once.
    Grant { operator: String },
    /// Take the right away.
    Revoke { operator: String },
    /// Operators who hold the right.
    Operators,
}

fn who(operator: Option<String>) -> anyhow::Result<String> {
    operator
        .or_else(operators::default_cli_operator)
        .ok_or_else(|| anyhow::anyhow!("name the operator with --operator (or AGOG_OPERATOR)"))
}

fn refused(r: Refusal) -> anyhow::Error {
    anyhow::anyhow!("{}", r.message)
}

pub async fn run(cfg: &HubConfig, action: Action) -> anyhow::Result<()> {
    match action {
        Action::Status { facility, json } => status(cfg, facility, json).await,
        Action::Activate {
            facility,
            reason,
            expected,
            notify,
            operator,
            json,
        } => {
            let a = activate::activate(
                cfg,
                activate::Request {
                    facility,
                    reason,
                    expected_duration: expected,
                    notify,
                    operator: who(operator)?,
                },
            )
            .await
            .map_err(refused)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&a)?);
            } else {
                let fb = &a.fallback;
                println!(
                    "{} {} ({}): phase {}",
                    if a.resumed {
                        "resumed cloud fallback of"
                    } else {
                        "cloud fallback for"
                    },
                    fb.facility_id,
                    fb.display_name,
                    fb.phase.as_str()
                );
                println!("workspace: {}", a.workspace_address);
                println!(
                    "role: {}  password: {}  (shown once; `hub fallback reset-password` makes a new one)",
                    a.workspace_role, a.workspace_password
                );
                println!(
                    "all data is current as of {}",
                    fb.last_data_at
                        .map(notice::when)
                        .unwrap_or_else(|| "-".into())
                );
                println!(
                    "health alerts of {} are silenced; its state still shows",
                    fb.facility_id
                );
            }
            if !a.complete {
                anyhow::bail!(
                    "the activation is recorded but not finished: {} (`hub serve` finishes it; or run this again)",
                    a.fallback.waiting_for.as_deref().unwrap_or("see `hub fallback status`")
                );
            }
            Ok(())
        }
        Action::RestoreToken {
            facility,
            expires,
            operator,
        } => {
            let expires_at = crate::enroll::parse_expiry(&expires, chrono::Utc::now())
                .map_err(anyhow::Error::msg)?;
            let t = restore::issue_token(cfg, &facility, expires_at, &who(operator)?)
                .await
                .map_err(refused)?;
            // Publish the restore at once when no `hub serve` is busy (it would within its interval).
            if let Err(e) = crate::regional::reconcile_once(cfg).await {
                tracing::warn!(error = %format!("{e:#}"), "regional reconcile after the restore token");
            }
            println!("{}", t.token);
            eprintln!(
                "restore token {} for {facility}, valid until {}; shown once. Put it in the rebuilt box's /etc/agog/edge.toml ([enroll] bootstrap_token) and start it: it enrolls, takes every row back, and the hub hands the facility back to it",
                t.id,
                t.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            );
            Ok(())
        }
        Action::ResetPassword { facility, operator } => {
            let (role, password) = activate::reset_password(cfg, &facility, &who(operator)?)
                .await
                .map_err(refused)?;
            println!("role: {role}  password: {password}");
            Ok(())
        }
        Action::Grant { operator } => {
            let db = crate::db::connect_and_migrate(&cfg.database).await?;
            let by = operators::default_cli_operator().unwrap_or_else(|| "unknown".into());
            let key = operators::grant(&db, &operator, &format!("{by} (hub cli)"))
                .await
                .map_err(refused)?;
            println!("{key}");
            eprintln!("{operator} may activate cloud fallbacks and issue restore tokens; the API key above is shown once");
            Ok(())
        }
        Action::Revoke { operator } => {
            let db = crate::db::connect_and_migrate(&cfg.database).await?;
            operators::revoke(&db, &operator).await.map_err(refused)?;
            println!("{operator} may no longer activate cloud fallbacks");
            Ok(())
        }
        Action::Operators => {
            let db = crate::db::connect_and_migrate(&cfg.database).await?;
            for o in operators::list(&db).await? {
                println!(
                    "{:<32} granted by {} at {}",
                    o.operator,
                    o.granted_by,
                    notice::when(o.granted_at)
                );
            }
            Ok(())
        }
    }
}

async fn status(cfg: &HubConfig, facility: Option<FacilityId>, json: bool) -> anyhow::Result<()> {
    let db = crate::db::connect_and_migrate(&cfg.database).await?;
    let list = record::list(&db, facility.as_ref().map(|f| f.as_str())).await?;
    if let Some(f) = &facility {
        let Some(fb) = list.first() else {
            if json {
                println!("null");
                return Ok(());
            }
            println!("{f}: mode normal, never in cloud fallback");
            return Ok(());
        };
        let log = record::history(&db, fb.id).await?;
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({ "fallback": fb, "log": log }))?
            );
            return Ok(());
        }
        println!(
            "{} ({}): mode {}, phase {}",
            fb.facility_id,
            fb.display_name,
            fb.mode,
            fb.phase.as_str()
        );
        println!(
            "  reason: {}; expected: {}",
            fb.reason, fb.expected_duration
        );
        println!(
            "  activated by {} at {}; all data was current as of {}",
            fb.activated_by,
            notice::when(fb.activated_at),
            fb.last_data_at
                .map(notice::when)
                .unwrap_or_else(|| "-".into())
        );
        if fb.alerts_silenced {
            println!("  health alerts silenced (the facility is known to be gone)");
        }
        if let Some(w) = &fb.waiting_for {
            println!("  waiting for: {w}");
        }
        println!("  log:");
        for e in log {
            println!(
                "    {}  {:<28} {:<40} {}",
                notice::when(e.at),
                e.actor,
                e.step,
                e.detail
            );
        }
        return Ok(());
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    println!(
        "{:<28} {:<14} {:<13} {:<20} by",
        "facility", "mode", "phase", "since"
    );
    for fb in list {
        println!(
            "{:<28} {:<14} {:<13} {:<20} {}",
            fb.facility_id,
            fb.mode,
            fb.phase.as_str(),
            fb.activated_at.format("%Y-%m-%d %H:%M:%S"),
            fb.activated_by
        );
    }
    Ok(())
}
