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
    /// How often a replica looks for due checks. Default 1000 ms.
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
            tick_ms: 1000,
        }
    }
}

impl MonitorConfig {
    pub fn policy(&self) -> Policy {
        Policy {
            offline_after: Duration::from_secs(self.offline_after_secs),
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

    pub fn replica_id(&self) -> String {
        self.replica_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        })
    }
}
