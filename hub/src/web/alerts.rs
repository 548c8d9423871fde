//! The alert log: every alert the outbox enqueued, with its channel, recipient, outcome and
//! time; newest first.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

#[derive(Debug, Clone, Serialize)]
pub struct AlertRow {
    pub id: i64,
    pub facility_id: String,
    /// offline | escalated | recovered
    pub event: String,
    pub channel: String,
    /// Who it went to, when the channel records it (`agog_hub.alerts.recipient`).
    pub recipient: Option<String>,
    /// pending | sending | delivered | rejected | failed
    pub outcome: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub age_seconds: f64,
}

/// The newest `limit` alerts the operator may see; only `facility`'s when given.
pub async fn alerts(
    db: &impl GenericClient,
    scope: Option<&str>,
    facility: Option<&str>,
    limit: i64,
) -> anyhow::Result<Vec<AlertRow>> {
    let rows = db
        .query(
            "SELECT a.id, a.facility_id, a.event, a.channel, to_jsonb(a)->>'recipient', a.status,
                    a.attempts, a.last_error, a.created_at, a.delivered_at,
                    extract(epoch FROM now() - coalesce(a.delivered_at, a.created_at))::float8
               FROM agog_hub.alerts a
               JOIN agog_hub.edges e ON e.facility_id = a.facility_id
              WHERE ($1::text IS NULL OR e.tenant_id = $1) AND ($2::text IS NULL OR a.facility_id = $2)
              ORDER BY a.id DESC
              LIMIT $3",
            &[&scope, &facility, &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| AlertRow {
            id: r.get(0),
            facility_id: r.get(1),
            event: r.get(2),
            channel: r.get(3),
            recipient: r.get(4),
            outcome: r.get(5),
            attempts: r.get(6),
            last_error: r.get(7),
            created_at: r.get(8),
            delivered_at: r.get(9),
            age_seconds: r.get(10),
        })
        .collect())
}
