//! Replication lag of every edge, both directions, sampled by one replica at a time (an
//! advisory lock on the regional database), kept as the latest figures on `agog_hub.edges`
//! plus a bounded history, and alerted on when it stays over a threshold.
//!
//! Up (operational data, edge -> regional): bytes and retained WAL come from the edge's own
//! `/health` (the regional's slot on the edge, recorded by the monitor's checks); seconds are
//! the larger of the walsender's replay lag there and the age of the newest heartbeat the
//! regional has applied (minus the heartbeat interval) — so a subscription that is silently
//! stuck shows as lag even while the edge answers.
//! Down (master data, master -> edge): the edge's slot on the master-data publisher, read
//! here (bytes unconfirmed, retained WAL, replay lag while connected; when not connected, how
//! long ago the edge's subscription last heard from the master, as the edge reported it).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio_postgres::Client;

use crate::config::{HubConfig, LagConfig};
use crate::monitor::{enqueue, update_facility_status};

/// Held by the replica that samples lag ("AGOGHUBL").
pub const LAG_LOCK_KEY: i64 = 0x4147_4f47_4855_424c;

/// One edge's figures in one sample.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EdgeLag {
    pub up_bytes: Option<i64>,
    pub up_seconds: Option<f64>,
    pub down_bytes: Option<i64>,
    pub down_seconds: Option<f64>,
    pub retained: Option<i64>,
    pub master_retained: Option<i64>,
}

/// What the monitor last recorded from the edge's `/health`, and what the regional knows.
#[derive(Debug, Clone, Default)]
pub struct EdgeFacts {
    /// Seconds since the newest heartbeat from the edge applied in the regional.
    pub heartbeat_age: Option<f64>,
    /// The edge's report, when recent enough to trust.
    pub slot_lag: Option<i64>,
    pub slot_retained: Option<i64>,
    pub slot_replay: Option<f64>,
    pub slot_active: Option<bool>,
    pub down_age: Option<f64>,
}

/// The master's view of the edge's slot there.
#[derive(Debug, Clone, Default)]
pub struct MasterSlot {
    pub active: bool,
    pub lag_bytes: Option<i64>,
    pub retained_bytes: Option<i64>,
    pub replay_lag_seconds: Option<f64>,
}

/// Combine the sources into one sample (pure).
pub fn combine(f: &EdgeFacts, m: Option<&MasterSlot>, heartbeat_secs: f64) -> EdgeLag {
    let hb = f.heartbeat_age.map(|a| (a - heartbeat_secs).max(0.0));
    let replay = match f.slot_active {
        Some(true) => Some(f.slot_replay.unwrap_or(0.0)),
        _ => None,
    };
    let up_seconds = match (hb, replay) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let down_seconds = match m {
        Some(s) if s.active => Some(s.replay_lag_seconds.unwrap_or(0.0)),
        _ => f.down_age,
    };
    EdgeLag {
        up_bytes: f.slot_lag,
        up_seconds,
        down_bytes: m.and_then(|s| s.lag_bytes),
        down_seconds,
        retained: f.slot_retained,
        master_retained: m.and_then(|s| s.retained_bytes),
    }
}

/// Which thresholds the sample passes, in words for the alert; empty when none.
pub fn over_thresholds(l: &EdgeLag, c: &LagConfig) -> Vec<String> {
    let mut why = Vec::new();
    for (dir, secs, bytes) in [
        (
            "operational data (edge -> regional)",
            l.up_seconds,
            l.up_bytes,
        ),
        (
            "master data (regional -> edge)",
            l.down_seconds,
            l.down_bytes,
        ),
    ] {
        if let Some(s) = secs.filter(|s| *s > c.max_seconds) {
            why.push(format!(
                "{dir} is {} behind (threshold {})",
                human_secs(s),
                human_secs(c.max_seconds)
            ));
        }
        if let Some(b) = bytes.filter(|b| *b > c.max_bytes) {
            why.push(format!(
                "{dir} is {} of WAL behind (threshold {})",
                human_bytes(b),
                human_bytes(c.max_bytes)
            ));
        }
    }
    if let Some(b) = l.retained.filter(|b| *b > c.max_retained_bytes) {
        why.push(format!(
            "the edge keeps {} of WAL for the regional (threshold {})",
            human_bytes(b),
            human_bytes(c.max_retained_bytes)
        ));
    }
    if let Some(b) = l.master_retained.filter(|b| *b > c.max_retained_bytes) {
        why.push(format!(
            "the master-data publisher keeps {} of WAL for the edge (threshold {})",
            human_bytes(b),
            human_bytes(c.max_retained_bytes)
        ));
    }
    why
}

