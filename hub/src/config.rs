//! `/etc/agog/hub.toml`: every setting with its default; a bad key names itself and its line.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use sync_core::{NodeName, RegionId};

use crate::monitor::machine::Policy;
use crate::notify::ChannelConfig;

pub const DEFAULT_PATH: &str = "/etc/agog/hub.toml";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    pub region: RegionId,
    /// The regional node's name in the topology. Default: the region.
    pub node: Option<NodeName>,
    /// The regional database (operational data and the hub's state), libpq form.
    pub database: String,
    /// This replica's name in leases and logs. Default: `<hostname>-<pid>`.
    pub replica_id: Option<String>,
    #[serde(default)]
    pub monitor: MonitorConfig,
    #[serde(default)]
    pub alerts: AlertsConfig,
    /// The HTTPS API (enrollment). Off when absent.
    pub api: Option<ApiConfig>,
    /// The master-data publisher. Default: the regional database itself (the shared layout).
    #[serde(default)]
    pub master: MasterConfig,
    /// The address the regional database connects to edges from (their pg_hba lets the
    /// replication role in from here only), e.g. the hub's tunnel address. Required with `[api]`.
    pub regional_address: Option<String>,
    #[serde(default)]
    pub reconcile: HubReconcileConfig,
    #[serde(default)]
    pub lag: LagConfig,
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// Cloud fallback: the workspace address, the channel that tells workers.
    #[serde(default)]
    pub fallback: crate::fallback::config::FallbackConfig,
    /// The dashboard and the read API (`crate::web`). Off when absent.
    pub web: Option<crate::web::config::WebConfig>,
    /// The edges' WireGuard tunnels: addresses, and this hub's interface (`crate::tunnel`).
    pub tunnel: Option<crate::tunnel::TunnelConfig>,
    /// Self-service provisioning (`crate::provision`): the form, each edge's image, the IT
    /// contact's email. Off when absent; needs `[web]`.
    pub provision: Option<crate::provision::config::ProvisionConfig>,
}

/// `[metrics]`: Prometheus scrapes `GET /metrics` on `listen` (plain HTTP). Off when absent.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    pub listen: Option<std::net::SocketAddr>,
}

/// Lag sampling, history and its alerts (`[lag]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LagConfig {
    /// How often lag is sampled (by one replica). Default 30 s.
    pub interval_secs: u64,
    /// Keep one history sample per edge and direction this often. Default 300 s.
    pub history_every_secs: u64,
    /// History older than this is pruned. Default 48 h.
    pub history_hours: u64,
    /// Alert when either direction is more than this many seconds behind. Default 300 s.
    pub max_seconds: f64,
    /// Alert when either direction is more than this many bytes of WAL behind. Default 256 MiB.
    pub max_bytes: i64,
    /// Alert when the edge keeps more WAL than this for the regional (its disk fills while
    /// the regional does not confirm). Default 2 GiB.
    pub max_retained_bytes: i64,
    /// Consecutive samples over (or back under) the thresholds before alerting (or clearing).
    /// Default 2.
    pub samples: u32,
    /// The agent's heartbeat interval: a heartbeat up to this old is not lag. Default 5 s.
    pub heartbeat_secs: f64,
}

