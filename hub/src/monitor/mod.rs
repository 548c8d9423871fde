//! The health monitor: every edge checked every 30 s by exactly one replica (a lease in the
//! database), its state machine advanced in the same transaction that enqueues the alerts, and
//! `facility_status` kept up to date for the other regions.

pub mod check;
pub mod machine;
pub mod outbox;

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use tokio_postgres::{Client, Transaction};

use crate::config::HubConfig;
use machine::{EdgeState, Event, Policy, State};

pub struct Monitor {
    pub replica: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub concurrency: usize,
    pub policy: Policy,
    /// Channel names every incident alerts on.
    pub channels: Vec<String>,
    http: reqwest::Client,
}

impl Monitor {
    pub fn new(cfg: &HubConfig) -> Monitor {
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
            channels: cfg.alerts.channels.iter().map(|c| c.name.clone()).collect(),
            http,
        }
    }

    /// Claim the edges whose check is due (and not leased by another replica), check them
    /// concurrently, record each result. Returns how many were checked.
    pub async fn round(&self, db: &mut Client) -> anyhow::Result<usize> {
        let lease = self.timeout + Duration::from_secs(10);
        let due = db
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
                 RETURNING e.facility_id, e.health_url",
                &[&self.replica, &(self.concurrency as i64 * 4), &(lease.as_secs_f64()), &(self.interval.as_secs_f64())],
            )
            .await?;
        let checks: Vec<(String, String)> = due.iter().map(|r| (r.get(0), r.get(1))).collect();
        let results: Vec<_> = futures_util::stream::iter(checks)
            .map(|(facility, url)| async move {
                let outcome = check::check(&self.http, &url, self.timeout).await;
                (facility, outcome)
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        let n = results.len();
        for (facility, outcome) in results {
            if let Err(e) = self.record(db, &facility, &outcome).await {
                tracing::warn!(facility = %facility, error = %format!("{e:#}"), "could not record a check");
            }
        }
        Ok(n)
    }

    /// Advance the edge's state machine with one check result; enqueue alerts in the same
    /// transaction, so a state change and its alerts happen together or not at all.
    pub async fn record(
        &self,
        db: &mut Client,
        facility: &str,
        outcome: &check::CheckOutcome,
    ) -> anyhow::Result<Option<Event>> {
        let tx = db.transaction().await?;
        let event = self.record_in_tx(&tx, facility, outcome).await?;
        tx.commit().await?;
        if let Some(e) = &event {
            tracing::info!(facility, event = ?e, replica = %self.replica, "state change");
        }
        self.update_facility_status(db, facility).await;
        Ok(event)
    }

    async fn record_in_tx(
        &self,
        db: &Transaction<'_>,
        facility: &str,
        outcome: &check::CheckOutcome,
    ) -> anyhow::Result<Option<Event>> {
        let Some(row) = db
            .query_opt(
                "SELECT state, watched_since, last_ok_at, consecutive_ok, offline_since, escalations, incident_id, lease_owner
                   FROM agog_hub.edges WHERE facility_id = $1 FOR UPDATE",
                &[&facility],
            )
            .await?
        else {
            return Ok(None); // decommissioned meanwhile
        };
        if row.get::<_, Option<String>>(7).as_deref() != Some(self.replica.as_str()) {
            return Ok(None); // our lease expired and another replica owns the edge now
        }
        let state = EdgeState {
            state: State::parse(row.get(0)).unwrap_or(State::Unknown),
            watched_since: row.get(1),
            last_ok_at: row.get(2),
            consecutive_ok: row.get::<_, i32>(3) as u32,
            offline_since: row.get(4),
            escalations: row.get::<_, i32>(5) as u32,
        };
        let mut incident: Option<i64> = row.get(6);
        let now = Utc::now();
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
                self.enqueue(db, id, facility, "offline").await?;
            }
            Some(Event::Escalated { .. }) => {
                if let Some(id) = incident {
                    db.execute(
                        "UPDATE agog_hub.incidents SET escalated_at = now() WHERE id = $1",
                        &[&id],
                    )
                    .await?;
                    self.enqueue(db, id, facility, "escalated").await?;
                }
            }
            Some(Event::Recovered { outage, .. }) => {
                if let Some(id) = incident.take() {
                    db.execute(
                        "UPDATE agog_hub.incidents SET closed_at = now(), outage_seconds = $2 WHERE id = $1",
                        &[&id, &(outage.as_secs() as i64)],
                    )
                    .await?;
                    self.enqueue(db, id, facility, "recovered").await?;
                }
            }
            None => {}
        }
        db.execute(
            "UPDATE agog_hub.edges
                SET state = $2, last_ok_at = $3, consecutive_ok = $4, offline_since = $5, escalations = $6,
                    incident_id = $7, last_check_at = $8, last_error = $9, last_latency_ms = $10,
                    lease_owner = NULL, lease_until = NULL
              WHERE facility_id = $1",
            &[
                &facility,
                &next.state.as_str(),
                &next.last_ok_at,
                &(next.consecutive_ok as i32),
                &next.offline_since,
                &(next.escalations as i32),
                &incident,
                &now,
                &outcome.error,
                &(outcome.latency.as_millis().min(i32::MAX as u128) as i32),
            ],
        )
        .await?;
        Ok(event)
    }

    async fn enqueue(
        &self,
        db: &Transaction<'_>,
        incident: i64,
        facility: &str,
        event: &str,
    ) -> anyhow::Result<()> {
        for channel in &self.channels {
            // A facility in cloud fallback is known to be gone: no alert (its state still shows).
            db.execute(
                &format!(
                    "INSERT INTO agog_hub.alerts (incident_id, facility_id, event, channel)
                     SELECT $1::bigint, $2::text, $3::text, $4::text WHERE NOT EXISTS (SELECT 1 FROM agog_hub.fallbacks f
                          WHERE f.facility_id = $2 AND f.phase IN {})
                     ON CONFLICT (incident_id, event, channel) DO NOTHING",
                    crate::fallback::record::SILENCED_PHASES_SQL
                ),
                &[&incident, &facility, &event, channel],
            )
            .await?;
        }
        Ok(())
    }

    /// `facility_status` (replicated to the other regions): online, since when offline, and the
    /// last sync, which is the newest heartbeat from the edge actually seen in this database.
    async fn update_facility_status(&self, db: &Client, facility: &str) {
        let r = db
            .execute(
                "INSERT INTO public.facility_status (region, facility_id, tenant_id, online, last_sync, offline_since, mode, updated_at)
                 SELECT e.region, e.facility_id, e.tenant_id, e.state = 'online',
                        (SELECT h.beat_at FROM public.edge_heartbeats h WHERE h.facility_id = e.facility_id),
                        e.offline_since, 'normal', now()
                   FROM agog_hub.edges e WHERE e.facility_id = $1
                 ON CONFLICT (region, facility_id) DO UPDATE
                    SET online = EXCLUDED.online, last_sync = EXCLUDED.last_sync,
                        offline_since = EXCLUDED.offline_since, updated_at = now()
                  WHERE (facility_status.online, facility_status.last_sync, facility_status.offline_since)
                        IS DISTINCT FROM (EXCLUDED.online, EXCLUDED.last_sync, EXCLUDED.offline_since)",
                &[&facility],
            )
            .await;
        if let Err(e) = r {
            tracing::warn!(facility, error = %sync_core::apply::describe(&e), "facility_status not updated");
        }
    }

    /// Rounds every `tick` until `shutdown`.
    pub async fn run(
        self: Arc<Self>,
        mut db: Client,
        tick: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            if let Err(e) = self.round(&mut db).await {
                tracing::warn!(error = %format!("{e:#}"), "monitor round failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.changed() => return,
            }
        }
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
