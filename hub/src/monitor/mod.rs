//! The health monitor: every edge checked every 30 s by exactly one replica (a lease in the
//! database), each result recorded as it arrives, a state change and its alerts in one
//! transaction, and `facility_status` kept up to date for the other regions.

pub mod check;
pub mod machine;
pub mod outbox;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sync_core::NodeName;
use tokio::sync::{Mutex, Semaphore};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Transaction};

use crate::config::HubConfig;
use crate::metrics::Metrics;
use machine::{EdgeState, Event, Policy, State};

pub struct Monitor {
    pub replica: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub concurrency: usize,
    pub policy: Policy,
    /// Every configured channel (name, kind): each incident alerts on all of them.
    pub channels: Vec<(String, &'static str)>,
    /// The regional and master-data nodes: the names of the edge's slot and subscription.
    regional: NodeName,
    master: NodeName,
    http: reqwest::Client,
    pub metrics: Arc<Metrics>,
}

/// An edge claimed for one check, with the state the claim read (the lease keeps other
/// replicas away, so the state is still ours when the result is recorded).
struct Claimed {
    facility: String,
    url: String,
    names: check::Names,
    state: EdgeState,
    incident: Option<i64>,
}

impl Monitor {
    pub fn new(cfg: &HubConfig, metrics: Arc<Metrics>) -> Monitor {
        let _ = rustls::crypto::ring::default_provider().install_default();
        // A fresh connection per check: one idle socket per edge would hold thousands of file
        // descriptors, and a pooled connection to a half-dead peer hides that it is half dead.
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .expect("HTTP client");
        Monitor {
            replica: cfg.replica_id(),
            interval: Duration::from_secs(cfg.monitor.interval_secs.max(1)),
            timeout: Duration::from_secs(cfg.monitor.timeout_secs.max(1)),
            concurrency: cfg.monitor.concurrency.max(1),
            policy: cfg.monitor.policy(),
            channels: cfg
                .alerts
                .channels
                .iter()
                .map(|c| (c.name.clone(), c.channel.kind()))
                .collect(),
            regional: cfg.node_name(),
            master: cfg.master_node(),
            http,
            metrics,
        }
    }

