//! The `/health` payload of the edge agent: written by the agent, read by the hub's monitor
//! and by `edge-agent status`. The hub's check is "HTTP 200 and `status == "healthy"`".

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Healthy,
    Degraded,
    Unhealthy,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Unhealthy => "unhealthy",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthReport {
    pub status: Status,
    /// Why the status is not healthy, one line each, worst first.
    pub reasons: Vec<String>,
    pub facility_id: String,
    pub node: String,
    pub version: String,
    pub uptime_seconds: u64,
    /// When the probe behind this report ran (RFC 3339).
    pub checked_at: String,
    pub schema_version: Option<i32>,
    pub postgres: PostgresHealth,
    pub replication: ReplicationHealth,
    pub reconcile: ReconcileHealth,
    pub tunnel: Option<TunnelHealth>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PostgresHealth {
    pub up: bool,
    pub version: Option<String>,
    pub disk_free_bytes: Option<u64>,
    pub disk_total_bytes: Option<u64>,
    /// Times the agent restarted a crashed server since it started.
    pub restarts: u32,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplicationHealth {
    /// `max_slot_wal_keep_size` in bytes (`None`: unbounded).
    pub wal_keep_limit_bytes: Option<i64>,
    pub slots: Vec<SlotHealth>,
    pub subscriptions: Vec<SubscriptionHealth>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlotHealth {
    pub name: String,
    pub active: bool,
    pub retained_bytes: Option<i64>,
    /// reserved | extended | unreserved | lost
    pub wal_status: Option<String>,
    /// WAL written here that the subscriber has not confirmed (bytes behind).
    #[serde(default)]
    pub lag_bytes: Option<i64>,
    /// The walsender's replay lag while the subscriber is connected.
    #[serde(default)]
    pub replay_lag_seconds: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionHealth {
    pub name: String,
    pub enabled: bool,
    pub worker_running: bool,
    /// When the last message (data or keepalive) from the publisher arrived (RFC 3339).
    pub last_message_at: Option<String>,
    pub last_message_age_seconds: Option<f64>,
    pub apply_errors: i64,
    pub sync_errors: i64,
    /// Bytes received but not yet applied and flushed.
    pub lag_bytes: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconcileHealth {
    pub last_run_at: Option<String>,
    pub ok: bool,
    pub steps_applied: usize,
    pub blocked: Vec<String>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TunnelHealth {
    pub kind: String,
    /// A handshake with the hub within the last `handshake_timeout_secs` (WireGuard).
    pub up: bool,
    pub last_handshake_at: Option<String>,
    #[serde(default)]
    pub interface: Option<String>,
    /// `kernel` or `userspace`.
    #[serde(default)]
    pub backend: Option<String>,
    /// This edge's tunnel address.
    #[serde(default)]
    pub address: Option<String>,
    /// The hub's endpoint.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default)]
    pub rx_bytes: u64,
    #[serde(default)]
    pub tx_bytes: u64,
    /// Times the agent brought the interface up again or re-applied the peer.
    #[serde(default)]
    pub reconnects: u32,
    /// What is wrong, when it is down.
    #[serde(default)]
    pub error: Option<String>,
}
