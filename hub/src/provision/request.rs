//! A provisioning request in the database: made in one transaction with its bootstrap token
//! (a refusal or a crash leaves neither), read back for the pages and the jobs.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sync_core::{FacilityId, NodeName};
use tokio_postgres::{Client, GenericClient};

use super::config::ProvisionConfig;
use super::edge_config::{self, Rendered};
use super::form::Request;
use crate::config::HubConfig;

#[derive(Debug, Clone, Serialize)]
pub struct Provisioned {
    pub facility_id: String,
    pub tenant_id: String,
    pub facility_name: String,
    pub facility_address: String,
    pub shipping_address: String,
    pub network: serde_json::Value,
    pub vpn_type: String,
    pub vpn_endpoint: String,
    pub hardware_size: String,
    pub it_name: String,
    pub it_email: String,
    pub it_phone: String,
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    pub order_status: String,
    pub order_detail: Option<String>,
    pub image_status: String,
    pub image_progress: String,
    pub image_file: Option<String>,
    pub image_sha256: Option<String>,
    pub image_bytes: Option<i64>,
    pub image_ready_at: Option<DateTime<Utc>>,
    pub email_status: String,
    pub email_detail: Option<String>,
    pub not_enrolled_alert_at: Option<DateTime<Utc>>,
    pub token_expires_at: DateTime<Utc>,
    /// The edge's state once it enrolled (`agog_hub.edges`): online, offline...; None before.
    pub edge_state: Option<String>,
    pub enrolled_at: Option<DateTime<Utc>>,
    pub last_ok_at: Option<DateTime<Utc>>,
    /// The tunnel address reserved for the box (with `[tunnel]`), and whether the box's key
    /// has joined the hub-side peer (at enrollment).
    pub tunnel_address: Option<String>,
    pub tunnel_key_joined: bool,
    #[serde(skip)]
    pub setup_key: String,
    #[serde(skip)]
    pub edge_config: String,
    #[serde(skip)]
    pub network_config: String,
}

const SELECT: &str = "SELECT p.facility_id, p.tenant_id, p.facility_name, p.facility_address,
        p.shipping_address, p.network, p.vpn_type, p.vpn_endpoint, p.hardware_size, p.it_name,
        p.it_email, p.it_phone, p.requested_by, p.requested_at, p.order_status, p.order_detail,
        p.image_status, p.image_progress, p.image_file, p.image_sha256, p.image_bytes,
        p.image_ready_at, p.email_status, p.email_detail, p.not_enrolled_alert_at, t.expires_at,
        e.state, e.enrolled_at, e.last_ok_at, p.setup_key, p.edge_config,
        p.network_config, host(p.tunnel_address), e.wireguard_public_key IS NOT NULL
   FROM agog_hub.provisioning_requests p
   JOIN agog_hub.bootstrap_tokens t ON t.id = p.token_id
   LEFT JOIN agog_hub.edges e ON e.facility_id = p.facility_id";

fn from_row(r: &tokio_postgres::Row) -> Provisioned {
    Provisioned {
        facility_id: r.get(0),
        tenant_id: r.get(1),
        facility_name: r.get(2),
        facility_address: r.get(3),
        shipping_address: r.get(4),
        network: r.get(5),
        vpn_type: r.get(6),
        vpn_endpoint: r.get(7),
        hardware_size: r.get(8),
        it_name: r.get(9),
        it_email: r.get(10),
        it_phone: r.get(11),
        requested_by: r.get(12),
        requested_at: r.get(13),
        order_status: r.get(14),
        order_detail: r.get(15),
        image_status: r.get(16),
        image_progress: r.get(17),
        image_file: r.get(18),
        image_sha256: r.get(19),
        image_bytes: r.get(20),
        image_ready_at: r.get(21),
        email_status: r.get(22),
        email_detail: r.get(23),
        not_enrolled_alert_at: r.get(24),
        token_expires_at: r.get(25),
        edge_state: r.get(26),
        enrolled_at: r.get(27),
        last_ok_at: r.get(28),
        setup_key: r.get(29),
        edge_config: r.get(30),
        network_config: r.get(31),
        tunnel_address: r.get(32),
        tunnel_key_joined: r.get::<_, Option<bool>>(33).unwrap_or(false),
    }
}