fn human_secs(s: f64) -> String {
    crate::notify::alert::human_duration(Duration::from_secs_f64(s.max(0.0)))
}

fn human_bytes(b: i64) -> String {
    const MIB: f64 = 1024.0 * 1024.0;
    let b = b as f64;
    if b >= 1024.0 * MIB {
        format!("{:.1} GiB", b / 1024.0 / MIB)
    } else {
        format!("{:.0} MiB", b / MIB)
    }
}

pub struct Sampler {
    cfg: Arc<HubConfig>,
    channels: Vec<(String, &'static str)>,
    last_history: Option<DateTime<Utc>>,
}

impl Sampler {
    pub fn new(cfg: Arc<HubConfig>) -> Sampler {
        let channels = cfg
            .alerts
            .channels
            .iter()
            .map(|c| (c.name.clone(), c.channel.kind()))
            .collect();
        Sampler {
            cfg,
            channels,
            last_history: None,
        }
    }

    /// The master's slots, keyed by name (the regional itself in the shared layout).
    async fn master_slots(&self, regional: &Client) -> anyhow::Result<HashMap<String, MasterSlot>> {
        let read = |slots: std::collections::BTreeMap<String, sync_core::catalog::SlotState>| {
            slots
                .into_iter()
                .map(|(name, s)| {
                    (
                        name,
                        MasterSlot {
                            active: s.active,
                            lag_bytes: s.lag_bytes,
                            retained_bytes: s.retained_bytes,
                            replay_lag_seconds: s.replay_lag_seconds,
                        },
                    )
                })
                .collect()
        };
        if self.cfg.separate_master() {
            let master = sync_core::connect(self.cfg.master_admin())
                .await
                .map_err(|e| {
                    anyhow::anyhow!("connect to the master: {}", sync_core::apply::describe(&e))
                })?;
            Ok(read(sync_core::catalog::read_slots(&master).await?))
        } else {
            Ok(read(sync_core::catalog::read_slots(regional).await?))
        }
    }

