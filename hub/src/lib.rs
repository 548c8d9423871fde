//! hub: the AGOG regional fleet service (library side; `main.rs` is the CLI).

pub mod config;
pub mod db;
pub mod monitor;
pub mod notify;
pub mod serve;
