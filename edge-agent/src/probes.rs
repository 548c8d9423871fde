//! The probes behind `/health`: PostgreSQL, slots, subscriptions, disk, reconcile. Run on a
//! schedule with statement timeouts; `/health` serves the last result, so it answers in
//! microseconds even while PostgreSQL hangs.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sync_core::health::{
    HealthReport, PostgresHealth, ReplicationHealth, SlotHealth, Status, SubscriptionHealth,
};
use tokio_postgres::Client;

use crate::state::AgentState;

/// A subscription error newer than this makes the edge degraded.
const RECENT_ERROR: Duration = Duration::from_secs(300);
/// No message (not even a keepalive, sent every 30 s) from the publisher for this long: stale.
const SILENT_PUBLISHER_SECS: f64 = 120.0;
/// Retained WAL above this share of `max_slot_wal_keep_size`: degraded, well before the bound.
const WAL_WARN_SHARE: f64 = 0.5;
/// Less free disk than this share: degraded.
const DISK_WARN_SHARE: f64 = 0.10;

async fn probe_client(state: &AgentState) -> Result<Client, String> {
    let cfg = &state.config;
    let timeout = Duration::from_millis(cfg.health.probe_timeout_ms);
    let conninfo = format!(
        "{} connect_timeout={}",
        cfg.local_conninfo(),
        timeout.as_secs().max(1)
    );
    let client = tokio::time::timeout(timeout, sync_core::connect(&conninfo))
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| sync_core::apply::describe(&e))?;
    client
        .batch_execute(&format!(
            "SET statement_timeout = {}",
            cfg.health.probe_timeout_ms
        ))
        .await
        .map_err(|e| sync_core::apply::describe(&e))?;
    Ok(client)
}

struct DbFacts {
    version: String,
    schema_version: Option<i32>,
    has_identity: bool,
    wal_keep_limit_bytes: Option<i64>,
    slots: Vec<SlotHealth>,
    subscriptions: Vec<SubscriptionHealth>,
}

async fn read_facts(c: &Client) -> Result<DbFacts, tokio_postgres::Error> {
    let version: String = c.query_one("SHOW server_version", &[]).await?.get(0);
    let schema_version = sync_core::schema::current_version(c).await?;
    let has_identity = match schema_version {
        Some(_) => c
            .query_opt("SELECT 1 FROM agog_sync.node_identity", &[])
            .await?
            .is_some(),
        None => false,
    };
    let keep_mb: i64 = c
        .query_one(
            "SELECT setting::bigint FROM pg_settings WHERE name = 'max_slot_wal_keep_size'",
            &[],
        )
        .await?
        .get(0);
    let slots = sync_core::catalog::read_slots(c)
        .await?
        .into_iter()
        .filter(|(_, s)| s.slot_type == "logical")
        .map(|(name, s)| SlotHealth {
            name,
            active: s.active,
            retained_bytes: s.retained_bytes,
            wal_status: s.wal_status,
            lag_bytes: s.lag_bytes,
            replay_lag_seconds: s.replay_lag_seconds,
        })
        .collect();
    let subscriptions = c
        .query(
            "SELECT s.subname::text, s.subenabled, w.pid IS NOT NULL,
                    to_char(w.last_msg_receipt_time AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'),
                    extract(epoch FROM now() - w.last_msg_receipt_time)::float8,
                    coalesce(st.apply_error_count, 0), coalesce(st.sync_error_count, 0),
                    pg_wal_lsn_diff(w.received_lsn, w.latest_end_lsn)::bigint
               FROM pg_subscription s
               LEFT JOIN pg_stat_subscription w ON w.subid = s.oid AND w.relid IS NULL
               LEFT JOIN pg_stat_subscription_stats st ON st.subid = s.oid
              WHERE s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())
              ORDER BY 1",
            &[],
        )
        .await?
        .iter()
        .map(|r| SubscriptionHealth {
            name: r.get(0),
            enabled: r.get(1),
            worker_running: r.get(2),
            last_message_at: r.get(3),
            last_message_age_seconds: r.get(4),
            apply_errors: r.get(5),
            sync_errors: r.get(6),
            lag_bytes: r.get(7),
        })
        .collect();
    Ok(DbFacts {
        version,
        schema_version,
        has_identity,
        wal_keep_limit_bytes: (keep_mb >= 0).then_some(keep_mb << 20),
        slots,
        subscriptions,
    })
}