    /// Claim up to `limit` edges whose check is due (and not leased by another replica),
    /// moving their next check one interval on.
    async fn claim(&self, db: &Client, limit: usize) -> anyhow::Result<Vec<Claimed>> {
        let lease = self.timeout + Duration::from_secs(10);
        let rows = db
            .query(
                "WITH due AS (
                     SELECT facility_id FROM agog_hub.edges
                      WHERE next_check_at <= now() AND (lease_until IS NULL OR lease_until < now())
                      ORDER BY next_check_at
                      LIMIT $2
                      FOR UPDATE SKIP LOCKED)
                 UPDATE agog_hub.edges e
                    SET lease_owner = $1,
                        lease_until = now() + make_interval(secs => $3),
                        -- keep the 30 s rhythm; an edge that fell behind is checked now, then on rhythm
                        next_check_at = greatest(e.next_check_at + make_interval(secs => $4), now())
                   FROM due WHERE e.facility_id = due.facility_id
                 RETURNING e.facility_id, e.health_url, e.node, e.state, e.watched_since, e.last_ok_at,
                           e.consecutive_ok, e.consecutive_failed, e.offline_since, e.escalations, e.incident_id",
                &[&self.replica, &(limit as i64), &(lease.as_secs_f64()), &(self.interval.as_secs_f64())],
            )
            .await?;
        let mut claimed = Vec::with_capacity(rows.len());
        for r in rows {
            let facility: String = r.get(0);
            let node = match NodeName::parse(r.get::<_, &str>(2)) {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(facility, error = %e, "edge row with an invalid node name");
                    continue;
                }
            };
            claimed.push(Claimed {
                names: check::Names {
                    up_slot: sync_core::spec::slot_name(&node, &self.regional),
                    down_subscription: sync_core::spec::subscription_name(&self.master, &node),
                },
                facility,
                url: r.get(1),
                state: EdgeState {
                    state: State::parse(r.get(3)).unwrap_or(State::Unknown),
                    watched_since: r.get(4),
                    last_ok_at: r.get(5),
                    consecutive_ok: r.get::<_, i32>(6) as u32,
                    consecutive_failed: r.get::<_, i32>(7) as u32,
                    offline_since: r.get(8),
                    escalations: r.get::<_, i32>(9) as u32,
                },
                incident: r.get(10),
            });
        }
        Ok(claimed)
    }

    /// Check one claimed edge and record the result.
    async fn check_and_record(&self, db: &Client, transitions: &Mutex<Client>, c: Claimed) {
        let outcome = check::check(&self.http, &c.url, self.timeout, &c.names).await;
        self.metrics.observe_check(outcome.healthy, outcome.latency);
        if let Err(e) = self.record(db, transitions, &c, &outcome).await {
            tracing::warn!(facility = %c.facility, error = %format!("{e:#}"), "could not record a check");
        }
    }

    /// Advance the edge's state machine with one check result. Without an event (nearly
    /// always) that is one statement, pipelined with the other checks' on a shared
    /// connection; a state change and its alerts are one transaction, so they happen
    /// together or not at all.
    async fn record(
        &self,
        db: &Client,
        transitions: &Mutex<Client>,
        c: &Claimed,
        outcome: &check::CheckOutcome,
    ) -> anyhow::Result<Option<Event>> {
        let now = Utc::now();
        let (next, event) = machine::step(&c.state, outcome.healthy, now, &self.policy);
        if event.is_none() && next.state == c.state.state {
            let n = db
                .execute(
                    UPDATE_EDGE,
                    &self
                        .update_params(c, &next, c.incident, now, outcome)
                        .as_slice(),
                )
                .await?;
            if n == 0 {
                tracing::debug!(facility = %c.facility, "lease lost before the result was recorded");
            }
            return Ok(None);
        }
        let mut tdb = transitions.lock().await;
        let tx = tdb.transaction().await?;
        let event = self.transition(&tx, c, outcome, now).await?;
        tx.commit().await?;
        drop(tdb);
        if let Some(e) = &event {
            tracing::info!(facility = %c.facility, event = ?e, replica = %self.replica, "state change");
        }
        update_facility_status(db, Some(&c.facility)).await;
        Ok(event)
    }

    fn update_params<'a>(
        &'a self,
        c: &'a Claimed,
        next: &'a EdgeState,
        incident: Option<i64>,
        now: chrono::DateTime<Utc>,
        outcome: &'a check::CheckOutcome,
    ) -> UpdateParams<'a> {
        let slot = outcome.report.as_ref().and_then(|r| r.up_slot.as_ref());
        UpdateParams {
            facility: &c.facility,
            state: next.state.as_str(),
            last_ok_at: next.last_ok_at,
            consecutive_ok: next.consecutive_ok as i32,
            consecutive_failed: next.consecutive_failed as i32,
            offline_since: next.offline_since,
            escalations: next.escalations as i32,
            incident,
            now,
            error: outcome.error.as_deref(),
            latency_ms: outcome.latency.as_millis().min(i32::MAX as u128) as i32,
            replica: &self.replica,
            reported: outcome.report.is_some(),
            slot_lag: slot.and_then(|s| s.lag_bytes),
            slot_retained: slot.and_then(|s| s.retained_bytes),
            slot_replay: slot.and_then(|s| s.replay_lag_seconds),
            slot_active: slot.map(|s| s.active),
            down_age: outcome.report.as_ref().and_then(|r| r.down_age_seconds),
            body: outcome.body.as_ref(),
        }
    }

    /// A state change: re-read the edge under a row lock (the lease may have been lost),
    /// open or close the incident, enqueue its alerts, store the new state.
    async fn transition(
        &self,
        db: &Transaction<'_>,
        c: &Claimed,
        outcome: &check::CheckOutcome,
        now: chrono::DateTime<Utc>,
    ) -> anyhow::Result<Option<Event>> {
        let facility = c.facility.as_str();
        let Some(row) = db
            .query_opt(
                "SELECT state, watched_since, last_ok_at, consecutive_ok, consecutive_failed, offline_since,
                        escalations, incident_id, lease_owner
                   FROM agog_hub.edges WHERE facility_id = $1 FOR UPDATE",
                &[&facility],
            )
            .await?
        else {
            return Ok(None); // decommissioned meanwhile
        };
        if row.get::<_, Option<String>>(8).as_deref() != Some(self.replica.as_str()) {
            return Ok(None); // our lease expired and another replica owns the edge now
        }
        let state = EdgeState {
            state: State::parse(row.get(0)).unwrap_or(State::Unknown),
            watched_since: row.get(1),
            last_ok_at: row.get(2),
            consecutive_ok: row.get::<_, i32>(3) as u32,
            consecutive_failed: row.get::<_, i32>(4) as u32,
            offline_since: row.get(5),
            escalations: row.get::<_, i32>(6) as u32,
        };
        let mut incident: Option<i64> = row.get(7);
        let (next, event) = machine::step(&state, outcome.healthy, now, &self.policy);
        match &event {
            Some(Event::Offline { since }) => {
                let id: i64 = db
                    .query_one(
                        "INSERT INTO agog_hub.incidents (facility_id, since) VALUES ($1, $2) RETURNING id",
                        &[&facility, since],
                    )
                    .await?
                    .get(0);
                incident = Some(id);
                enqueue(db, &self.channels, id, facility, "offline").await?;
            }
            Some(Event::Escalated { .. }) => {
                if let Some(id) = incident {
                    db.execute(
                        "UPDATE agog_hub.incidents SET escalated_at = now() WHERE id = $1",
                        &[&id],
                    )
                    .await?;
                    enqueue(db, &self.channels, id, facility, "escalated").await?;
                }
            }
            Some(Event::Recovered { outage, .. }) => {
                if let Some(id) = incident.take() {
                    db.execute(
                        "UPDATE agog_hub.incidents SET closed_at = now(), outage_seconds = $2 WHERE id = $1",
                        &[&id, &(outage.as_secs() as i64)],
                    )
                    .await?;
                    enqueue(db, &self.channels, id, facility, "recovered").await?;
                }
            }
            None => {}
        }
        db.execute(
            UPDATE_EDGE,
            &self
                .update_params(c, &next, incident, now, outcome)
                .as_slice(),
        )
        .await?;
        Ok(event)
    }

    /// Claim due edges every `tick` and check them, at most `concurrency` at once; each result
    /// is recorded as soon as it is in, so a slow edge never holds back the others' schedule.
    pub async fn run(
        self: Arc<Self>,
        db: Client,
        transitions: Client,
        tick: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let db = Arc::new(db);
        let transitions = Arc::new(Mutex::new(transitions));
        let slots = Arc::new(Semaphore::new(self.concurrency));
        let mut in_flight = tokio::task::JoinSet::new();
        loop {
            let free = slots.available_permits();
            if free > 0 {
                match self.claim(&db, free).await {
                    Ok(batch) => {
                        for c in batch {
                            let Ok(permit) = slots.clone().acquire_owned().await else {
                                return;
                            };
                            let (me, db, transitions) =
                                (self.clone(), db.clone(), transitions.clone());
                            in_flight.spawn(async move {
                                me.check_and_record(&db, &transitions, c).await;
                                drop(permit);
                            });
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "monitor claim failed")
                    }
                }
            }
            while in_flight.try_join_next().is_some() {}
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.changed() => break,
            }
        }
        // Let checks in flight record their results (their leases would otherwise hold the
        // edges for another replica until they expire).
        let _ = tokio::time::timeout(self.timeout + Duration::from_secs(2), async {
            while in_flight.join_next().await.is_some() {}
        })
        .await;
    }
}

