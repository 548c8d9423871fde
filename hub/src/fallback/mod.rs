//! Cloud fallback: when a facility's edge is destroyed its people work in a workspace in the
//! regional database, and a rebuilt edge takes every row back (ARCHITECTURE.md, "Cloud
//! fallback"). An operator activates it (`hub fallback activate`, or the API); the hub's
//! driver does each step, idempotently, under the regional lock, logging who and when; a
//! restore token enrolls the rebuilt box, and the driver hands the facility back to it.

pub mod activate;
pub mod api;
pub mod checksum;
pub mod cli;
pub mod config;
pub mod driver;
pub mod notice;
pub mod operators;
pub mod record;
pub mod restore;
pub mod shape;
pub mod workspace;

pub use record::{Fallback, Phase};

/// Why a fallback request was refused: an HTTP status, a stable code and a sentence saying
/// what to do instead (the CLI prints the sentence, the API sends all three).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub error: &'static str,
    pub message: String,
}

impl Refusal {
    pub fn new(status: u16, error: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            error,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Refusal {
        Refusal::new(400, "invalid_request", message)
    }

    /// A database or server trouble, logged with its detail; the caller may retry.
    pub fn internal(e: impl std::fmt::Display) -> Refusal {
        tracing::warn!(error = %e, "cloud fallback request failed");
        Refusal::new(
            503,
            "unavailable",
            format!("the hub could not do it right now: {e}"),
        )
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refusal {}

impl From<tokio_postgres::Error> for Refusal {
    fn from(e: tokio_postgres::Error) -> Refusal {
        Refusal::internal(sync_core::apply::describe(&e))
    }
}

impl From<anyhow::Error> for Refusal {
    fn from(e: anyhow::Error) -> Refusal {
        Refusal::internal(format!("{e:#}"))
    }
}
