//! Delivering the alert outbox. Any replica claims due rows (SKIP LOCKED, with a lease) and
//! sends each on its channel concurrently, so one slow or failing channel never delays another.
//! A row is enqueued once per incident, event, channel and recipient (a unique key), and claimed by one
//! replica at a time; a replica that dies between sending and recording leaves the row to be
//! re-sent after its lease expires (PagerDuty's dedup_key makes that harmless there).

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use crate::notify::{Channel, Delivery, Facility, Incident};

/// Attempts (each with the channel's own short retries) before a row is marked failed.
pub const MAX_ATTEMPTS: i32 = 6;
const LEASE: Duration = Duration::from_secs(180);

pub struct Outbox {
    pub replica: String,
    pub channels: HashMap<String, Channel>,
}

struct Claimed {
    id: i64,
    event: String,
    channel: String,
    /// '' for the channel's own target, else a contact or the facility's route.
    recipient: String,
    attempts: i32,
    kind: String,
    detail: Option<String>,
    facility: Facility,
    since: DateTime<Utc>,
    level: i32,
    at: DateTime<Utc>,
}

impl Outbox {
    /// Claim and send what is due. Returns (delivered, not delivered).
    pub async fn dispatch(&self, db: &Client) -> anyhow::Result<(usize, usize)> {
        let rows = db
            .query(
                "WITH due AS (
                     SELECT id FROM agog_hub.alerts
                      WHERE (status = 'pending' AND next_attempt_at <= now())
                         OR (status = 'sending' AND lease_until < now())
                      ORDER BY id LIMIT 100
                      FOR UPDATE SKIP LOCKED)
                 UPDATE agog_hub.alerts a
                    SET status = 'sending', lease_owner = $1, lease_until = now() + make_interval(secs => $2),
                        attempts = a.attempts + 1
                   FROM due, agog_hub.incidents i, agog_hub.edges e
                  WHERE a.id = due.id AND i.id = a.incident_id AND e.facility_id = a.facility_id
                 RETURNING a.id, a.event, a.channel, a.attempts, e.facility_id, e.display_name, e.region,
                           i.since, e.escalations, coalesce(i.closed_at, i.escalated_at, now()),
                           a.recipient, i.kind, i.detail",
                &[&self.replica, &LEASE.as_secs_f64()],
            )
            .await?;
        let claimed: Vec<Claimed> = rows
            .iter()
            .map(|r| Claimed {
                id: r.get(0),
                event: r.get(1),
                channel: r.get(2),
                attempts: r.get(3),
                facility: Facility {
                    id: r.get(4),
                    name: r.get(5),
                    region: r.get(6),
                },
                since: r.get(7),
                level: r.get(8),
                at: r.get(9),
                recipient: r.get(10),
                kind: r.get(11),
                detail: r.get(12),
            })
            .collect();
        let sends = claimed
            .iter()
            .map(|c| async move { (c, self.send(c).await) });
        let results = futures_util::future::join_all(sends).await;
        let (mut ok, mut bad) = (0, 0);
        for (c, delivery) in results {
            match &delivery {
                Delivery::Delivered { .. } => ok += 1,
                _ => bad += 1,
            }
            self.record(db, c, &delivery).await?;
        }
        Ok((ok, bad))
    }

    async fn send(&self, c: &Claimed) -> Delivery {
        let Some(channel) = self.channels.get(&c.channel) else {
            return Delivery::Rejected {
                status: 0,
                body: format!("channel {:?} is not configured on this hub", c.channel),
            };
        };
        let made = if c.kind == "lag" {
            Incident::lag(c.facility.clone(), c.since)
        } else {
            Incident::new(c.facility.clone(), c.since)
        };
        let incident = match made {
            Ok(i) => i,
            Err(e) => {
                return Delivery::Rejected {
                    status: 0,
                    body: e.to_string(),
                }
            }
        };
        let alert = match c.event.as_str() {
            "offline" => incident.offline(),
            "escalated" => incident.escalated(c.level.max(1) as u32, c.at),
            "lag" => incident.lagging(c.detail.as_deref().unwrap_or("over the threshold"), c.at),
            "lag_cleared" => incident.lag_cleared(c.at),
            _ => incident.recovered(c.at),
        };
        channel.send_to(&alert, &c.recipient).await
    }

    async fn record(&self, db: &Client, c: &Claimed, d: &Delivery) -> anyhow::Result<()> {
        match d {
            Delivery::Delivered { provider_id } => {
                db.execute(
                    "UPDATE agog_hub.alerts SET status = 'delivered', provider_id = $2, delivered_at = now(),
                            last_error = NULL, lease_owner = NULL, lease_until = NULL
                      WHERE id = $1 AND lease_owner = $3",
                    &[&c.id, provider_id, &self.replica],
                )
                .await?;
            }
            Delivery::Rejected { status, body } => {
                tracing::error!(channel = %c.channel, facility = %c.facility.id, status, body = %body, "alert rejected");
                db.execute(
                    "UPDATE agog_hub.alerts SET status = 'rejected', last_error = $2, lease_owner = NULL, lease_until = NULL
                      WHERE id = $1 AND lease_owner = $3",
                    &[&c.id, &format!("HTTP {status}: {body}"), &self.replica],
                )
                .await?;
            }
            Delivery::Failed {
                attempts,
                last_error,
            } => {
                let give_up = c.attempts >= MAX_ATTEMPTS;
                tracing::warn!(channel = %c.channel, facility = %c.facility.id, attempts, give_up, error = %last_error, "alert not delivered");
                // 20 s, 40 s, 80 s, ... between outbox attempts.
                let backoff = 10.0 * 2f64.powi(c.attempts.min(8));
                db.execute(
                    "UPDATE agog_hub.alerts
                        SET status = CASE WHEN $4 THEN 'failed' ELSE 'pending' END, last_error = $2,
                            next_attempt_at = now() + make_interval(secs => $5), lease_owner = NULL, lease_until = NULL
                      WHERE id = $1 AND lease_owner = $3",
                    &[&c.id, last_error, &self.replica, &give_up, &backoff],
                )
                .await?;
            }
        }
        Ok(())
    }
}