    /// One sample of every edge: latest figures, history when due, lag incidents and alerts,
    /// and `facility_status` (its last sync moves with every heartbeat).
    pub async fn sample(&mut self, db: &mut Client) -> anyhow::Result<usize> {
        let lag = self.cfg.lag.clone();
        let master_slots = match self.master_slots(db).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "master-data slots not read; down lag unknown this round");
                HashMap::new()
            }
        };
        let has_heartbeats: bool = db
            .query_one(
                "SELECT to_regclass('public.edge_heartbeats') IS NOT NULL",
                &[],
            )
            .await?
            .get(0);
        let heartbeat_age = if has_heartbeats {
            "(SELECT extract(epoch FROM now() - h.beat_at)::float8 FROM public.edge_heartbeats h WHERE h.facility_id = e.facility_id)"
        } else {
            "NULL::float8"
        };
        // A report older than two check intervals and a timeout is an old edge's word.
        let fresh = (self.cfg.monitor.interval_secs * 2 + self.cfg.monitor.timeout_secs) as f64;
        let rows = db
            .query(
                &format!(
                    "SELECT e.facility_id, e.node, {heartbeat_age},
                            e.edge_report_at > now() - make_interval(secs => $1),
                            e.edge_slot_lag_bytes, e.edge_slot_retained_bytes, e.edge_slot_replay_seconds,
                            e.edge_slot_active, e.edge_down_age_seconds,
                            e.lag_over_count, e.lag_under_count, e.lag_incident_id, e.state
                       FROM agog_hub.edges e ORDER BY e.facility_id"
                ),
                &[&fresh],
            )
            .await?;
        let master = self.cfg.master_node();
        let now = Utc::now();
        let mut ids = Vec::with_capacity(rows.len());
        let mut samples = Vec::with_capacity(rows.len());
        let mut over_counts = Vec::new();
        let mut under_counts = Vec::new();
        let mut to_open = Vec::new();
        let mut to_close = Vec::new();
        for r in &rows {
            let facility: String = r.get(0);
            let Ok(node) = sync_core::NodeName::parse(r.get::<_, &str>(1)) else {
                continue;
            };
            let trusted = r.get::<_, Option<bool>>(3).unwrap_or(false);
            let facts = EdgeFacts {
                heartbeat_age: r.get(2),
                slot_lag: r.get::<_, Option<i64>>(4).filter(|_| trusted),
                slot_retained: r.get::<_, Option<i64>>(5).filter(|_| trusted),
                slot_replay: r.get::<_, Option<f64>>(6).filter(|_| trusted),
                slot_active: r.get::<_, Option<bool>>(7).filter(|_| trusted),
                down_age: r.get::<_, Option<f64>>(8).filter(|_| trusted),
            };
            let slot = sync_core::spec::slot_name(&master, &node);
            let sample = combine(&facts, master_slots.get(&slot), lag.heartbeat_secs);
            let why = over_thresholds(&sample, &lag);
            let (mut over, mut under): (i32, i32) = (r.get(9), r.get(10));
            if why.is_empty() {
                (over, under) = (0, under.saturating_add(1));
            } else {
                (over, under) = (over.saturating_add(1), 0);
            }
            let incident: Option<i64> = r.get(11);
            let online = r.get::<_, &str>(12) == "online";
            let need = lag.samples.max(1) as i32;
            // An offline edge has its own alert; lag is for edges that answer but fall behind.
            if incident.is_none() && online && over >= need {
                to_open.push((facility.clone(), why.join("; ")));
            } else if incident.is_some() && under >= need {
                to_close.push((facility.clone(), incident.unwrap()));
            }
            ids.push(facility);
            samples.push(sample);
            over_counts.push(over);
            under_counts.push(under);
        }
        let col = |f: fn(&EdgeLag) -> Option<i64>| samples.iter().map(f).collect::<Vec<_>>();
        let colf = |f: fn(&EdgeLag) -> Option<f64>| samples.iter().map(f).collect::<Vec<_>>();
        let (up_b, down_b, ret, mret) = (
            col(|s| s.up_bytes),
            col(|s| s.down_bytes),
            col(|s| s.retained),
            col(|s| s.master_retained),
        );
        let (up_s, down_s) = (colf(|s| s.up_seconds), colf(|s| s.down_seconds));
        db.execute(
            "UPDATE agog_hub.edges e
                SET lag_up_bytes = u.up_b, lag_up_seconds = u.up_s, lag_down_bytes = u.down_b,
                    lag_down_seconds = u.down_s, retained_wal_bytes = u.ret, master_retained_bytes = u.mret,
                    lag_over_count = u.over, lag_under_count = u.under, lag_sampled_at = $10
               FROM unnest($1::text[], $2::int8[], $3::float8[], $4::int8[], $5::float8[], $6::int8[],
                           $7::int8[], $8::int4[], $9::int4[])
                    AS u(facility_id, up_b, up_s, down_b, down_s, ret, mret, over, under)
              WHERE e.facility_id = u.facility_id",
            &[&ids, &up_b, &up_s, &down_b, &down_s, &ret, &mret, &over_counts, &under_counts, &now],
        )
        .await?;
        let every = chrono::Duration::seconds(lag.history_every_secs.max(1) as i64);
        if self.last_history.is_none() {
            self.last_history = db
                .query_one("SELECT max(sampled_at) FROM agog_hub.lag_samples", &[])
                .await?
                .get(0);
        }
        if self.last_history.is_none_or(|t| now - t >= every) {
            db.execute(
                "INSERT INTO agog_hub.lag_samples (facility_id, sampled_at, direction, lag_bytes, lag_seconds, retained_bytes)
                 SELECT u.facility_id, $8, d.direction,
                        CASE d.direction WHEN 'up' THEN u.up_b ELSE u.down_b END,
                        CASE d.direction WHEN 'up' THEN u.up_s ELSE u.down_s END,
                        CASE d.direction WHEN 'up' THEN u.ret ELSE u.mret END
                   FROM unnest($1::text[], $2::int8[], $3::float8[], $4::int8[], $5::float8[], $6::int8[], $7::int8[])
                        AS u(facility_id, up_b, up_s, down_b, down_s, ret, mret)
                  CROSS JOIN (VALUES ('up'), ('down')) AS d(direction)
                 ON CONFLICT DO NOTHING",
                &[&ids, &up_b, &up_s, &down_b, &down_s, &ret, &mret, &now],
            )
            .await?;
            db.execute(
                "DELETE FROM agog_hub.lag_samples WHERE sampled_at < now() - make_interval(hours => $1)",
                &[&(lag.history_hours.min(i32::MAX as u64) as i32)],
            )
            .await?;
            self.last_history = Some(now);
        }
        for (facility, detail) in to_open {
            let tx = db.transaction().await?;
            let id: i64 = tx
                .query_one(
                    "INSERT INTO agog_hub.incidents (facility_id, since, kind, detail) VALUES ($1, now(), 'lag', $2) RETURNING id",
                    &[&facility, &detail],
                )
                .await?
                .get(0);
            tx.execute(
                "UPDATE agog_hub.edges SET lag_incident_id = $2 WHERE facility_id = $1",
                &[&facility, &id],
            )
            .await?;
            enqueue(&tx, &self.channels, id, &facility, "lag").await?;
            tx.commit().await?;
            tracing::warn!(facility, detail, "replication lag over threshold");
        }
        for (facility, id) in to_close {
            let tx = db.transaction().await?;
            tx.execute(
                "UPDATE agog_hub.incidents SET closed_at = now(),
                        outage_seconds = extract(epoch FROM now() - since)::bigint WHERE id = $1",
                &[&id],
            )
            .await?;
            tx.execute(
                "UPDATE agog_hub.edges SET lag_incident_id = NULL WHERE facility_id = $1",
                &[&facility],
            )
            .await?;
            enqueue(&tx, &self.channels, id, &facility, "lag_cleared").await?;
            tx.commit().await?;
            tracing::info!(facility, "replication lag back under the thresholds");
        }
        update_facility_status(db, None).await;
        Ok(ids.len())
    }
}

