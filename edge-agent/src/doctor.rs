//! `edge-agent doctor`: checks each part an edge depends on; every failure comes with a
//! one-line fix. Exit status 1 when any check fails.

use std::time::Duration;

use serde::Serialize;

use crate::config::EdgeConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub outcome: Outcome,
    pub detail: String,
    pub fix: Option<String>,
}

fn ok(name: &str, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        outcome: Outcome::Ok,
        detail: detail.into(),
        fix: None,
    }
}
fn bad(name: &str, outcome: Outcome, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        outcome,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

pub async fn run(cfg: &EdgeConfig) -> Vec<Check> {
    let mut checks = Vec::new();
    match crate::status::fetch(cfg).await {
        Ok(r) => checks.push(ok(
            "agent",
            format!("running, v{}, status {}", r.version, r.status.as_str()),
        )),
        Err(e) => checks.push(bad(
            "agent",
            Outcome::Fail,
            e,
            "systemctl restart agog-edge-agent; journalctl -u agog-edge-agent -n 50",
        )),
    }
    let client = match tokio::time::timeout(
        Duration::from_secs(5),
        sync_core::connect(&cfg.local_conninfo()),
    )
    .await
    {
        Ok(Ok(c)) => {
            checks.push(ok("postgres", "accepting connections"));
            Some(c)
        }
        Ok(Err(e)) => {
            checks.push(bad(
                "postgres",
                Outcome::Fail,
                sync_core::apply::describe(&e),
                "the agent restarts PostgreSQL by itself; if this persists: journalctl -u agog-edge-agent | grep postgres",
            ));
            None
        }
        Err(_) => {
            checks.push(bad(
                "postgres",
                Outcome::Fail,
                "no answer in 5 s",
                "check the disk and memory: df -h; free -m",
            ));
            None
        }
    };
    if let Some(c) = &client {
        checks.extend(database_checks(c).await);
    }
    if let Some((free, total)) = crate::disk::usage(&cfg.postgres.data_dir) {
        let share = free as f64 / total.max(1) as f64;
        if share < 0.10 {
            checks.push(bad(
                "disk",
                Outcome::Fail,
                format!("{} MB free of {} MB", free >> 20, total >> 20),
                "free space on the data disk; WAL kept for an offline regional is bounded by max_slot_wal_keep_size",
            ));
        } else {
            checks.push(ok(
                "disk",
                format!("{} MB free of {} MB", free >> 20, total >> 20),
            ));
        }
    }
    if let Some(up) = &cfg.upstream {
        checks.push(upstream_check(&up.master_conninfo).await);
    } else {
        checks.push(bad(
            "upstream",
            Outcome::Warn,
            "not enrolled: no regional configured",
            "edge-agent enroll (or check the bootstrap token in the config)",
        ));
    }
    checks
}

async fn database_checks(c: &tokio_postgres::Client) -> Vec<Check> {
    let mut out = Vec::new();
    let latest = sync_core::schema::latest_version();
    match sync_core::schema::current_version(c).await {
        Ok(Some(v)) if v >= latest => out.push(ok("schema", format!("v{v}"))),
        Ok(v) => out.push(bad(
            "schema",
            Outcome::Fail,
            format!("v{} installed, this agent ships v{latest}", v.unwrap_or(0)),
            "restart the agent: it applies migrations at start",
        )),
        Err(e) => out.push(bad(
            "schema",
            Outcome::Fail,
            sync_core::apply::describe(&e),
            "restart the agent",
        )),
    }
    let subs = c
        .query(
            "SELECT s.subname::text, s.subenabled, w.pid IS NOT NULL, coalesce(st.apply_error_count, 0)
               FROM pg_subscription s
               LEFT JOIN pg_stat_subscription w ON w.subid = s.oid AND w.relid IS NULL
               LEFT JOIN pg_stat_subscription_stats st ON st.subid = s.oid
              WHERE s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await;
    match subs {
        Ok(rows) if rows.is_empty() => out.push(bad(
            "subscriptions",
            Outcome::Warn,
            "no subscription yet: master data does not arrive",
            "wait for the first reconcile (edge-agent status shows why it waits)",
        )),
        Ok(rows) => {
            for r in rows {
                let (name, enabled, running, errors): (String, bool, bool, i64) =
                    (r.get(0), r.get(1), r.get(2), r.get(3));
                let check = format!("subscription {name}");
                if !enabled {
                    out.push(bad(
                        &check,
                        Outcome::Fail,
                        "disabled: master data has stopped arriving",
                        format!("psql agog -c 'ALTER SUBSCRIPTION {name} ENABLE' (the agent's next reconcile also enables it)"),
                    ));
                } else if !running {
                    out.push(bad(
                        &check,
                        Outcome::Fail,
                        format!("enabled but no apply worker is running ({errors} apply errors so far)"),
                        "journalctl -u agog-edge-agent | grep 'logical replication' shows the error; check the tunnel to the regional",
                    ));
                } else {
                    out.push(ok(
                        &check,
                        format!("streaming ({errors} apply errors so far)"),
                    ));
                }
            }
        }
        Err(e) => out.push(bad(
            "subscriptions",
            Outcome::Fail,
            sync_core::apply::describe(&e),
            "restart the agent",
        )),
    }
    match sync_core::catalog::read_slots(c).await {
        Ok(slots) => {
            for (name, s) in slots {
                let check = format!("slot {name}");
                match s.wal_status.as_deref() {
                    Some("lost") => out.push(bad(&check, Outcome::Fail, "its WAL was removed: the regional can no longer stream from it", "the agent resyncs it; if not: edge-agent doctor again after the next reconcile")),
                    Some("unreserved") => out.push(bad(&check, Outcome::Warn, "past max_slot_wal_keep_size: WAL will be removed at the next checkpoint", "bring the regional's subscription back (tunnel, hub) before it is lost")),
                    _ if !s.active => out.push(bad(&check, Outcome::Warn, format!("inactive, retaining {} MB", s.retained_bytes.unwrap_or(0) >> 20), "the regional is not streaming: check the tunnel and the hub")),
                    _ => out.push(ok(&check, format!("active, retaining {} KB", s.retained_bytes.unwrap_or(0) >> 10))),
                }
            }
        }
        Err(e) => out.push(bad(
            "slots",
            Outcome::Fail,
            sync_core::apply::describe(&e),
            "restart the agent",
        )),
    }
    out
}

/// The master-data publisher is reachable, and our clock agrees with its clock (a box without
/// a clock battery may have booted in 1970).
async fn upstream_check(conninfo: &str) -> Check {
    let connect = tokio::time::timeout(Duration::from_secs(5), sync_core::connect(conninfo)).await;
    let c =
        match connect {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return bad(
                "upstream",
                Outcome::Fail,
                sync_core::apply::describe(&e),
                "check the VPN tunnel and the hub's address (edge-agent status shows the tunnel)",
            ),
            Err(_) => {
                return bad(
                    "upstream",
                    Outcome::Fail,
                    "no answer in 5 s",
                    "check the VPN tunnel (endpoint reachable? handshake?)",
                )
            }
        };
    let local = chrono::Utc::now();
    match c
        .query_one("SELECT extract(epoch FROM now())::float8", &[])
        .await
    {
        Ok(r) => {
            let remote: f64 = r.get(0);
            let skew = local.timestamp_millis() as f64 / 1000.0 - remote;
            if skew.abs() > 5.0 {
                bad(
                    "clock",
                    Outcome::Fail,
                    format!("this box's clock is {skew:+.0} s off the regional's"),
                    "enable time sync: timedatectl set-ntp true",
                )
            } else {
                ok(
                    "upstream",
                    format!(
                        "reachable, clock within {:.1} s of the regional's",
                        skew.abs()
                    ),
                )
            }
        }
        Err(e) => bad(
            "upstream",
            Outcome::Fail,
            sync_core::apply::describe(&e),
            "check the replication credentials from enrollment",
        ),
    }
}

pub fn render(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks {
        let mark = match c.outcome {
            Outcome::Ok => "ok  ",
            Outcome::Warn => "warn",
            Outcome::Fail => "FAIL",
        };
        s += &format!("[{mark}] {}: {}\n", c.name, c.detail);
        if let Some(f) = &c.fix {
            s += &format!("       fix: {f}\n");
        }
    }
    s
}
