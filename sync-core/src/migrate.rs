//! Numbered, append-only migrations recorded in `<schema>.schema_migrations`. Used for the sync
//! schema (every node) and for the hub's own state schema.

use tokio_postgres::{Client, GenericClient};

use crate::schema::RECONCILE_LOCK_KEY;
use crate::sql::ident;

/// One numbered migration. A shipped one is never edited.
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// The migrations of one schema.
pub struct MigrationSet {
    pub schema: &'static str,
    pub migrations: &'static [Migration],
}

impl MigrationSet {
    pub fn latest(&self) -> i32 {
        self.migrations.last().map(|m| m.version).unwrap_or(0)
    }

    fn table(&self) -> String {
        format!("{}.schema_migrations", ident(self.schema))
    }

    /// The installed version, `None` when the schema was never installed.
    pub async fn current_version(
        &self,
        client: &impl GenericClient,
    ) -> Result<Option<i32>, tokio_postgres::Error> {
        let installed: bool = client
            .query_one(
                "SELECT to_regclass($1) IS NOT NULL",
                &[&format!("{}.schema_migrations", self.schema)],
            )
            .await?
            .get(0);
        if !installed {
            return Ok(None);
        }
        let row = client
            .query_one(&format!("SELECT max(version) FROM {}", self.table()), &[])
            .await?;
        Ok(row.get(0))
    }

    pub fn pending(
        &self,
        current: Option<i32>,
    ) -> impl Iterator<Item = &'static Migration> + use<> {
        let cur = current.unwrap_or(0);
        self.migrations.iter().filter(move |m| m.version > cur)
    }

    /// Apply one migration in its own transaction, recording it. Re-checks under the lock, so
    /// two processes racing to migrate apply it once.
    pub async fn apply(
        &self,
        client: &mut Client,
        m: &Migration,
    ) -> Result<bool, tokio_postgres::Error> {
        let bootstrap = format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {table} (
                 version    integer PRIMARY KEY,
                 name       text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );
             -- Peers read the version before they subscribe, with their replication role.
             GRANT USAGE ON SCHEMA {schema} TO PUBLIC;
             GRANT SELECT ON {table} TO PUBLIC;",
            schema = ident(self.schema),
            table = self.table()
        );
        client
            .batch_execute(&bootstrap)
            .await
            .or_else(ignore_concurrent_bootstrap)?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&RECONCILE_LOCK_KEY])
            .await?;
        let done: bool = tx
            .query_one(
                &format!(
                    "SELECT EXISTS (SELECT 1 FROM {} WHERE version = $1)",
                    self.table()
                ),
                &[&m.version],
            )
            .await?
            .get(0);
        if done {
            return Ok(false);
        }
        tx.batch_execute(m.sql).await?;
        tx.execute(
            &format!(
                "INSERT INTO {} (version, name) VALUES ($1, $2)",
                self.table()
            ),
            &[&m.version, &m.name],
        )
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Apply every pending migration; returns the versions applied.
    pub async fn migrate(&self, client: &mut Client) -> Result<Vec<i32>, tokio_postgres::Error> {
        let current = self.current_version(&*client).await?;
        let mut applied = Vec::new();
        for m in self.pending(current) {
            if self.apply(client, m).await? {
                applied.push(m.version);
            }
        }
        Ok(applied)
    }
}

/// `CREATE ... IF NOT EXISTS` can still fail with a unique violation when two sessions run it
/// at the same moment; the other session created it, which is what we wanted.
fn ignore_concurrent_bootstrap(e: tokio_postgres::Error) -> Result<(), tokio_postgres::Error> {
    match e.code() {
        Some(c) if *c == tokio_postgres::error::SqlState::UNIQUE_VIOLATION => Ok(()),
        _ => Err(e),
    }
}
