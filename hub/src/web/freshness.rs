//! Inventory of any facility with its freshness (the design's `data_freshness`): one query
//! module for the read API (`GET /api/v1/facilities/{id}/inventory`) and the dashboard's
//! inventory page, so both say exactly the same thing.
//!
//! Freshness is the facility's, not the row's: a product whose level has not changed for hours
//! is still live while the facility syncs. The last sync is the newest of the edge heartbeat
//! seen in this database (this region's edges) and `facility_status.last_sync` (replicated
//! from the facility's own region). Data is stale when that is older than `stale_after`, and
//! always while the facility is offline.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;
use uuid::Uuid;

#[derive(Debug, Clone, Serialize)]
pub struct DataFreshness {
    pub is_stale: bool,
    /// Seconds since the last sync (`None`: nothing has arrived from the facility yet).
    pub age_seconds: Option<f64>,
    pub facility_online: bool,
    pub last_sync: Option<DateTime<Utc>>,
    /// "facility-la-001 is OFFLINE. Data is cached from 2025-12-10T14:30:00Z." when offline.
    pub warning: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InventoryItem {
    pub product_id: Uuid,
    pub sku: Option<String>,
    pub product_name: Option<String>,
    pub quantity: f64,
    pub last_updated: DateTime<Utc>,
    pub last_updated_age_seconds: f64,
    pub data_freshness: DataFreshness,
}

#[derive(Debug, Clone, Serialize)]
pub struct FacilityInventory {
    pub facility_id: String,
    pub region: String,
    pub tenant_id: String,
    pub offline_since: Option<DateTime<Utc>>,
    pub data_freshness: DataFreshness,
    pub items: Vec<InventoryItem>,
}

/// The design's rule, with "offline is never live" added.
pub fn freshness(
    facility: &str,
    online: bool,
    last_sync: Option<DateTime<Utc>>,
    age_seconds: Option<f64>,
    stale_after_secs: u64,
) -> DataFreshness {
    let is_stale = !online || age_seconds.is_none_or(|a| a > stale_after_secs as f64);
    let warning = (!online).then(|| match last_sync {
        Some(t) => format!(
            "{facility} is OFFLINE. Data is cached from {}.",
            t.to_rfc3339_opts(SecondsFormat::Secs, true)
        ),
        None => format!("{facility} is OFFLINE. No data has arrived from it yet."),
    });
    DataFreshness {
        is_stale,
        age_seconds,
        facility_online: online,
        last_sync,
        warning,
    }
}

/// The facility's inventory, or `None` when it is unknown or belongs to another tenant than
/// `scope` (the two are not told apart, so a tenant cannot probe for other tenants' ids).
pub async fn facility_inventory(
    db: &impl GenericClient,
    facility: &str,
    scope: Option<&str>,
    stale_after_secs: u64,
) -> anyhow::Result<Option<FacilityInventory>> {
    let Some(f) = db
        .query_opt(
            "WITH known AS (
                 SELECT fs.region, fs.tenant_id, fs.online, fs.last_sync, fs.offline_since
                   FROM public.facility_status fs WHERE fs.facility_id = $1
                 UNION ALL
                 SELECT e.region, e.tenant_id, NULL, NULL, NULL
                   FROM agog_hub.edges e WHERE e.facility_id = $1)
             SELECT k.region, k.tenant_id,
                    -- this region's edges: the monitor's word; other regions: theirs
                    coalesce(e.state = 'online', bool_or(k.online), false),
                    greatest(max(k.last_sync), h.beat_at),
                    coalesce(e.offline_since, max(k.offline_since))
               FROM known k
               LEFT JOIN agog_hub.edges e ON e.facility_id = $1
               LEFT JOIN public.edge_heartbeats h ON h.facility_id = $1
              WHERE $2::text IS NULL OR k.tenant_id = $2
              GROUP BY k.region, k.tenant_id, e.state, e.offline_since, h.beat_at
              LIMIT 1",
            &[&facility, &scope],
        )
        .await?
    else {
        return Ok(None);
    };
    let online: bool = f.get(2);
    let last_sync: Option<DateTime<Utc>> = f.get(3);
    let tenant: String = f.get(1);
    let rows = db
        .query(
            "SELECT il.product_id, p.sku, p.name, il.quantity::float8, il.last_updated,
                    extract(epoch FROM now() - il.last_updated)::float8,
                    extract(epoch FROM now() - $3::timestamptz)::float8
               FROM public.inventory_levels il
               LEFT JOIN public.products p ON p.tenant_id = il.tenant_id AND p.id = il.product_id
              WHERE il.facility_id = $1 AND il.tenant_id = $2
              ORDER BY coalesce(p.name, il.product_id::text)",
            &[&facility, &tenant, &last_sync],
        )
        .await?;
    let age = match rows.first() {
        Some(r) => r.get::<_, Option<f64>>(6),
        None => db
            .query_one(
                "SELECT extract(epoch FROM now() - $1::timestamptz)::float8",
                &[&last_sync],
            )
            .await?
            .get(0),
    };
    let fresh = freshness(facility, online, last_sync, age, stale_after_secs);
    Ok(Some(FacilityInventory {
        facility_id: facility.to_string(),
        region: f.get(0),
        tenant_id: tenant,
        offline_since: f.get(4),
        items: rows
            .iter()
            .map(|r| InventoryItem {
                product_id: r.get(0),
                sku: r.get(1),
                product_name: r.get(2),
                quantity: r.get(3),
                last_updated: r.get(4),
                last_updated_age_seconds: r.get(5),
                data_freshness: fresh.clone(),
            })
            .collect(),
        data_freshness: fresh,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_over_the_threshold_and_always_while_offline() {
        let t = "2025-12-10T14:30:00Z".parse::<DateTime<Utc>>().unwrap();
        let live = freshness("facility-la-001", true, Some(t), Some(12.0), 60);
        assert!(!live.is_stale && live.warning.is_none());
        assert!(freshness("facility-la-001", true, Some(t), Some(61.0), 60).is_stale);
        assert!(freshness("facility-la-001", true, None, None, 60).is_stale);
        let off = freshness("facility-la-001", false, Some(t), Some(5.0), 60);
        assert!(off.is_stale);
        assert_eq!(
            off.warning.as_deref(),
            Some("facility-la-001 is OFFLINE. Data is cached from 2025-12-10T14:30:00Z.")
        );
    }
}
