//! The test harness: throwaway PostgreSQL 16 clusters on free loopback ports, run as an
//! unprivileged user (initdb refuses root), removed when dropped, even when a test panics.
//! A cluster left behind by a killed test process is reaped by the next one.
//!
//! Binaries come from `scripts/setup.sh` (the pgserver wheel: PostgreSQL 16.2 + pgvector),
//! or from `AGOG_PG_BIN`.

pub mod bin_path;
pub mod browser;
pub mod cluster;
pub mod cpu;
pub mod edge_box;
pub mod fleet;
pub mod health_endpoint;
pub mod hub_process;
pub mod lab_process;
pub mod load;
pub mod netns;
pub mod pki;
pub mod process;
pub mod tunnel_e2e;
pub mod wait;

pub use cluster::{pg_bin, Cluster};
pub use wait::wait_until;

/// Local receivers that stand in for the alert vendors (PagerDuty, Slack, Teams, Twilio,
/// SMTP) in the hub's notify tests.
pub mod receivers;

/// An HTTP client for tests. The workspace builds reqwest with rustls and no bundled crypto
/// provider (ring is installed per process, for static builds), so install it first.
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}
