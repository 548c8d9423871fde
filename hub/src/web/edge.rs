//! One edge in detail: the monitor's view, its replication slots and subscriptions (from its
//! last /health), retained WAL, conflicts resolved and its incidents with their alerts.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sync_core::NodeName;
use tokio_postgres::GenericClient;

use super::alerts::{alerts, AlertRow};
use super::fleet::{fleet, FleetRow};

#[derive(Debug, Clone, Serialize)]
pub struct EdgeDetail {
    pub row: FleetRow,
    pub node: Option<String>,
    pub enrolled_at: Option<DateTime<Utc>>,
    pub last_check_at: Option<DateTime<Utc>>,
    pub last_latency_ms: Option<i32>,
    /// Why the last /health was not healthy.
    pub reasons: Vec<String>,
    pub health_at: Option<DateTime<Utc>>,
    pub health_age_seconds: Option<f64>,
    pub slots: Vec<Value>,
    pub subscriptions: Vec<Value>,
    pub wal_keep_limit_bytes: Option<i64>,
    pub retained_wal_bytes: Option<i64>,
    pub conflicts: Conflicts,
    pub incidents: Vec<Incident>,
    pub alerts: Vec<AlertRow>,
}

/// Replication conflicts resolved by the owner-wins rule for this edge's data in the regional
/// database (`agog_sync.conflict_log` of the regional's subscription to the edge).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Conflicts {
    pub subscription: Option<String>,
    pub total: i64,
    pub last_24h: i64,
    pub last_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Incident {
    pub id: i64,
    pub since: DateTime<Utc>,
    pub escalated_at: Option<DateTime<Utc>>,
    pub closed_at: Option<DateTime<Utc>>,
    pub outage_seconds: Option<i64>,
}

/// `None` when the facility is unknown or not the operator's tenant's.
pub async fn edge_detail(
    db: &impl GenericClient,
    facility: &str,
    scope: Option<&str>,
    regional_node: &NodeName,
) -> anyhow::Result<Option<EdgeDetail>> {
    let Some(row) = fleet(db, scope)
        .await?
        .into_iter()
        .find(|r| r.facility_id == facility)
    else {
        return Ok(None);
    };
    let mut d = EdgeDetail {
        row,
        node: None,
        enrolled_at: None,
        last_check_at: None,
        last_latency_ms: None,
        reasons: Vec::new(),
        health_at: None,
        health_age_seconds: None,
        slots: Vec::new(),
        subscriptions: Vec::new(),
        wal_keep_limit_bytes: None,
        retained_wal_bytes: None,
        conflicts: Conflicts::default(),
        incidents: Vec::new(),
        alerts: Vec::new(),
    };
    if !d.row.local {
        return Ok(Some(d));
    }
    let e = db
        .query_one(
            "SELECT node, enrolled_at, last_check_at, last_latency_ms, last_health, last_health_at,
                    extract(epoch FROM now() - last_health_at)::float8
               FROM agog_hub.edges WHERE facility_id = $1",
            &[&facility],
        )
        .await?;
    let node: String = e.get(0);
    d.enrolled_at = e.get(1);
    d.last_check_at = e.get(2);
    d.last_latency_ms = e.get(3);
    let health: Option<Value> = e.get(4);
    d.health_at = e.get(5);
    d.health_age_seconds = e.get(6);
    if let Some(h) = &health {
        let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
        d.reasons = list(&h["reasons"])
            .iter()
            .filter_map(|r| r.as_str().map(String::from))
            .collect();
        d.slots = list(&h["replication"]["slots"]);
        d.subscriptions = list(&h["replication"]["subscriptions"]);
        d.wal_keep_limit_bytes = h["replication"]["wal_keep_limit_bytes"].as_i64();
    }
    d.retained_wal_bytes = d.row.lag.retained_wal_bytes;
    if let Ok(edge_node) = NodeName::parse(&node) {
        let sub = sync_core::spec::subscription_name(&edge_node, regional_node);
        // The sync schema may not be there yet on a brand-new regional: no conflicts then.
        if let Ok(c) = db
            .query_one(
                "SELECT count(*), count(*) FILTER (WHERE detected_at > now() - interval '1 day'),
                        max(detected_at)
                   FROM agog_sync.conflict_log WHERE subscription = $1",
                &[&sub],
            )
            .await
        {
            d.conflicts = Conflicts {
                subscription: Some(sub),
                total: c.get(0),
                last_24h: c.get(1),
                last_at: c.get(2),
            };
        }
    }
    d.node = Some(node);
    d.incidents = db
        .query(
            "SELECT id, since, escalated_at, closed_at, outage_seconds FROM agog_hub.incidents
              WHERE facility_id = $1 ORDER BY id DESC LIMIT 20",
            &[&facility],
        )
        .await?
        .iter()
        .map(|r| Incident {
            id: r.get(0),
            since: r.get(1),
            escalated_at: r.get(2),
            closed_at: r.get(3),
            outage_seconds: r.get(4),
        })
        .collect();
    d.alerts = alerts(db, scope, Some(facility), 50).await?;
    Ok(Some(d))
}
