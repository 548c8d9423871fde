//! hub: the AGOG regional fleet service (library side; `main.rs` is the CLI).

pub mod alert_log;
pub mod api;
pub mod config;
pub mod contacts;
pub mod db;
pub mod enroll;
pub mod fallback;
pub mod lag;
pub mod metrics;
pub mod monitor;
pub mod notify;
pub mod provision;
pub mod regional;
pub mod serve;
pub mod tunnel;
pub mod web;