/// Every request the operator may see, newest first.
pub async fn list(
    db: &impl GenericClient,
    scope: Option<&str>,
) -> Result<Vec<Provisioned>, tokio_postgres::Error> {
    Ok(db
        .query(
            &format!("{SELECT} WHERE $1::text IS NULL OR p.tenant_id = $1 ORDER BY p.id DESC"),
            &[&scope],
        )
        .await?
        .iter()
        .map(from_row)
        .collect())
}

pub async fn by_facility(
    db: &impl GenericClient,
    facility: &str,
    scope: Option<&str>,
) -> Result<Option<Provisioned>, tokio_postgres::Error> {
    Ok(db
        .query_opt(
            &format!(
                "{SELECT} WHERE p.facility_id = $1 AND ($2::text IS NULL OR p.tenant_id = $2)"
            ),
            &[&facility, &scope],
        )
        .await?
        .as_ref()
        .map(from_row))
}

/// The request a setup link's key belongs to (the key is the link's only credential).
pub async fn by_setup_key(
    db: &impl GenericClient,
    key: &str,
) -> Result<Option<Provisioned>, tokio_postgres::Error> {
    if !key.starts_with(SETUP_KEY_PREFIX) || key.len() > 100 {
        return Ok(None);
    }
    Ok(db
        .query_opt(&format!("{SELECT} WHERE p.setup_key = $1"), &[&key])
        .await?
        .as_ref()
        .map(from_row))
}

pub const SETUP_KEY_PREFIX: &str = "agog_setup_";

/// Every address of the region's tunnel range is held by an edge or a reservation.
#[derive(Debug)]
pub struct TunnelRangeFull(pub String);

impl std::fmt::Display for TunnelRangeFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "every address of the tunnel range {} is taken: widen [tunnel] range in hub.toml or decommission edges",
            self.0
        )
    }
}

impl std::error::Error for TunnelRangeFull {}

/// The next free `facility-<slug>-<n>` (n from 001) and its node name `<slug>-<n>` (the slug
/// cut to fit a node name's 24 characters), given the ids and node names already taken.
pub fn next_facility_id(slug: &str, taken: &[String]) -> Option<(FacilityId, NodeName)> {
    let short: String = slug.chars().take(19).collect();
    let short = short.trim_end_matches('-');
    (1..=9999).find_map(|n| {
        let id = format!("facility-{slug}-{n:03}");
        let node = format!("{short}-{n:03}");
        if taken.iter().any(|t| *t == id || *t == node) {
            return None;
        }
        Some((FacilityId::parse(&id).ok()?, NodeName::parse(&node).ok()?))
    })
}

