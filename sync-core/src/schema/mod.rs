//! The sync schema: numbered migrations shipped inside the binary, and the version gate.

use tokio_postgres::{Client, GenericClient};

/// One numbered migration. Migrations are append-only: a shipped one is never edited.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

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
];

/// The schema version this build ships.
pub fn latest_version() -> i32 {
    MIGRATIONS.last().map(|m| m.version).unwrap_or(0)
}

/// Lock key shared by every process that migrates or reconciles a node, so two of them (the
/// agent's loop and a support engineer's `apply`, or two hub replicas) never interleave.
pub const RECONCILE_LOCK_KEY: i64 = 0x4147_4f47_5359_4e43; // "AGOGSYNC"

const BOOTSTRAP: &str = "
CREATE SCHEMA IF NOT EXISTS agog_sync;
CREATE TABLE IF NOT EXISTS agog_sync.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
-- Peers read the version before they subscribe, with their replication role.
GRANT USAGE ON SCHEMA agog_sync TO PUBLIC;
GRANT SELECT ON agog_sync.schema_migrations TO PUBLIC;
";

/// The node's schema version, `None` when the sync schema was never installed.
pub async fn current_version(
    client: &impl GenericClient,
) -> Result<Option<i32>, tokio_postgres::Error> {
    let installed: bool = client
        .query_one(
            "SELECT to_regclass('agog_sync.schema_migrations') IS NOT NULL",
            &[],
        )
        .await?
        .get(0);
    if !installed {
        return Ok(None);
    }
    let row = client
        .query_one("SELECT max(version) FROM agog_sync.schema_migrations", &[])
        .await?;
    Ok(row.get(0))
}

/// Versions not yet applied on this node.
pub fn pending(current: Option<i32>) -> impl Iterator<Item = &'static Migration> {
    let cur = current.unwrap_or(0);
    MIGRATIONS.iter().filter(move |m| m.version > cur)
}

/// Apply one migration in its own transaction, recording it. Re-checks under the lock, so two
/// processes racing to migrate apply it once.
pub async fn apply_migration(
    client: &mut Client,
    m: &Migration,
) -> Result<bool, tokio_postgres::Error> {
    client
        .batch_execute(BOOTSTRAP)
        .await
        .or_else(ignore_concurrent_bootstrap)?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&RECONCILE_LOCK_KEY])
        .await?;
    let done: bool = tx
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM agog_sync.schema_migrations WHERE version = $1)",
            &[&m.version],
        )
        .await?
        .get(0);
    if done {
        return Ok(false);
    }
    tx.batch_execute(m.sql).await?;
    tx.execute(
        "INSERT INTO agog_sync.schema_migrations (version, name) VALUES ($1, $2)",
        &[&m.version, &m.name],
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}

/// `CREATE ... IF NOT EXISTS` can still fail with a unique violation when two sessions run it
/// at the same moment; the other session created it, which is what we wanted.
fn ignore_concurrent_bootstrap(e: tokio_postgres::Error) -> Result<(), tokio_postgres::Error> {
    match e.code() {
        Some(c) if *c == tokio_postgres::error::SqlState::UNIQUE_VIOLATION => Ok(()),
        _ => Err(e),
    }
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