/// Sample every `[lag] interval_secs` while holding the lag lock, until `stop`.
pub async fn run(cfg: Arc<HubConfig>, mut stop: watch::Receiver<bool>) {
    let interval = Duration::from_secs(cfg.lag.interval_secs.max(1));
    let mut sampler = Sampler::new(cfg.clone());
    let mut db: Option<Client> = None;
    loop {
        if db.as_ref().is_none_or(|c| c.is_closed()) {
            db = match sync_core::connect(&cfg.database).await {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::warn!(error = %sync_core::apply::describe(&e), "lag sampler: no regional database");
                    None
                }
            };
        }
        if let Some(c) = db.as_mut() {
            // Session-level: held while this connection lives, released if the replica dies.
            match c
                .query_one("SELECT pg_try_advisory_lock($1)", &[&LAG_LOCK_KEY])
                .await
            {
                Ok(r) if r.get::<_, bool>(0) => {
                    if let Err(e) = sampler.sample(c).await {
                        tracing::warn!(error = %format!("{e:#}"), "lag sample failed");
                    }
                }
                Ok(_) => {} // another replica samples
                Err(e) => {
                    tracing::warn!(error = %sync_core::apply::describe(&e), "lag lock");
                    db = None;
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stuck_subscription_shows_as_lag_through_the_heartbeat_even_with_an_active_slot() {
        let f = EdgeFacts {
            heartbeat_age: Some(400.0),
            slot_active: Some(true),
            slot_replay: None,
            slot_lag: Some(1024),
            ..Default::default()
        };
        let l = combine(&f, None, 5.0);
        assert_eq!(l.up_seconds, Some(395.0));
        let why = over_thresholds(&l, &LagConfig::default());
        assert_eq!(why.len(), 1, "{why:?}");
        assert!(
            why[0].starts_with("operational data (edge -> regional) is 6min behind"),
            "{why:?}"
        );
    }

    #[test]
    fn down_lag_is_the_replay_lag_while_connected_and_the_edges_word_when_not() {
        let f = EdgeFacts {
            down_age: Some(42.0),
            ..Default::default()
        };
        let connected = MasterSlot {
            active: true,
            lag_bytes: Some(0),
            retained_bytes: Some(4096),
            replay_lag_seconds: None,
        };
        assert_eq!(combine(&f, Some(&connected), 5.0).down_seconds, Some(0.0));
        let gone = MasterSlot {
            active: false,
            lag_bytes: Some(600 << 20),
            ..connected
        };
        let l = combine(&f, Some(&gone), 5.0);
        assert_eq!(l.down_seconds, Some(42.0));
        let why = over_thresholds(&l, &LagConfig::default());
        assert_eq!(
            why,
            vec!["master data (regional -> edge) is 600 MiB of WAL behind (threshold 256 MiB)"]
        );
    }

    #[test]
    fn a_fresh_heartbeat_and_a_caught_up_slot_are_no_lag() {
        let f = EdgeFacts {
            heartbeat_age: Some(3.0),
            slot_active: Some(true),
            slot_lag: Some(0),
            slot_retained: Some(1 << 20),
            ..Default::default()
        };
        let l = combine(&f, None, 5.0);
        assert_eq!(l.up_seconds, Some(0.0));
        assert!(over_thresholds(&l, &LagConfig::default()).is_empty());
    }
}