/// Record the request with a new facility id and its bootstrap token, in one transaction.
/// Two hubs provisioning the same name at once: the unique facility id makes one retry.
pub async fn create(
    hub: &HubConfig,
    cfg: &ProvisionConfig,
    db: &mut Client,
    r: &Request,
    operator: &str,
) -> anyhow::Result<Provisioned> {
    let slug = super::form::slug(&r.facility_name)
        .ok_or_else(|| anyhow::anyhow!("the facility name has no letter or digit"))?;
    for _ in 0..3 {
        let tx = db.transaction().await?;
        let pattern = format!("facility-{slug}-%");
        let short: String = slug.chars().take(19).collect();
        let node_pattern = format!("{}-%", short.trim_end_matches('-'));
        let taken: Vec<String> = tx
            .query(
                "SELECT facility_id FROM agog_hub.edges WHERE facility_id LIKE $1
                 UNION SELECT facility_id FROM agog_hub.bootstrap_tokens WHERE facility_id LIKE $1
                 UNION SELECT facility_id FROM agog_hub.provisioning_requests WHERE facility_id LIKE $1
                 UNION SELECT facility_id FROM public.facility_status WHERE facility_id LIKE $1
                 UNION SELECT node FROM agog_hub.edges WHERE node LIKE $2
                 UNION SELECT node FROM agog_hub.provisioning_requests WHERE node LIKE $2",
                &[&pattern, &node_pattern],
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        let (facility, node) = next_facility_id(&slug, &taken)
            .ok_or_else(|| anyhow::anyhow!("no free facility id for {slug}"))?;
        let now = Utc::now();
        let expires = now + Duration::days(cfg.token_days.into());
        // The hub-side peer's address, reserved now: the box's key joins it at enrollment.
        let tunnel_address = match &hub.tunnel {
            Some(t) => Some(
                crate::tunnel::assign_address(&tx, t, facility.as_str())
                    .await?
                    .ok_or_else(|| TunnelRangeFull(t.range.clone()))?,
            ),
            None => None,
        };
        let (token_id, token) =
            crate::enroll::create_token(&tx, &facility, &r.tenant, &r.facility_name, expires)
                .await?;
        let files = edge_config::render(
            cfg,
            r,
            &Rendered {
                hub_tunnel: hub.tunnel.is_some(),
                facility_id: facility.to_string(),
                node: node.to_string(),
                region: hub.region.to_string(),
                token,
                token_expires: expires,
                made_at: now,
                tunnel_address,
            },
        )
        .map_err(|e| anyhow::anyhow!(e))?;
        let setup_key = crate::web::auth::random_secret(SETUP_KEY_PREFIX);
        let inserted = tx
            .execute(
                "INSERT INTO agog_hub.provisioning_requests (facility_id, node, tenant_id, facility_name,
                     facility_address, shipping_address, network, vpn_type, vpn_endpoint, hardware_size,
                     it_name, it_email, it_phone, requested_by, token_id, edge_config, network_config,
                     setup_key, order_status, tunnel_address)
                 VALUES ($1, $19, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                         $20::text::inet)
                 ON CONFLICT DO NOTHING",
                &[
                    &facility.as_str(),
                    &r.tenant.as_str(),
                    &r.facility_name,
                    &r.facility_address,
                    &r.shipping_address,
                    &serde_json::to_value(&r.network)?,
                    &r.vpn_type,
                    &r.vpn_endpoint,
                    &r.hardware_size,
                    &r.it_name,
                    &r.it_email,
                    &r.it_phone,
                    &operator,
                    &token_id,
                    &files.edge_toml,
                    &files.network,
                    &setup_key,
                    &if cfg.procurement_webhook.is_some() { "pending" } else { "not_configured" },
                    &node.as_str(),
                    &tunnel_address.map(|a| a.to_string()),
                ],
            )
            .await?;
        if inserted == 0 {
            tx.rollback().await?;
            continue;
        }
        tx.commit().await?;
        tracing::info!(facility = %facility, tenant = %r.tenant, operator, "edge provisioning requested");
        return by_facility(&*db, facility.as_str(), None)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the request vanished"));
    }
    anyhow::bail!("could not find a free facility id for {slug} (too many requests at once)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facility_ids_count_up_from_one() {
        let (f, n) = next_facility_id("la", &[]).unwrap();
        assert_eq!((f.as_str(), n.as_str()), ("facility-la-001", "la-001"));
        let taken = vec!["facility-la-001".to_string(), "la-002".to_string()];
        assert_eq!(
            next_facility_id("la", &taken).unwrap().0.as_str(),
            "facility-la-003"
        );
        // Long names: the node name is cut to fit, the facility id is not.
        let (f, n) = next_facility_id("los-angeles-plant-north-building", &[]).unwrap();
        assert_eq!(f.as_str(), "facility-los-angeles-plant-north-building-001");
        assert_eq!(n.as_str(), "los-angeles-plant-n-001");
    }
}
