//! The test harness: throwaway PostgreSQL 16 clusters on free loopback ports, run as an
//! unprivileged user (initdb refuses root), removed when dropped, even when a test panics.
//! A cluster left behind by a killed test process is reaped by the next one.
//!
//! Binaries come from `scripts/setup.sh` (the pgserver wheel: PostgreSQL 16.2 + pgvector),
//! or from `AGOG_PG_BIN`.

pub mod cluster;
pub mod cpu;
pub mod fleet;
pub mod load;
pub mod wait;

pub use cluster::{pg_bin, Cluster};
pub use wait::wait_until;