/// Run every probe once and build the report.
pub async fn probe(state: &AgentState) -> HealthReport {
    let cfg = &state.config;
    let deadline = Duration::from_millis(cfg.health.probe_timeout_ms * 2);
    let facts = match tokio::time::timeout(deadline, async {
        let c = probe_client(state).await?;
        read_facts(&c)
            .await
            .map_err(|e| sync_core::apply::describe(&e))
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err(format!("PostgreSQL did not answer within {deadline:?}")),
    };
    let disk = crate::disk::usage(&cfg.postgres.data_dir);
    let reconcile = state.reconcile.lock().unwrap().clone();
    let now = Instant::now();
    let (postgres, schema_version, has_identity, replication) = match facts {
        Ok(f) => {
            // Remember when each subscription's error count last grew.
            let mut marks = state.error_marks.lock().unwrap();
            for s in &f.subscriptions {
                let total = s.apply_errors + s.sync_errors;
                let e = marks
                    .entry(s.name.clone())
                    .or_insert((total, now - RECENT_ERROR * 2));
                if total > e.0 {
                    *e = (total, now);
                }
            }
            (
                PostgresHealth {
                    up: true,
                    version: Some(f.version),
                    disk_free_bytes: disk.map(|d| d.0),
                    disk_total_bytes: disk.map(|d| d.1),
                    restarts: state.server.restarts.load(Ordering::SeqCst),
                    error: None,
                },
                f.schema_version,
                f.has_identity,
                ReplicationHealth {
                    wal_keep_limit_bytes: f.wal_keep_limit_bytes,
                    slots: f.slots,
                    subscriptions: f.subscriptions,
                },
            )
        }
        Err(e) => (
            PostgresHealth {
                up: false,
                version: None,
                disk_free_bytes: disk.map(|d| d.0),
                disk_total_bytes: disk.map(|d| d.1),
                restarts: state.server.restarts.load(Ordering::SeqCst),
                error: Some(e),
            },
            None,
            false,
            ReplicationHealth {
                wal_keep_limit_bytes: None,
                slots: vec![],
                subscriptions: vec![],
            },
        ),
    };
    let recent_errors: Vec<String> = {
        let marks = state.error_marks.lock().unwrap();
        marks
            .iter()
            .filter(|(_, (_, at))| now.duration_since(*at) < RECENT_ERROR)
            .map(|(name, _)| name.clone())
            .collect()
    };
    let mut report = HealthReport {
        status: Status::Healthy,
        reasons: vec![],
        facility_id: cfg.facility.to_string(),
        node: cfg.node_name().map(|n| n.to_string()).unwrap_or_default(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        uptime_seconds: state.started.elapsed().as_secs(),
        checked_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        schema_version,
        postgres,
        replication,
        reconcile,
        tunnel: state.tunnel.lock().unwrap().clone(),
    };
    let (status, reasons) = classify(&report, has_identity, &recent_errors);
    report.status = status;
    report.reasons = reasons;
    report
}

/// The status and its reasons, worst first. Pure, so the rules are tested without a database.
pub fn classify(
    r: &HealthReport,
    has_identity: bool,
    recent_errors: &[String],
) -> (Status, Vec<String>) {
    let mut unhealthy = Vec::new();
    let mut degraded = Vec::new();
    if !r.postgres.up {
        unhealthy.push(format!(
            "PostgreSQL is down: {}",
            r.postgres.error.as_deref().unwrap_or("no answer")
        ));
    } else {
        match r.schema_version {
            None => unhealthy.push("the sync schema is not installed yet".into()),
            Some(v) if v < sync_core::schema::latest_version() => degraded.push(format!(
                "schema v{v} is behind this agent's v{}",
                sync_core::schema::latest_version()
            )),
            _ => {}
        }
        if r.schema_version.is_some() && !has_identity {
            unhealthy.push("the node identity is not set (no reconcile has succeeded)".into());
        }
    }
    for s in &r.replication.slots {
        match s.wal_status.as_deref() {
            Some("lost") => unhealthy.push(format!(
                "slot {} lost its WAL: the regional must resync",
                s.name
            )),
            Some("unreserved") => {
                degraded.push(format!("slot {} is past max_slot_wal_keep_size", s.name))
            }
            _ => {}
        }
        if let (Some(ret), Some(limit)) = (s.retained_bytes, r.replication.wal_keep_limit_bytes) {
            if limit > 0 && ret as f64 > limit as f64 * WAL_WARN_SHARE {
                degraded.push(format!(
                    "slot {} retains {} MB of WAL, over {:.0}% of the {} MB bound (is the regional offline?)",
                    s.name,
                    ret >> 20,
                    WAL_WARN_SHARE * 100.0,
                    limit >> 20
                ));
            }
        }
    }
    for s in &r.replication.subscriptions {
        if !s.enabled {
            degraded.push(format!("subscription {} is disabled", s.name));
        } else if !s.worker_running {
            degraded.push(format!(
                "subscription {} has no running apply worker",
                s.name
            ));
        } else if s
            .last_message_age_seconds
            .is_some_and(|a| a > SILENT_PUBLISHER_SECS)
        {
            degraded.push(format!(
                "subscription {}: nothing from the publisher for {:.0} s",
                s.name,
                s.last_message_age_seconds.unwrap_or_default()
            ));
        }
        if recent_errors.contains(&s.name) {
            degraded.push(format!(
                "subscription {} reported apply errors in the last 5 minutes",
                s.name
            ));
        }
    }
    if let (Some(free), Some(total)) = (r.postgres.disk_free_bytes, r.postgres.disk_total_bytes) {
        if total > 0 && (free as f64) < total as f64 * DISK_WARN_SHARE {
            degraded.push(format!(
                "disk almost full: {} MB free of {} MB",
                free >> 20,
                total >> 20
            ));
        }
    }
    if r.postgres.up {
        if let Some(e) = &r.reconcile.error {
            degraded.push(format!("reconcile failing: {e}"));
        }
        for b in &r.reconcile.blocked {
            degraded.push(format!("reconcile waiting: {b}"));
        }
    }
    if let Some(t) = &r.tunnel {
        if !t.up {
            degraded.push(format!(
                "{} tunnel down: {}",
                t.kind,
                t.error.as_deref().unwrap_or("no recent handshake")
            ));
        }
    }
    let status = if !unhealthy.is_empty() {
        Status::Unhealthy
    } else if !degraded.is_empty() {
        Status::Degraded
    } else {
        Status::Healthy
    };
    unhealthy.extend(degraded);
    (status, unhealthy)
}