impl Default for LagConfig {
    fn default() -> Self {
        LagConfig {
            interval_secs: 30,
            history_every_secs: 300,
            history_hours: 48,
            max_seconds: 300.0,
            max_bytes: 256 << 20,
            max_retained_bytes: 2 << 30,
            samples: 2,
            heartbeat_secs: 5.0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// e.g. `0.0.0.0:8443`.
    pub listen: std::net::SocketAddr,
    /// PEM certificate chain (the hub's certificate first).
    pub tls_cert: std::path::PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: std::path::PathBuf,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MasterConfig {
    /// The master node's name in the topology. Default: the regional node (shared layout).
    pub node: Option<NodeName>,
    /// How the hub reconciles it and creates edge roles on it (libpq form). Default: `database`.
    pub admin: Option<String>,
    /// How edges reach it, without user or password (the hub adds the edge's own role):
    /// e.g. `host=10.8.0.1 port=5432 dbname=agog`. Default: host, port and dbname of `admin`.
    pub replication: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubReconcileConfig {
    /// How often the regional side of replication is reconciled. Default 30 s.
    pub interval_secs: u64,
    /// A topology spec (TOML, as for `hub apply`) with what enrollment does not know: the other
    /// regions and the `global` flows between them. Merged with the enrolled edges; without it
    /// the hub's reconcile would drop the regional's cross-region publications and subscriptions.
    pub spec: Option<std::path::PathBuf>,
}

impl Default for HubReconcileConfig {
    fn default() -> Self {
        HubReconcileConfig {
            interval_secs: 30,
            spec: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// Default 30 s.
    pub interval_secs: u64,
    /// Default 5 s.
    pub timeout_secs: u64,
    /// No healthy answer for this long: offline. Default 60 s.
    pub offline_after_secs: u64,
    /// Offline this long: escalate. Default 3600 s.
    pub escalate_after_secs: u64,
    /// Consecutive healthy checks before an offline edge counts as back. Default 2.
    pub recover_after_checks: u32,
    /// Checks in flight at once, per replica. Default 512.
    pub concurrency: usize,
    /// How often a replica looks for due checks and due alerts. Default 250 ms (a check
    /// starts at most this late; the claim is one indexed query).
    pub tick_ms: u64,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            interval_secs: 30,
            timeout_secs: 5,
            offline_after_secs: 60,
            escalate_after_secs: 3600,
            recover_after_checks: 2,
            concurrency: 512,
            tick_ms: 250,
        }
    }
}

impl MonitorConfig {
    pub fn policy(&self) -> Policy {
        Policy {
            offline_after: Duration::from_secs(self.offline_after_secs),
            interval: Duration::from_secs(self.interval_secs.max(1)),
            escalate_after: Duration::from_secs(self.escalate_after_secs),
            recover_after: self.recover_after_checks.max(1),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    /// Every channel gets every alert of this region (offline, escalated, recovered).
    #[serde(default)]
    pub channels: Vec<NamedChannel>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NamedChannel {
    /// Unique per hub; the outbox records deliveries by this name.
    pub name: String,
    #[serde(flatten)]
    pub channel: ChannelConfig,
}

impl HubConfig {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("config {}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let cfg: HubConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        cfg.database
            .parse::<tokio_postgres::Config>()
            .map_err(|e| format!("database: {e}"))?;
        for (what, c) in [
            ("master.admin", cfg.master.admin.as_ref()),
            ("master.replication", cfg.master.replication.as_ref()),
        ] {
            if let Some(c) = c {
                c.parse::<tokio_postgres::Config>()
                    .map_err(|e| format!("{what}: {e}"))?;
            }
        }
        if let Some(r) = &cfg.master.replication {
            let parsed: tokio_postgres::Config = r.parse().map_err(|e| format!("{e}"))?;
            if parsed.get_user().is_some() || parsed.get_password().is_some() {
                return Err("master.replication: leave user and password out (each edge gets a role of its own)".into());
            }
        }
        if cfg.api.is_some() && cfg.regional_address.is_none() {
            return Err("regional_address is required with [api] (edges let the regional in from this address only)".into());
        }
        cfg.fallback.validate()?;
        if let Some(t) = &cfg.tunnel {
            t.validate()?;
        }
        if let Some(web) = &cfg.web {
            web.validate()?;
        }
        if let Some(p) = &cfg.provision {
            if cfg.web.is_none() {
                return Err(
                    "[provision] needs [web]: the form and the setup page are served there".into(),
                );
            }
            p.validate()?;
        }
        let mut names = std::collections::BTreeSet::new();
        for c in &cfg.alerts.channels {
            if !names.insert(&c.name) {
                return Err(format!(
                    "alerts.channels: the name {:?} is used twice",
                    c.name
                ));
            }
        }
        Ok(cfg)
    }

    pub fn node_name(&self) -> NodeName {
        self.node.clone().unwrap_or_else(|| {
            NodeName::parse(self.region.as_str()).expect("a region id is a node name")
        })
    }

    /// The master-data publisher's node name; the regional node in the shared layout.
    pub fn master_node(&self) -> NodeName {
        self.master.node.clone().unwrap_or_else(|| self.node_name())
    }

    /// Whether master data is published by a node of its own (the separate layout).
    pub fn separate_master(&self) -> bool {
        self.master_node() != self.node_name()
    }

    pub fn master_admin(&self) -> &str {
        self.master.admin.as_deref().unwrap_or(&self.database)
    }

    /// How edges reach the master node, without credentials.
    pub fn master_replication(&self) -> String {
        if let Some(r) = &self.master.replication {
            return r.clone();
        }
        let admin: tokio_postgres::Config = self.master_admin().parse().expect("validated at load");
        let mut parts = Vec::new();
        if let Some(tokio_postgres::config::Host::Tcp(h)) = admin.get_hosts().first() {
            parts.push(format!("host={}", sync_core::sql::conninfo_value(h)));
        }
        if let Some(p) = admin.get_ports().first() {
            parts.push(format!("port={p}"));
        }
        if let Some(d) = admin.get_dbname() {
            parts.push(format!("dbname={}", sync_core::sql::conninfo_value(d)));
        }
        parts.join(" ")
    }

    pub fn replica_id(&self) -> String {
        self.replica_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shipped_example_config_parses() {
        let cfg = super::HubConfig::parse(include_str!("../../examples/hub.toml")).unwrap();
        assert_eq!(cfg.alerts.channels.len(), 2);
    }

    use super::*;

    const MIN: &str =
        "region = \"us-east\"\ndatabase = \"host=10.0.0.5 port=5433 dbname=agog user=postgres\"\n";

    #[test]
    fn shared_layout_by_default() {
        let c = HubConfig::parse(MIN).unwrap();
        assert_eq!(c.master_node().as_str(), "us-east");
        assert!(!c.separate_master());
        assert_eq!(
            c.master_replication(),
            "host='10.0.0.5' port=5433 dbname='agog'"
        );
        assert_eq!(c.reconcile.interval_secs, 30);
    }

    #[test]
    fn api_needs_the_regional_address_and_replication_has_no_credentials() {
        let api = "[api]\nlisten = \"127.0.0.1:8443\"\ntls_cert = \"c\"\ntls_key = \"k\"\n";
        let e = HubConfig::parse(&format!("{MIN}{api}")).unwrap_err();
        assert!(e.contains("regional_address is required"), "{e}");
        assert!(HubConfig::parse(&format!("{MIN}regional_address = \"10.8.0.1\"\n{api}")).is_ok());
        let e = HubConfig::parse(&format!(
            "{MIN}[master]\nnode = \"us-east-master\"\nreplication = \"host=h user=x\"\n"
        ))
        .unwrap_err();
        assert!(e.contains("leave user and password out"), "{e}");
    }
}
