//! Runs a plan's steps, one statement at a time, stopping at the first failure. Nothing here
//! needs to be atomic: the next plan is computed from the catalogs again, so a run cut off
//! anywhere is completed by the next one.

use std::fmt;

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

/// Apply `steps` in order on the node behind `client`. Returns how many ran.
pub async fn apply_steps(client: &mut Client, steps: &[Step]) -> Result<usize, ApplyError> {
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
                client
                    .batch_execute(sql)
                    .await
                    .map_err(|e| fail(sql.clone(), describe(&e)))?;
            }
            Action::PeerSql {
                peer,
                conninfo,
                sql,
            } => {
                let peer_client = connect(conninfo)
                    .await
                    .map_err(|e| fail(format!("connect to {peer}"), describe(&e)))?;
                peer_client
                    .batch_execute(sql)
                    .await
                    .map_err(|e| fail(sql.clone(), describe(&e)))?;
            }
        }
    }
    Ok(steps.len())
}
