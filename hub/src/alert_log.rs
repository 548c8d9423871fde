//! The delivery log behind `hub alerts` (and the dashboard): every alert with its channel,
//! recipient, outcome and time, newest first.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

#[derive(Debug, Clone, Serialize)]
pub struct AlertRecord {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub facility_id: String,
    /// offline | escalated | recovered | lag | lag_cleared
    pub event: String,
    pub channel: String,
    /// '' in the table: the channel's own target; else the contact or the facility's route
    /// (routes redacted: a webhook URL is a credential).
    pub recipient: String,
    /// pending | sending | delivered | rejected | failed
    pub status: String,
    pub attempts: i32,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
}

pub async fn recent(
    db: &impl GenericClient,
    facility: Option<&str>,
    limit: i64,
) -> anyhow::Result<Vec<AlertRecord>> {
    Ok(db
        .query(
            "SELECT a.id, a.created_at, a.facility_id, a.event, a.channel,
                    CASE WHEN a.recipient = '' THEN '(channel default)'
                         WHEN a.recipient ~ '^https?://' THEN regexp_replace(a.recipient, '^(https?://[^/]+).*$', '\\1/***')
                         WHEN r.target IS NOT NULL THEN left(a.recipient, 4) || '***'
                         ELSE a.recipient END,
                    a.status, a.attempts, a.last_error, a.delivered_at
               FROM agog_hub.alerts a
               LEFT JOIN agog_hub.facility_routes r
                 ON r.facility_id = a.facility_id AND r.channel = a.channel AND r.target = a.recipient
              WHERE $1::text IS NULL OR a.facility_id = $1
              ORDER BY a.id DESC LIMIT $2",
            &[&facility, &limit.clamp(1, 10_000)],
        )
        .await?
        .iter()
        .map(|r| AlertRecord {
            id: r.get(0),
            created_at: r.get(1),
            facility_id: r.get(2),
            event: r.get(3),
            channel: r.get(4),
            recipient: r.get(5),
            status: r.get(6),
            attempts: r.get(7),
            last_error: r.get(8),
            delivered_at: r.get(9),
        })
        .collect())
}