const UPDATE_EDGE: &str = "UPDATE agog_hub.edges
    SET state = $2, last_ok_at = $3, consecutive_ok = $4, consecutive_failed = $5, offline_since = $6,
        escalations = $7, incident_id = $8, last_check_at = $9, last_error = $10, last_latency_ms = $11,
        lease_owner = NULL, lease_until = NULL,
        edge_slot_lag_bytes = CASE WHEN $13 THEN $14 ELSE edge_slot_lag_bytes END,
        edge_slot_retained_bytes = CASE WHEN $13 THEN $15 ELSE edge_slot_retained_bytes END,
        edge_slot_replay_seconds = CASE WHEN $13 THEN $16 ELSE edge_slot_replay_seconds END,
        edge_slot_active = CASE WHEN $13 THEN $17 ELSE edge_slot_active END,
        edge_down_age_seconds = CASE WHEN $13 THEN $18 ELSE edge_down_age_seconds END,
        edge_report_at = CASE WHEN $13 THEN $9 ELSE edge_report_at END,
        last_health = coalesce($19, last_health),
        last_health_at = CASE WHEN $19::jsonb IS NULL THEN last_health_at ELSE $9 END
  WHERE facility_id = $1 AND lease_owner = $12";

/// The parameters of `UPDATE_EDGE`, in order.
struct UpdateParams<'a> {
    facility: &'a str,
    state: &'static str,
    last_ok_at: Option<chrono::DateTime<Utc>>,
    consecutive_ok: i32,
    consecutive_failed: i32,
    offline_since: Option<chrono::DateTime<Utc>>,
    escalations: i32,
    incident: Option<i64>,
    now: chrono::DateTime<Utc>,
    error: Option<&'a str>,
    latency_ms: i32,
    replica: &'a str,
    reported: bool,
    slot_lag: Option<i64>,
    slot_retained: Option<i64>,
    slot_replay: Option<f64>,
    slot_active: Option<bool>,
    down_age: Option<f64>,
    /// The whole /health body, for the dashboard.
    body: Option<&'a serde_json::Value>,
}

impl UpdateParams<'_> {
    fn as_slice(&self) -> [&(dyn ToSql + Sync); 19] {
        [
            &self.facility,
            &self.state,
            &self.last_ok_at,
            &self.consecutive_ok,
            &self.consecutive_failed,
            &self.offline_since,
            &self.escalations,
            &self.incident,
            &self.now,
            &self.error,
            &self.latency_ms,
            &self.replica,
            &self.reported,
            &self.slot_lag,
            &self.slot_retained,
            &self.slot_replay,
            &self.slot_active,
            &self.down_age,
            &self.body,
        ]
    }
}

