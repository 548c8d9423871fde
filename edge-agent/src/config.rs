//! `/etc/agog/edge.toml`: every setting, its default, and a clear error (file, line, key) for a
//! bad one.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sync_core::{FacilityId, NodeName, RegionId, TenantId};

pub const DEFAULT_PATH: &str = "/etc/agog/edge.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeConfig {
    /// This box's facility: `facility-la-001`.
    pub facility: FacilityId,
    pub tenant: TenantId,
    pub region: RegionId,
    /// Node name in the topology; default: the facility id (when it fits in 24 characters).
    pub node: Option<NodeName>,
    #[serde(default)]
    pub postgres: PostgresConfig,
    #[serde(default)]
    pub health: HealthConfig,
    #[serde(default)]
    pub reconcile: ReconcileConfig,
    /// The regional side, for an edge set up by hand. Once the edge is enrolled, the
    /// enrollment state provides it instead.
    pub upstream: Option<UpstreamConfig>,
    /// Enroll with the hub (at the start of `run`, or with `edge-agent enroll`).
    pub enroll: Option<EnrollConfig>,
    /// Bring up the tunnel the hub assigned at enrollment, and watch it (`crate::tunnel`).
    pub tunnel: Option<TunnelConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelKind {
    Wireguard,
    Openvpn,
    Ipsec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelConfig {
    /// `wireguard` (the kind the hub hands out settings for).
    pub kind: TunnelKind,
    /// Default `agogwg0`.
    #[serde(default = "default_tunnel_interface")]
    pub interface: String,
    /// `auto` (kernel WireGuard, else userspace), `kernel` or `userspace`.
    #[serde(default = "default_tunnel_backend")]
    pub backend: sync_core::wg::BackendChoice,
    /// The userspace implementation. Default `wireguard-go`.
    #[serde(default = "default_wireguard_go")]
    pub wireguard_go: PathBuf,
    /// How often the tunnel is checked. Default 5 s.
    #[serde(default = "default_tunnel_check")]
    pub check_interval_secs: u64,
    /// Down when the last handshake is older than this (WireGuard re-handshakes every 2
    /// minutes while traffic flows, keepalives keep traffic flowing). Default 180 s.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_secs: u64,
    /// OpenVPN: the client binary. Default `openvpn`.
    #[serde(default = "default_openvpn")]
    pub openvpn: PathBuf,
    /// OpenVPN: the CA that signed the server's certificate, this box's certificate (CN: its
    /// facility id) and key, and the `tls-crypt` key (PEM files).
    pub ca: Option<PathBuf>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub tls_crypt: Option<PathBuf>,
    /// OpenVPN: the server certificate's name (`verify-x509-name`). Default `hub`.
    #[serde(default = "default_server_name")]
    pub server_name: String,
    /// IPsec: strongSwan's charon. Default `/usr/sbin/charon-systemd`.
    #[serde(default = "default_charon")]
    pub charon: PathBuf,
}

fn default_charon() -> PathBuf {
    "/usr/sbin/charon-systemd".into()
}

fn default_openvpn() -> PathBuf {
    "openvpn".into()
}
fn default_server_name() -> String {
    "hub".into()
}

fn default_tunnel_interface() -> String {
    "agogwg0".into()
}
fn default_tunnel_backend() -> sync_core::wg::BackendChoice {
    sync_core::wg::BackendChoice::Auto
}
fn default_wireguard_go() -> PathBuf {
    "wireguard-go".into()
}
fn default_tunnel_check() -> u64 {
    5
}
fn default_handshake_timeout() -> u64 {
    180
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollConfig {
    /// The hub's API, e.g. `https://hub.us-east.example:8443`.
    pub hub_url: String,
    /// The one-time bootstrap token (`agog_bt_...`); or put it in `bootstrap_token_file`.
    pub bootstrap_token: Option<String>,
    pub bootstrap_token_file: Option<PathBuf>,
    /// PEM of the hub's CA. Only this CA is trusted for the hub.
    pub ca_cert: PathBuf,
    /// Where the enrollment (and the keys it made) are kept, root only (0700). Default
    /// `/var/lib/agog/enroll`: a folder of its own, because the PostgreSQL data directory
    /// (`/var/lib/agog/pgdata`) must stay reachable by the server's own user.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// How the hub and the regional reach this box (its tunnel address), e.g. `10.8.0.12`.
    pub advertise_host: String,
}

fn default_state_dir() -> PathBuf {
    "/var/lib/agog/enroll".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PostgresMode {
    /// The agent runs initdb, writes the settings and supervises the server.
    Managed,
    /// The server is run by the system (e.g. Debian's postgresql@16-main); the agent connects.
    External,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostgresConfig {
    /// Default `managed`.
    pub mode: PostgresMode,
    /// Default `/usr/lib/postgresql/16/bin`.
    pub bin_dir: PathBuf,
    /// Default `/var/lib/agog/pgdata`.
    pub data_dir: PathBuf,
    /// The OS user the server runs as when the agent runs as root. Default `postgres`.
    pub os_user: String,
    /// Default 5432.
    pub port: u16,
    /// Addresses the server listens on, besides the tunnel address. Default `["127.0.0.1"]`.
    pub listen_addresses: Vec<String>,
    /// Unix socket directory, private to root and the server user. Default `/run/agog-pg`.
    pub socket_dir: PathBuf,
    /// Default `agog`.
    pub database: String,
    /// Default `postgres`.
    pub superuser: String,
    /// `max_slot_wal_keep_size` in MB; 0 derives it from the disk (a fifth of the
    /// filesystem, between 256 MB and 32 GB). Default 0.
    pub wal_keep_mb: u64,
    /// Extra `postgresql.conf` settings, e.g. `{ shared_buffers = "256MB" }`.
    pub settings: BTreeMap<String, String>,
    /// External mode: how to reach the server, libpq form. Default: the socket above.
    pub conninfo: Option<String>,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            mode: PostgresMode::Managed,
            bin_dir: "/usr/lib/postgresql/16/bin".into(),
            data_dir: "/var/lib/agog/pgdata".into(),
            os_user: "postgres".into(),
            port: 5432,
            listen_addresses: vec!["127.0.0.1".into()],
            socket_dir: "/run/agog-pg".into(),
            database: "agog".into(),
            superuser: "postgres".into(),
            wal_keep_mb: 0,
            settings: BTreeMap::new(),
            conninfo: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthConfig {
    /// Default `0.0.0.0:4010`.
    pub listen: SocketAddr,
    /// How often the probes behind `/health` run. Default 5 s.
    pub probe_interval_secs: u64,
    /// Statement timeout of each probe query. Default 2000 ms.
    pub probe_timeout_ms: u64,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            listen: "0.0.0.0:4010".parse().unwrap(),
            probe_interval_secs: 5,
            probe_timeout_ms: 2000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReconcileConfig {
    /// Default 30 s.
    pub interval_secs: u64,
    /// Heartbeat row period. Default 5 s.
    pub heartbeat_secs: u64,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            interval_secs: 30,
            heartbeat_secs: 5,
        }
    }
}

/// The regional side of this edge: who subscribes to it and whom it subscribes to.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The regional node that subscribes to this edge's operational data.
    pub regional_node: NodeName,
    /// The only address the replication role may connect from (the hub/regional, via the tunnel).
    pub regional_address: String,
    /// The node publishing master data to this edge (the regional itself in the shared layout).
    pub master_node: NodeName,
    /// How to reach it (libpq form, with the credentials the hub handed out).
    pub master_conninfo: String,
    /// The role the regional logs in with to subscribe. Default `agog_replication`.
    #[serde(default = "default_replication_role")]
    pub replication_role: String,
    /// Its password (written by enrollment; 0600).
    pub replication_password_file: PathBuf,
    /// Set on a box rebuilt after a cloud fallback (enrolled with a restore token): how it
    /// subscribes to the regional's restore publication of its facility's rows.
    #[serde(default)]
    pub restore_conninfo: Option<String>,
}

fn default_replication_role() -> String {
    "agog_replication".into()
}

impl EdgeConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let cfg: EdgeConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.node_name()?;
        if let Some(u) = &cfg.upstream {
            u.master_conninfo
                .parse::<tokio_postgres::Config>()
                .map_err(|e| format!("upstream.master_conninfo is invalid: {e}"))?;
            if let Some(r) = &u.restore_conninfo {
                r.parse::<tokio_postgres::Config>()
                    .map_err(|e| format!("upstream.restore_conninfo is invalid: {e}"))?;
            }
            if !u
                .replication_role
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return Err(
                    "upstream.replication_role: lowercase letters, digits and _ only".into(),
                );
            }
        }
        if let Some(e) = &cfg.enroll {
            if !e.hub_url.starts_with("https://") {
                return Err("enroll.hub_url must be an https:// URL".into());
            }
            if e.bootstrap_token.is_some() == e.bootstrap_token_file.is_some() {
                return Err(
                    "enroll: set exactly one of bootstrap_token and bootstrap_token_file".into(),
                );
            }
        }
        Ok(cfg)
    }

    pub fn node_name(&self) -> Result<NodeName, String> {
        match &self.node {
            Some(n) => Ok(n.clone()),
            None => NodeName::parse(self.facility.as_str()).map_err(|e| {
                format!("set `node` (the facility id does not make a node name: {e})")
            }),
        }
    }

    /// How the agent reaches its own database.
    pub fn local_conninfo(&self) -> String {
        match &self.postgres.conninfo {
            Some(c) => c.clone(),
            None => format!(
                "host={} port={} dbname={} user={}",
                self.postgres.socket_dir.display(),
                self.postgres.port,
                self.postgres.database,
                self.postgres.superuser
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str =
        "facility = \"facility-la-001\"\ntenant = \"tenant-foo-inc\"\nregion = \"us-east\"\n";

    #[test]
    fn defaults() {
        let c = EdgeConfig::parse(MIN).unwrap();
        assert_eq!(c.postgres.port, 5432);
        assert_eq!(c.health.listen.port(), 4010);
        assert_eq!(c.reconcile.interval_secs, 30);
        assert_eq!(c.node_name().unwrap().as_str(), "facility-la-001");
        assert_eq!(
            c.local_conninfo(),
            "host=/run/agog-pg port=5432 dbname=agog user=postgres"
        );
    }

    #[test]
    fn a_wrong_key_names_the_key_and_the_line() {
        let e = EdgeConfig::parse(&format!("{MIN}[postgres]\nprot = 5433\n")).unwrap_err();
        assert!(e.contains("unknown field `prot`"), "{e}");
        assert!(e.contains("line 5"), "{e}");
    }

    #[test]
    fn enroll_section() {
        let base = format!(
            "{MIN}[enroll]\nhub_url = \"https://hub:8443\"\nca_cert = \"/etc/agog/hub-ca.pem\"\nadvertise_host = \"10.8.0.12\"\n"
        );
        let c = EdgeConfig::parse(&format!("{base}bootstrap_token = \"agog_bt_x\"\n")).unwrap();
        let e = c.enroll.unwrap();
        assert_eq!(e.state_dir, PathBuf::from("/var/lib/agog/enroll"));
        let err = EdgeConfig::parse(&base).unwrap_err();
        assert!(err.contains("exactly one of bootstrap_token"), "{err}");
        let err = EdgeConfig::parse(
            &format!("{base}bootstrap_token = \"x\"\n").replace("https://", "http://"),
        )
        .unwrap_err();
        assert!(err.contains("https://"), "{err}");
    }

    #[test]
    fn a_bad_facility_is_refused() {
        let e = EdgeConfig::parse(&MIN.replace("facility-la-001", "LA 1")).unwrap_err();
        assert!(e.contains("invalid facility id"), "{e}");
    }
}
