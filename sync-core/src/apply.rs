//! Runs a plan's steps, one statement at a time, stopping at the first failure. Nothing here
//! needs to be atomic: the next plan is computed from the catalogs again, so a run cut off
//! anywhere is completed by the next one.

use std::fmt;
use std::time::Duration;

use tokio_postgres::Client;

use crate::connect::connect;
use crate::plan::{Action, Step};
use crate::schema;

#[derive(Debug)]
pub struct ApplyError {
    pub step: usize,
    pub why: String,
    pub statement: String,
    pub error: String,
}

impl fmt::Display for ApplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "step {} ({}) failed: {}\n  statement: {}",
            self.step + 1,
            self.why,
            self.error,
            self.statement
        )
    }
}

impl std::error::Error for ApplyError {}

/// A PostgreSQL error with its detail and hint, which is where PostgreSQL says what to do.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{}: {}", db.severity(), db.message());
            if let Some(d) = db.detail() {
                s.push_str(&format!(" (detail: {d})"));
            }
            if let Some(h) = db.hint() {
                s.push_str(&format!(" (hint: {h})"));
            }
            s
        }
        None => {
            // Connection-level errors keep their cause in the source chain.
            let mut s = e.to_string();
            let mut src = std::error::Error::source(e);
            while let Some(inner) = src {
                s.push_str(&format!(": {inner}"));
                src = inner.source();
            }
            s
        }
    }
}

/// How long a `CREATE SUBSCRIPTION` may run. Creating its slot on the publisher waits for every
/// transaction open there; when two nodes subscribe to each other at once (an edge to its
/// region's master data while the hub subscribes the region to the edge), each one's
/// CREATE SUBSCRIPTION is such an open transaction for the other, and both would wait for ever.
/// Bounded, one gives up (rolled back: its XID goes, its half-made slot is dropped by the
/// publisher), the other completes, and the next reconcile makes the first. Jittered, so the
/// two sides do not give up together every time.
pub fn subscribe_timeout() -> Duration {
    use rand::Rng;
    Duration::from_secs(rand::thread_rng().gen_range(20..=40))
}

fn creates_subscription(sql: &str) -> bool {
    sql.trim_start()
        .get(..19)
        .is_some_and(|s| s.eq_ignore_ascii_case("CREATE SUBSCRIPTION"))
}

/// Run `sql` (one statement, not in a transaction block) with a statement timeout.
async fn bounded(client: &Client, sql: &str, limit: Duration) -> Result<(), String> {
    let set = format!("SET statement_timeout = {}", limit.as_millis().max(1));
    client.batch_execute(&set).await.map_err(|e| describe(&e))?;
    let r = client.batch_execute(sql).await;
    let _ = client.batch_execute("RESET statement_timeout").await;
    r.map_err(|e| {
        if e.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED) {
            format!(
                "{}: gave up after {} s waiting for the publisher to make the replication slot (it waits for the publisher's open transactions; two nodes subscribing to each other at once wait on each other); the next reconcile tries again",
                describe(&e),
                limit.as_secs()
            )
        } else {
            describe(&e)
        }
    })
}

/// One statement of a step; a CREATE SUBSCRIPTION bounded by `subscribe_limit`.
async fn run_statement(
    client: &Client,
    sql: &str,
    subscribe_limit: Duration,
) -> Result<(), String> {
    if creates_subscription(sql) {
        bounded(client, sql, subscribe_limit).await
    } else {
        client.batch_execute(sql).await.map_err(|e| describe(&e))
    }
}

/// Apply `steps` in order on the node behind `client`. Returns how many ran.
pub async fn apply_steps(client: &mut Client, steps: &[Step]) -> Result<usize, ApplyError> {
    apply_steps_with(client, steps, subscribe_timeout()).await
}

/// [`apply_steps`] with `subscribe_limit` for each CREATE SUBSCRIPTION.
pub async fn apply_steps_with(
    client: &mut Client,
    steps: &[Step],
    subscribe_limit: Duration,
) -> Result<usize, ApplyError> {
    for (i, step) in steps.iter().enumerate() {
        let fail = |statement: String, error: String| ApplyError {
            step: i,
            why: step.why.clone(),
            statement,
            error,
        };
        tracing::info!(step = i + 1, why = %step.why, "applying");
        match &step.action {
            Action::Migrate { version, .. } => {
                let m = schema::MIGRATIONS
                    .iter()
                    .find(|m| m.version == *version)
                    .ok_or_else(|| {
                        fail(
                            format!("migration {version}"),
                            "this build does not ship it".into(),
                        )
                    })?;
                schema::apply_migration(client, m)
                    .await
                    .map_err(|e| fail(format!("migration {version:04}"), describe(&e)))?;
            }
            Action::Sql(sql) => {
                run_statement(client, sql, subscribe_limit)
                    .await
                    .map_err(|e| fail(sql.clone(), e))?;
            }
            Action::PeerSql {
                peer,
                conninfo,
                sql,
            } => {
                let peer_client = connect(conninfo)
                    .await
                    .map_err(|e| fail(format!("connect to {peer}"), describe(&e)))?;
                run_statement(&peer_client, sql, subscribe_limit)
                    .await
                    .map_err(|e| fail(sql.clone(), e))?;
            }
        }
    }
    Ok(steps.len())
}
