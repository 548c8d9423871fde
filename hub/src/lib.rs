//! hub: the AGOG regional fleet service (library side; `main.rs` is the CLI).

pub mod notify;
