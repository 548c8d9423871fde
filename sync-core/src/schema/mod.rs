//! The sync schema: numbered migrations shipped inside the binary, and the version gate.

use tokio_postgres::{Client, GenericClient};

pub use crate::migrate::Migration;
use crate::migrate::MigrationSet;

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "sync schema: master, operational and global tables, ownership guard",
        sql: include_str!("0001_sync_schema.sql"),
    },
    Migration {
        version: 2,
        name: "edge heartbeats and the conflict log",
        sql: include_str!("0002_heartbeats_and_conflicts.sql"),
    },
    Migration {
        version: 3,
        name: "replication apply merges: the publisher's row wins, the local one is logged",
        sql: include_str!("0003_apply_upsert.sql"),
    },
    Migration {
        version: 4,
        name: "ownership overrides hand a facility from its cloud workspace back to its edge",
        sql: include_str!("0004_fallback_handover.sql"),
    },
];

pub const SYNC: MigrationSet = MigrationSet {
    schema: "agog_sync",
    migrations: MIGRATIONS,
};

/// The schema version this build ships.
pub fn latest_version() -> i32 {
    SYNC.latest()
}

/// Lock key shared by every process that migrates or reconciles a node, so two of them (the
/// agent's loop and a support engineer's `apply`, or two hub replicas) never interleave.
pub const RECONCILE_LOCK_KEY: i64 = 0x4147_4f47_5359_4e43; // "AGOGSYNC"

/// The node's schema version, `None` when the sync schema was never installed.
pub async fn current_version(
    client: &impl GenericClient,
) -> Result<Option<i32>, tokio_postgres::Error> {
    SYNC.current_version(client).await
}

/// Versions not yet applied on this node.
pub fn pending(current: Option<i32>) -> impl Iterator<Item = &'static Migration> {
    SYNC.pending(current)
}

/// Apply one sync-schema migration in its own transaction, recording it.
pub async fn apply_migration(
    client: &mut Client,
    m: &Migration,
) -> Result<bool, tokio_postgres::Error> {
    SYNC.apply(client, m).await
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("node {subscriber} has no sync schema yet; it cannot subscribe to {publisher} until its migrations ran (the reconciler applies them first)")]
    SubscriberMissing {
        subscriber: String,
        publisher: String,
    },
    #[error("node {publisher} has no sync schema yet; {subscriber} waits until {publisher} is migrated (run its agent or hub once)")]
    PublisherMissing {
        subscriber: String,
        publisher: String,
    },
    #[error("node {subscriber} (schema v{subscriber_version}) cannot subscribe to {publisher} (schema v{publisher_version}): the publisher sends columns the subscriber does not have. Upgrade {subscriber} to v{publisher_version} or later first (its agent or hub applies migrations at start), then reconcile again")]
    SubscriberBehind {
        subscriber: String,
        subscriber_version: i32,
        publisher: String,
        publisher_version: i32,
    },
}

/// A subscriber may be newer than its publisher (migrations only add columns with defaults), never older.
pub fn check_compatible(
    subscriber: &str,
    subscriber_version: Option<i32>,
    publisher: &str,
    publisher_version: Option<i32>,
) -> Result<(), VersionError> {
    let (s, p) = (subscriber.to_owned(), publisher.to_owned());
    match (subscriber_version, publisher_version) {
        (None, _) => Err(VersionError::SubscriberMissing {
            subscriber: s,
            publisher: p,
        }),
        (_, None) => Err(VersionError::PublisherMissing {
            subscriber: s,
            publisher: p,
        }),
        (Some(sv), Some(pv)) if sv < pv => Err(VersionError::SubscriberBehind {
            subscriber: s,
            subscriber_version: sv,
            publisher: p,
            publisher_version: pv,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version, i as i32 + 1, "migration {} out of order", m.name);
        }
        assert_eq!(latest_version(), MIGRATIONS.len() as i32);
    }

    #[test]
    fn version_gate() {
        assert!(check_compatible("la", Some(2), "us-east", Some(1)).is_ok());
        assert!(check_compatible("la", Some(1), "us-east", Some(1)).is_ok());
        let e = check_compatible("la", Some(1), "us-east", Some(2))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("la (schema v1) cannot subscribe to us-east (schema v2)"),
            "{e}"
        );
        assert!(e.contains("Upgrade la to v2"), "{e}");
        assert!(check_compatible("la", Some(1), "us-east", None).is_err());
    }
}
