//! Write load for benches: a paced writer (a target number of commits per second, spread over
//! a few connections, running until stopped) and a flood writer (as fast as the connections go).
//!
//! Every commit is one SQL string from a caller's function of a sequence number unique across
//! connections, run with `batch_execute` (one statement outside a transaction block is one
//! commit).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_postgres::Client;

/// Makes the SQL of commit number `seq` (0, 1, 2, ...).
pub type SqlFn = Arc<dyn Fn(u64) -> String + Send + Sync>;

/// A writer committing at a target rate until [`PacedWriter::stop`].
pub struct PacedWriter {
    stop: Arc<AtomicBool>,
    commits: Arc<AtomicU64>,
    started: Instant,
    tasks: Vec<JoinHandle<Result<()>>>,
}

impl PacedWriter {
    /// Start `clients.len()` tasks, each committing every `clients.len() / commits_per_sec`
    /// seconds, staggered. A task that falls behind catches up (bursts) so the average holds
    /// while the server keeps up; [`PacedWriter::commits`] tells what was achieved.
    pub fn start(clients: Vec<Client>, commits_per_sec: f64, sql: SqlFn) -> PacedWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let commits = Arc::new(AtomicU64::new(0));
        let seq = Arc::new(AtomicU64::new(0));
        let k = clients.len().max(1) as f64;
        let period = Duration::from_secs_f64(k / commits_per_sec.max(0.001));
        let t0 = tokio::time::Instant::now();
        let tasks = clients
            .into_iter()
            .enumerate()
            .map(|(i, client)| {
                let (stop, commits, seq, sql) =
                    (stop.clone(), commits.clone(), seq.clone(), sql.clone());
                let first = t0 + period.mul_f64(i as f64 / k);
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval_at(first, period);
                    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let n = seq.fetch_add(1, Ordering::Relaxed);
                        client
                            .batch_execute(&sql(n))
                            .await
                            .with_context(|| format!("paced commit {n}"))?;
                        commits.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(())
                })
            })
            .collect();
        PacedWriter {
            stop,
            commits,
            started: Instant::now(),
            tasks,
        }
    }

    /// Commits done so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stop, wait for the commits in flight, and return the total; the first error if any task failed.
    pub async fn stop(self) -> Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.context("paced writer task panicked")??;
        }
        Ok(self.commits.load(Ordering::Relaxed))
    }
}

/// When a flood stops.
#[derive(Debug, Clone, Copy)]
pub enum Until {
    /// Keep committing for this long (commits in flight at the deadline finish).
    Elapsed(Duration),
    /// Exactly this many commits in total.
    Commits(u64),
}

/// Commit as fast as the connections go, one task per client; returns the number of commits.
pub async fn flood(clients: Vec<Client>, until: Until, sql: SqlFn) -> Result<u64> {
    let seq = Arc::new(AtomicU64::new(0));
    let deadline = match until {
        Until::Elapsed(d) => Some(Instant::now() + d),
        Until::Commits(_) => None,
    };
    let limit = match until {
        Until::Commits(n) => n,
        Until::Elapsed(_) => u64::MAX,
    };
    let tasks: Vec<JoinHandle<Result<u64>>> = clients
        .into_iter()
        .map(|client| {
            let (seq, sql) = (seq.clone(), sql.clone());
            tokio::spawn(async move {
                let mut done = 0;
                loop {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        break;
                    }
                    let n = seq.fetch_add(1, Ordering::Relaxed);
                    if n >= limit {
                        break;
                    }
                    client
                        .batch_execute(&sql(n))
                        .await
                        .with_context(|| format!("flood commit {n}"))?;
                    done += 1;
                }
                Ok(done)
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.context("flood task panicked")??;
    }
    Ok(total)
}

/// `n` connections to `conninfo`, each first running `setup` (e.g. `SET synchronous_commit = off`).
pub async fn connections(conninfo: &str, n: usize, setup: &str) -> Result<Vec<Client>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let c = sync_core::connect(conninfo)
            .await
            .with_context(|| format!("connect to {conninfo}"))?;
        if !setup.is_empty() {
            c.batch_execute(setup).await.context(setup.to_owned())?;
        }
        v.push(c);
    }
    Ok(v)
}
