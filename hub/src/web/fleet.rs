//! The fleet as the dashboard shows it: this region's edges (the monitor's state, the last
//! /health, the heartbeat's versions, lag) and the other regions' facilities as
//! `facility_status` has them (replicated, so only online, offline since and last sync).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_postgres::GenericClient;

#[derive(Debug, Clone, Serialize)]
pub struct FleetRow {
    pub facility_id: String,
    pub name: String,
    pub region: String,
    pub tenant_id: String,
    /// online | offline | escalated | unknown
    pub state: String,
    /// Watched by this hub (its own region); otherwise known from `facility_status` only.
    pub local: bool,
    pub offline_since: Option<DateTime<Utc>>,
    pub offline_for_seconds: Option<f64>,
    /// Last healthy answer (this region) or last sync (other regions).
    pub last_seen: Option<DateTime<Utc>>,
    pub last_seen_age_seconds: Option<f64>,
    pub last_error: Option<String>,
    pub lag: Lag,
    pub tunnel: Option<Tunnel>,
    pub agent_version: Option<String>,
    pub schema_version: Option<i32>,
    /// healthy | degraded | unhealthy: the last /health that answered.
    pub health: Option<String>,
    /// normal | cloud_fallback (its people work in a cloud workspace; its health alerts are
    /// silenced).
    pub mode: String,
    /// When the cloud fallback was activated (this region's edges).
    pub fallback_since: Option<DateTime<Utc>>,
}

/// Replication lag both ways: up = the edge's operational data to the regional, down = master
/// data to the edge.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Lag {
    pub up_bytes: Option<i64>,
    pub up_seconds: Option<f64>,
    pub down_bytes: Option<i64>,
    pub down_seconds: Option<f64>,
    pub retained_wal_bytes: Option<i64>,
    /// `monitor` (the hub's lag samples), `health` (the edge's last /health), or `none`.
    pub source: &'static str,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Tunnel {
    pub kind: String,
    pub up: bool,
    pub last_handshake_at: Option<String>,
}

/// Columns other migrations add to `agog_hub.edges` (lag sampling). Read through `to_jsonb`,
/// so this hub works with and without them.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SampledLag {
    lag_up_bytes: Option<i64>,
    lag_up_seconds: Option<f64>,
    lag_down_bytes: Option<i64>,
    lag_down_seconds: Option<f64>,
    retained_wal_bytes: Option<i64>,
    lag_sampled_at: Option<String>,
}

/// Lag from the hub's samples when there are any, else from the edge's own last report:
/// up = WAL its slots hold for the regional, down = bytes its subscriptions received but
/// have not applied.
pub(crate) fn lag(edge_row: Option<Value>, replication: Option<&Value>) -> Lag {
    let sampled: SampledLag = edge_row
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default();
    if sampled.lag_sampled_at.is_some() {
        return Lag {
            up_bytes: sampled.lag_up_bytes,
            up_seconds: sampled.lag_up_seconds,
            down_bytes: sampled.lag_down_bytes,
            down_seconds: sampled.lag_down_seconds,
            retained_wal_bytes: sampled.retained_wal_bytes,
            source: "monitor",
        };
    }
    let Some(r) = replication else {
        return Lag {
            source: "none",
            ..Lag::default()
        };
    };
    let sum = |list: &str, field: &str| -> Option<i64> {
        let items = r[list].as_array()?;
        let values: Vec<i64> = items.iter().filter_map(|i| i[field].as_i64()).collect();
        (!values.is_empty()).then(|| values.iter().sum())
    };
    let retained = sum("slots", "retained_bytes");
    Lag {
        up_bytes: retained,
        up_seconds: None,
        down_bytes: sum("subscriptions", "lag_bytes"),
        down_seconds: None,
        retained_wal_bytes: retained,
        source: "health",
    }
}