/// Enqueue one alert per channel and recipient: the channel's own target ('') and the
/// facility's people for that kind of channel (SMS: contacts who opted in; voice: the primary
/// contact; email: every contact with an address) or its own routes (webhooks, PagerDuty
/// keys). Idempotent: the outbox's unique key makes a second enqueue a no-op.
pub async fn enqueue(
    db: &Transaction<'_>,
    channels: &[(String, &'static str)],
    incident: i64,
    facility: &str,
    event: &str,
) -> anyhow::Result<()> {
    let names: Vec<&str> = channels.iter().map(|(n, _)| n.as_str()).collect();
    let kinds: Vec<&str> = channels.iter().map(|(_, k)| *k).collect();
    db.execute(
        "INSERT INTO agog_hub.alerts (incident_id, facility_id, event, channel, recipient)
         SELECT $1, $2, $3, ch.name, r.recipient
           FROM unnest($4::text[], $5::text[]) AS ch(name, kind)
           CROSS JOIN LATERAL (
                 SELECT ''::text AS recipient
           UNION SELECT c.phone FROM agog_hub.contacts c
                  WHERE ch.kind = 'twilio_sms' AND c.facility_id = $2 AND c.sms_opt_in
           UNION SELECT c.phone FROM agog_hub.contacts c
                  WHERE ch.kind = 'twilio_voice' AND c.facility_id = $2 AND c.is_primary AND c.phone IS NOT NULL
           UNION SELECT c.email FROM agog_hub.contacts c
                  WHERE ch.kind = 'email' AND c.facility_id = $2 AND c.email IS NOT NULL
           UNION SELECT fr.target FROM agog_hub.facility_routes fr
                  WHERE fr.facility_id = $2 AND fr.channel = ch.name) r
          -- A facility in cloud fallback is known to be gone: no alert (its state still shows).
          WHERE NOT EXISTS (SELECT 1 FROM agog_hub.fallbacks f
                             WHERE f.facility_id = $2 AND f.phase = ANY ($6::text[]))
         ON CONFLICT ON CONSTRAINT alerts_once DO NOTHING",
        &[
            &incident,
            &facility,
            &event,
            &names,
            &kinds,
            &&crate::fallback::record::SILENCED_PHASES[..],
        ],
    )
    .await?;
    Ok(())
}

/// `facility_status` (replicated to the other regions): online, since when offline, and the
/// last sync, which is the newest heartbeat from the edge actually seen in this database.
/// One facility after its state changed, or every facility (`None`) from the lag sampler.
pub async fn update_facility_status(db: &Client, facility: Option<&str>) {
    let r = db
        .execute(
            "INSERT INTO public.facility_status (region, facility_id, tenant_id, online, last_sync, offline_since, mode, updated_at)
             SELECT e.region, e.facility_id, e.tenant_id, e.state = 'online',
                    (SELECT h.beat_at FROM public.edge_heartbeats h WHERE h.facility_id = e.facility_id),
                    e.offline_since, 'normal', now()
               FROM agog_hub.edges e WHERE $1::text IS NULL OR e.facility_id = $1
             ON CONFLICT (region, facility_id) DO UPDATE
                SET online = EXCLUDED.online, last_sync = EXCLUDED.last_sync,
                    offline_since = EXCLUDED.offline_since, updated_at = now()
              WHERE (facility_status.online, facility_status.last_sync, facility_status.offline_since)
                    IS DISTINCT FROM (EXCLUDED.online, EXCLUDED.last_sync, EXCLUDED.offline_since)",
            &[&facility],
        )
        .await;
    if let Err(e) = r {
        tracing::warn!(?facility, error = %sync_core::apply::describe(&e), "facility_status not updated");
    }
}

/// Add or update an edge the monitor watches.
pub async fn upsert_edge(
    db: &impl tokio_postgres::GenericClient,
    facility: &str,
    node: &str,
    tenant: &str,
    region: &str,
    display_name: &str,
    health_url: &str,
) -> Result<(), tokio_postgres::Error> {
    db.execute(
        "INSERT INTO agog_hub.edges (facility_id, node, tenant_id, region, display_name, health_url)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (facility_id) DO UPDATE
            SET node = EXCLUDED.node, tenant_id = EXCLUDED.tenant_id, region = EXCLUDED.region,
                display_name = EXCLUDED.display_name, health_url = EXCLUDED.health_url",
        &[&facility, &node, &tenant, &region, &display_name, &health_url],
    )
    .await?;
    Ok(())
}
