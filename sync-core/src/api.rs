//! The hub's HTTPS API as the edge agent and the hub both see it: request and response bodies,
//! and the refusal body. One definition, so the two sides cannot drift apart.

use serde::{Deserialize, Serialize};

use crate::ids::{FacilityId, NodeName, RegionId, TenantId};

/// `POST` here with an [`EnrollRequest`]; 200 with an [`EnrollResponse`], or an [`ApiError`].
pub const ENROLL_PATH: &str = "/api/v1/enroll";

/// Every bootstrap token starts with this, so a token pasted in the wrong place is recognisable
/// (and secret scanners can find leaked ones).
pub const TOKEN_PREFIX: &str = "agog_bt_";

/// The role the regional logs in with on every edge (created by the agent).
pub const DEFAULT_REPLICATION_USER: &str = "agog_replication";

/// What an edge sends to enroll. Ids travel as plain strings: the hub validates them and says
/// which one is wrong.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The one-time bootstrap token (`agog_bt_...`).
    pub token: String,
    pub facility_id: String,
    /// Node name in the topology; default: the facility id.
    #[serde(default)]
    pub node: Option<String>,
    /// The edge's WireGuard public key, base64 of 32 bytes. The private key never leaves the box.
    pub wireguard_public_key: String,
    /// Password of the role the regional uses to subscribe to the edge, chosen by the edge.
    pub replication_password: String,
    /// For an IPsec tunnel: the edge's raw public key (PEM `PUBLIC KEY`), made on the box.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipsec_public_key: Option<String>,
    /// That role's name. Default `agog_replication`.
    #[serde(default = "default_replication_user")]
    pub replication_user: String,
    /// How the hub reaches the edge's `/health`, e.g. `http://10.8.0.12:4010/health`.
    pub health_url: String,
    /// How the regional reaches the edge's PostgreSQL.
    pub replication_host: String,
    pub replication_port: u16,
    /// The edge's database. Default `agog`.
    #[serde(default = "default_dbname")]
    pub replication_dbname: String,
    pub agent_version: String,
}

fn default_replication_user() -> String {
    DEFAULT_REPLICATION_USER.into()
}

fn default_dbname() -> String {
    "agog".into()
}

/// What the hub answers to a successful enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrollResponse {
    pub facility_id: FacilityId,
    pub tenant_id: TenantId,
    pub region: RegionId,
    pub node: NodeName,
    /// The node that subscribes to the edge's operational data.
    pub regional_node: NodeName,
    /// The node that publishes the edge's master data (the regional itself in the shared layout).
    pub master_node: NodeName,
    /// How the edge subscribes to master data: a LOGIN REPLICATION role of its own.
    pub master_conninfo: String,
    /// The address the regional connects from (for the edge's pg_hba).
    pub regional_address: String,
    /// The hub's clock (RFC 3339), to report the edge's clock skew.
    pub hub_time: String,
    /// Set when the box enrolled with a restore token (its facility is in cloud fallback): how
    /// it subscribes to the regional's restore publication of its facility's rows. Old agents
    /// ignore it; old hubs never send it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_conninfo: Option<String>,
    /// Set when the hub runs a tunnel (`[tunnel]` in hub.toml): this edge's side of it. The
    /// hub then reaches the edge at `address` (its `/health`, its PostgreSQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel: Option<TunnelSettings>,
}

/// The edge's side of its tunnel to the hub, as the hub assigned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelSettings {
    /// `wireguard`.
    pub kind: String,
    /// The edge's tunnel address with the range's prefix, e.g. `10.99.0.2/24`.
    pub address: String,
    /// The hub's (and the regional database's) address in the tunnel, e.g. `10.99.0.1`.
    pub hub_address: String,
    /// The hub's WireGuard public key (base64).
    pub hub_public_key: String,
    /// Where the edge sends its tunnel packets: `host:port` of the hub.
    pub hub_endpoint: String,
    /// What the edge routes into the tunnel (CIDRs).
    pub allowed_ips: Vec<String>,
    /// Keepalive the edge sends (it is the side behind NAT).
    pub keepalive_secs: u16,
}

/// A refusal: a stable machine-readable `error` and a sentence for the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// e.g. `token_used`, `token_expired`, `token_revoked`, `token_unknown`, `facility_mismatch`,
    /// `not_in_fallback`, `facility_in_fallback`, `invalid_request`.
    pub error: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_defaults_and_unknown_fields() {
        let r: EnrollRequest = serde_json::from_str(
            r#"{"token":"agog_bt_x","facility_id":"facility-la-001","wireguard_public_key":"k",
                "replication_password":"p","health_url":"http://h/health","replication_host":"h",
                "replication_port":5432,"agent_version":"0.1.0"}"#,
        )
        .unwrap();
        assert_eq!(r.replication_user, "agog_replication");
        assert_eq!(r.replication_dbname, "agog");
        assert!(r.node.is_none());
        let e = serde_json::from_str::<EnrollRequest>(r#"{"token":"x","colour":1}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown field"), "{e}");
    }

    #[test]
    fn a_response_with_a_bad_id_does_not_parse() {
        let good = EnrollResponse {
            facility_id: "facility-la-001".parse().unwrap(),
            tenant_id: "tenant-foo-inc".parse().unwrap(),
            region: "us-east".parse().unwrap(),
            node: "la".parse().unwrap(),
            regional_node: "us-east".parse().unwrap(),
            master_node: "us-east".parse().unwrap(),
            master_conninfo: "host=h".into(),
            regional_address: "10.8.0.1".into(),
            hub_time: "2026-01-01T00:00:00Z".into(),
            restore_conninfo: None,
            tunnel: None,
        };
        let text = serde_json::to_string(&good).unwrap();
        assert_eq!(serde_json::from_str::<EnrollResponse>(&text).unwrap(), good);
        let bad = text.replace("\"la\"", "\"la; drop\"");
        assert!(serde_json::from_str::<EnrollResponse>(&bad).is_err());
    }
}