/// Every facility the operator may see: this region's edges first, then the other regions'.
pub async fn fleet(db: &impl GenericClient, scope: Option<&str>) -> anyhow::Result<Vec<FleetRow>> {
    let local = db
        .query(
            "SELECT e.facility_id, e.display_name, e.region, e.tenant_id, e.state,
                    e.offline_since, extract(epoch FROM now() - e.offline_since)::float8,
                    e.last_ok_at, extract(epoch FROM now() - e.last_ok_at)::float8, e.last_error,
                    coalesce(h.agent_version, e.agent_version, e.last_health->>'version'),
                    coalesce(h.schema_version, (e.last_health->>'schema_version')::int),
                    e.last_health->>'status', e.last_health->'tunnel', e.last_health->'replication',
                    to_jsonb(e) - 'replication_conninfo' - 'last_health',
                    CASE WHEN f.phase IN ('closing', 'restored') OR f.phase IS NULL THEN 'normal'
                         ELSE 'cloud_fallback' END,
                    f.activated_at
               FROM agog_hub.edges e
               LEFT JOIN public.edge_heartbeats h ON h.facility_id = e.facility_id
               LEFT JOIN agog_hub.fallbacks f ON f.facility_id = e.facility_id AND f.phase <> 'restored'
              WHERE $1::text IS NULL OR e.tenant_id = $1
              ORDER BY e.facility_id",
            &[&scope],
        )
        .await?;
    let mut rows: Vec<FleetRow> = local
        .iter()
        .map(|r| {
            let replication: Option<Value> = r.get(14);
            FleetRow {
                facility_id: r.get(0),
                name: r.get(1),
                region: r.get(2),
                tenant_id: r.get(3),
                state: r.get(4),
                local: true,
                offline_since: r.get(5),
                offline_for_seconds: r.get(6),
                last_seen: r.get(7),
                last_seen_age_seconds: r.get(8),
                last_error: r.get(9),
                agent_version: r.get(10),
                schema_version: r.get(11),
                health: r.get(12),
                tunnel: r
                    .get::<_, Option<Value>>(13)
                    .and_then(|t| serde_json::from_value(t).ok()),
                lag: lag(r.get(15), replication.as_ref()),
                mode: r.get(16),
                fallback_since: r.get(17),
            }
        })
        .collect();
    let remote = db
        .query(
            "SELECT fs.facility_id, fs.region, fs.tenant_id, fs.online,
                    fs.offline_since, extract(epoch FROM now() - fs.offline_since)::float8,
                    fs.last_sync, extract(epoch FROM now() - fs.last_sync)::float8, fs.mode
               FROM public.facility_status fs
              WHERE NOT EXISTS (SELECT 1 FROM agog_hub.edges e WHERE e.facility_id = fs.facility_id)
                AND ($1::text IS NULL OR fs.tenant_id = $1)
              ORDER BY fs.region, fs.facility_id",
            &[&scope],
        )
        .await?;
    rows.extend(remote.iter().map(|r| FleetRow {
        facility_id: r.get(0),
        name: r.get(0),
        region: r.get(1),
        tenant_id: r.get(2),
        state: if r.get(3) { "online" } else { "offline" }.into(),
        local: false,
        offline_since: r.get(4),
        offline_for_seconds: r.get(5),
        last_seen: r.get(6),
        last_seen_age_seconds: r.get(7),
        last_error: None,
        lag: Lag {
            source: "none",
            ..Lag::default()
        },
        tunnel: None,
        agent_version: None,
        schema_version: None,
        health: None,
        mode: r.get(8),
        fallback_since: None,
    }));
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lag_prefers_the_hubs_samples_and_falls_back_to_the_edges_report() {
        let replication = json!({
            "slots": [{"name": "us_east_from_la_slot", "retained_bytes": 4096}],
            "subscriptions": [{"name": "la_from_us_east", "lag_bytes": 10}, {"name": "x", "lag_bytes": null}],
        });
        let l = lag(Some(json!({"facility_id": "f"})), Some(&replication));
        assert_eq!(
            (l.source, l.up_bytes, l.down_bytes),
            ("health", Some(4096), Some(10))
        );
        let sampled = json!({"lag_up_bytes": 1, "lag_up_seconds": 0.5, "lag_down_bytes": 2,
                             "lag_down_seconds": 1.5, "lag_sampled_at": "2025-01-01T00:00:00+00:00"});
        let l = lag(Some(sampled), Some(&replication));
        assert_eq!(
            (l.source, l.up_bytes, l.down_seconds),
            ("monitor", Some(1), Some(1.5))
        );
        assert_eq!(lag(None, None).source, "none");
    }
}
