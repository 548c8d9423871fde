//! `edge-agent status`: the running agent's own view (its `/health`), readable or as JSON.

use std::net::SocketAddr;
use std::time::Duration;

use sync_core::health::{HealthReport, Status};

use crate::config::EdgeConfig;

/// Where to reach the agent's `/health` from this box (a wildcard listen means loopback).
pub fn health_url(cfg: &EdgeConfig) -> String {
    let mut addr: SocketAddr = cfg.health.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(if addr.is_ipv4() {
            "127.0.0.1".parse().unwrap()
        } else {
            "::1".parse().unwrap()
        });
    }
    format!("http://{addr}/health")
}

pub async fn fetch(cfg: &EdgeConfig) -> Result<HealthReport, String> {
    let url = health_url(cfg);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .map_err(|e| e.to_string())?;
    let resp = client
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("the agent does not answer at {url}: {e}"))?;
    resp.json::<HealthReport>()
        .await
        .map_err(|e| format!("the agent at {url} sent an unreadable report: {e}"))
}

fn mb(b: Option<i64>) -> String {
    b.map(|b| format!("{:.1} MB", b as f64 / 1048576.0))
        .unwrap_or_else(|| "-".into())
}

pub fn render(r: &HealthReport) -> String {
    let mut s = String::new();
    let mark = match r.status {
        Status::Healthy => "OK",
        Status::Degraded => "DEGRADED",
        Status::Unhealthy => "UNHEALTHY",
    };
    s += &format!("{} ({}): {mark}\n", r.facility_id, r.node);
    for reason in &r.reasons {
        s += &format!("  ! {reason}\n");
    }
    s += &format!(
        "agent      v{}, up {} s, checked {}\n",
        r.version, r.uptime_seconds, r.checked_at
    );
    s += &format!(
        "postgres   {} {}, schema v{}, disk {} free of {}, restarts {}\n",
        if r.postgres.up { "up" } else { "DOWN" },
        r.postgres.version.as_deref().unwrap_or(""),
        r.schema_version
            .map(|v| v.to_string())
            .unwrap_or_else(|| "-".into()),
        mb(r.postgres.disk_free_bytes.map(|b| b as i64)),
        mb(r.postgres.disk_total_bytes.map(|b| b as i64)),
        r.postgres.restarts
    );
    for sl in &r.replication.slots {
        s += &format!(
            "slot       {} {} retains {} ({}), bound {}\n",
            sl.name,
            if sl.active { "active" } else { "INACTIVE" },
            mb(sl.retained_bytes),
            sl.wal_status.as_deref().unwrap_or("-"),
            mb(r.replication.wal_keep_limit_bytes)
        );
    }
    for sub in &r.replication.subscriptions {
        s += &format!(
            "subscribe  {} {}{}, last message {}, errors {} apply / {} sync\n",
            sub.name,
            if sub.enabled { "enabled" } else { "DISABLED" },
            if sub.worker_running {
                ""
            } else {
                " (no worker)"
            },
            sub.last_message_age_seconds
                .map(|a| format!("{a:.0} s ago"))
                .unwrap_or_else(|| "never".into()),
            sub.apply_errors,
            sub.sync_errors
        );
    }
    s += &format!(
        "reconcile  {} at {}\n",
        if r.reconcile.ok { "ok" } else { "FAILING" },
        r.reconcile.last_run_at.as_deref().unwrap_or("never")
    );
    if let Some(t) = &r.tunnel {
        s += &format!(
            "tunnel     {} {}{}{}, last handshake {}{}\n",
            t.kind,
            if t.up { "up" } else { "DOWN" },
            t.interface
                .as_deref()
                .map(|i| format!(" on {i}"))
                .unwrap_or_default(),
            t.address
                .as_deref()
                .map(|a| format!(" ({a} -> {})", t.endpoint.as_deref().unwrap_or("?")))
                .unwrap_or_default(),
            t.last_handshake_at.as_deref().unwrap_or("never"),
            t.error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
    }
    s
}
