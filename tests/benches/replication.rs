//! Replication bench on throwaway clusters of this machine:
//!
//! 1. edge -> regional insert-to-apply latency under a paced write load on the edge;
//! 2. sustained replicated rows/s while the edge writes as fast as it can;
//! 3. catch-up rows/s after a backlog built with the regional's subscription disabled;
//! 4. CPU of the publishing cluster(s) per edge as the edges grow, shared vs separate layout.
//!
//! `cargo bench -p agog-tests --bench replication`; knobs: BENCH_QUICK=1, BENCH_RATE,
//! BENCH_SECONDS, BENCH_BACKLOG, BENCH_EDGES="4,8,16,32", BENCH_REPORT=path (see `Config`).
//! Prints a markdown report on stdout, progress on stderr.

use std::fmt::Write as _;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agog_tests::cpu::{cpu_between, CpuUse, MachineStat, Snapshot};
use agog_tests::fleet::{checksum, exec, wait_count, wait_subscriptions_ready};
use agog_tests::load::{connections, flood, PacedWriter, SqlFn, Until};
use agog_tests::{wait_until, Cluster};
use anyhow::{bail, ensure, Context, Result};
use sync_core::{reconcile_all, Topology};
use tokio_postgres::Client;

const FAC: &str = "facility-bench-001";
const TEN: &str = "tenant-bench-a";
const T: Duration = Duration::from_secs(300);
/// The columns the edge sends: the regional's copy of `orders` has one more (`bench_applied_at`).
const EDGE_ORDERS: &str = "(SELECT facility_id, id, tenant_id, customer_id, order_number, status, total, created_at, updated_at FROM orders)";

#[derive(Debug, Clone)]
struct Config {
    quick: bool,
    /// Phase 1: target rows/s on the edge, rows per commit, seconds.
    rate: f64,
    rows_per_commit: u64,
    seconds: u64,
    /// Phase 2: seconds of flooding; phases 2 and 3: connections and rows per commit.
    sustained_seconds: u64,
    flood_conns: usize,
    flood_rows: u64,
    /// Phase 3: rows written while the subscription is disabled.
    backlog: u64,
    /// Phase 4.
    edges: Vec<usize>,
    ingest_commits: f64,
    ingest_rows: u64,
    ingest_conns: usize,
    master_commits: f64,
    tenants: usize,
    warmup: u64,
    cpu_window: u64,
    edges_per_subscriber_cluster: usize,
    /// `synchronous_commit` of the simulated ingest (the reconciler's subscriptions use off).
    ingest_sync_commit: String,
    /// Which parts to run: 1, 2, 3, 4a, 4b (to re-run a disturbed figure alone).
    phases: Vec<String>,
}

fn env<T: FromStr>(name: &str, default: T) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}={v:?}: {e}")),
        _ => Ok(default),
    }
}

impl Config {
    fn runs(&self, phase: &str) -> bool {
        self.phases.iter().any(|p| p == phase)
    }

    fn from_env() -> Result<Config> {
        let quick = env("BENCH_QUICK", 0u8)? == 1;
        let edges_text: String = env("BENCH_EDGES", pick(quick, "4,8,16,32", "2,4").to_string())?;
        let mut edges = edges_text
            .split(',')
            .map(|s| s.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .with_context(|| format!("BENCH_EDGES={edges_text:?}"))?;
        edges.retain(|&n| n > 0);
        edges.sort_unstable();
        edges.dedup();
        let c = Config {
            quick,
            rate: env("BENCH_RATE", pick(quick, 5000.0, 2000.0))?,
            rows_per_commit: env("BENCH_ROWS_PER_COMMIT", 50)?,
            seconds: env("BENCH_SECONDS", pick(quick, 20, 5))?,
            sustained_seconds: env("BENCH_SUSTAINED_SECONDS", pick(quick, 15, 4))?,
            flood_conns: env("BENCH_FLOOD_CONNS", 4)?,
            flood_rows: env("BENCH_FLOOD_ROWS", 100)?,
            backlog: env("BENCH_BACKLOG", pick(quick, 200_000, 20_000))?,
            edges,
            ingest_commits: env("BENCH_INGEST_COMMITS", 800.0)?,
            ingest_rows: env("BENCH_INGEST_ROWS", 5)?,
            ingest_conns: env("BENCH_INGEST_CONNS", 4)?,
            master_commits: env("BENCH_MASTER_COMMITS", 5.0)?,
            tenants: env("BENCH_TENANTS", 4)?,
            warmup: env("BENCH_WARMUP", pick(quick, 3, 1))?,
            cpu_window: env("BENCH_CPU_WINDOW", pick(quick, 10, 3))?,
            edges_per_subscriber_cluster: env("BENCH_EDGES_PER_CLUSTER", 16)?,
            ingest_sync_commit: env("BENCH_INGEST_SYNC_COMMIT", "off".to_string())?,
            phases: env("BENCH_PHASES", "1,2,3,4a,4b".to_string())?
                .split(',')
                .map(|p| p.trim().to_lowercase())
                .filter(|p| !p.is_empty())
                .collect(),
        };
        ensure!(
            ["on", "off", "local", "remote_write", "remote_apply"]
                .contains(&c.ingest_sync_commit.as_str()),
            "BENCH_INGEST_SYNC_COMMIT must be a synchronous_commit value"
        );
        for p in &c.phases {
            ensure!(
                ["1", "2", "3", "4a", "4b"].contains(&p.as_str()),
                "BENCH_PHASES: unknown part {p:?} (parts: 1,2,3,4a,4b)"
            );
        }
        ensure!(c.rate > 0.0 && c.rows_per_commit > 0 && c.flood_rows > 0 && c.flood_conns > 0);
        ensure!(c.tenants > 0 && c.edges_per_subscriber_cluster > 0 && c.ingest_conns > 0);
        Ok(c)
    }
}

fn pick<T>(quick: bool, full: T, small: T) -> T {
    if quick {
        small
    } else {
        full
    }
}

fn progress(msg: &str) {
    eprintln!("[bench {}] {msg}", chrono_free_time());
}

/// Seconds since the run started, for progress lines.
fn chrono_free_time() -> String {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    format!(
        "{:6.1}s",
        START.get_or_init(Instant::now).elapsed().as_secs_f64()
    )
}

/// The server's clock as epoch seconds (every cluster runs on this machine's clock).
async fn server_now(c: &Client) -> Result<f64> {
    Ok(
        c.query_one("SELECT extract(epoch FROM clock_timestamp())::float8", &[])
            .await?
            .get(0),
    )
}

/// Reconcile until settled; fail if it does not settle.
async fn settle(spec: &str) -> Result<()> {
    let topo = Topology::from_toml(spec)?;
    for r in reconcile_all(&topo, 5).await {
        let plan = r?;
        if !(plan.steps.is_empty() && plan.blocked.is_empty()) {
            bail!("topology did not settle after 5 passes:\n{plan}");
        }
    }
    Ok(())
}

/// Insert one row with a known key as the last commit of a phase; since a slot's transactions
/// are applied in commit order, once it is on the regional everything before it is too. Looking
/// it up by primary key costs the regional nothing, unlike polling a count.
async fn marker(edge: &Client, name: &str) -> Result<String> {
    let id = uuid::Uuid::new_v4().to_string();
    exec(
        edge,
        &format!(
            "INSERT INTO orders (facility_id, id, tenant_id, order_number) VALUES ('{FAC}', '{id}', '{TEN}', '{name}')"
        ),
    )
    .await?;
    Ok(id)
}

async fn wait_marker(regional: &Client, id: &str) -> Result<()> {
    let sql = format!("SELECT 1 FROM orders WHERE facility_id = '{FAC}' AND id = '{id}'");
    wait_until("marker row on the regional", T, || async {
        Ok(regional.query_opt(&sql, &[]).await?.map(|_| ()))
    })
    .await
}

fn fmt_rate(x: f64) -> String {
    let s = format!("{:.0}", x);
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 && ch.is_ascii_digit() {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

// ------------------------------------------------------------------ phases 1-3

struct Pair {
    edge: Cluster,
    /// Kept so the cluster lives as long as its client.
    _regional: Cluster,
    ec: Client,
    rc: Client,
}

async fn edge_and_regional() -> Result<Pair> {
    let edge = Cluster::start("bench-edge")?;
    let regional = Cluster::start("bench-regional")?;
    let spec = format!(
        "[[nodes]]\nname = \"regional\"\nkind = \"regional\"\nregion = \"bench\"\nadmin = \"{}\"\n\n\
         [[nodes]]\nname = \"edge\"\nkind = \"edge\"\nregion = \"bench\"\nfacility = \"{FAC}\"\ntenant = \"{TEN}\"\nadmin = \"{}\"\n\n\
         [[flows]]\nfrom = \"edge\"\nto = \"regional\"\ngroup = \"operational\"\n",
        regional.conninfo(),
        edge.conninfo()
    );
    settle(&spec).await?;
    let (ec, rc) = (edge.client().await?, regional.client().await?);
    wait_subscriptions_ready(&rc, T).await?;
    // Only on the regional: apply fills columns the publisher does not send with their
    // default, evaluated per row when the row is applied.
    exec(
        &rc,
        "ALTER TABLE orders ADD COLUMN bench_applied_at timestamptz DEFAULT clock_timestamp()",
    )
    .await?;
    Ok(Pair {
        edge,
        _regional: regional,
        ec,
        rc,
    })
}

fn insert_sql(prefix: &'static str, rows: u64) -> SqlFn {
    Arc::new(move |n| {
        format!(
            "INSERT INTO orders (facility_id, tenant_id, order_number, total, created_at) \
             SELECT '{FAC}', '{TEN}', '{prefix}-{n}-' || g, g, clock_timestamp() FROM generate_series(1, {rows}) g"
        )
    })
}

async fn phase_latency(cfg: &Config, p: &Pair, md: &mut String) -> Result<()> {
    let commits_per_sec = cfg.rate / cfg.rows_per_commit as f64;
    progress(&format!(
        "1. latency: {} rows/s as {commits_per_sec:.0} commits/s of {} rows for {} s",
        cfg.rate, cfg.rows_per_commit, cfg.seconds
    ));
    let writers = connections(&p.edge.conninfo(), 2, "").await?;
    let m0 = MachineStat::take()?;
    let t0 = Instant::now();
    let w = PacedWriter::start(
        writers,
        commits_per_sec,
        insert_sql("lat", cfg.rows_per_commit),
    );
    tokio::time::sleep(Duration::from_secs(cfg.seconds)).await;
    let commits = w.stop().await?;
    let elapsed = t0.elapsed().as_secs_f64();
    let busy = MachineStat::take()?.cores_busy_since(&m0, cores());
    let rows = commits * cfg.rows_per_commit;
    wait_count(
        &p.rc,
        "SELECT 1 FROM orders WHERE order_number LIKE 'lat-%'",
        rows as i64,
        T,
    )
    .await?;
    let r =
        p.rc.query_one(
            "SELECT count(*), count(d),
                    percentile_disc(0.5) WITHIN GROUP (ORDER BY d),
                    percentile_disc(0.9) WITHIN GROUP (ORDER BY d),
                    percentile_disc(0.99) WITHIN GROUP (ORDER BY d),
                    percentile_disc(0.999) WITHIN GROUP (ORDER BY d),
                    max(d)
               FROM (SELECT extract(epoch FROM bench_applied_at - created_at)::float8 * 1000 AS d
                       FROM orders WHERE order_number LIKE 'lat-%') q",
            &[],
        )
        .await?;
    let (n, with_ts): (i64, i64) = (r.get(0), r.get(1));
    ensure!(
        n == rows as i64 && with_ts == n,
        "latency rows: {n} on the regional ({with_ts} stamped), {rows} written"
    );
    let ms = |i: usize| -> f64 { r.get(i) };
    let _ = writeln!(
        md,
        "## 1. Edge -> regional latency (insert-to-apply)\n\n\
         Measured without polling: the edge stamps every row with `created_at = clock_timestamp()` \
         as it inserts it; the regional's copy of `orders` has an extra column \
         `bench_applied_at timestamptz DEFAULT clock_timestamp()`, filled by the apply worker \
         when it applies the row. Latency = applied - created, same machine clock. This is \
         **insert-to-apply**, which bounds commit-to-visible from above (a row is inserted \
         before its transaction commits, and is visible on the regional when the apply \
         transaction commits, right after the last row of that transaction is applied).\n\n\
         | target rows/s | achieved rows/s | commits/s x rows | seconds | rows | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | machine busy (cores of {}) |\n\
         |---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|\n\
         | {} | {} | {:.0} x {} | {:.1} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.2} |\n",
        cores(),
        fmt_rate(cfg.rate),
        fmt_rate(rows as f64 / elapsed),
        commits_per_sec,
        cfg.rows_per_commit,
        elapsed,
        fmt_rate(rows as f64),
        ms(2),
        ms(3),
        ms(4),
        ms(5),
        ms(6),
        busy
    );
    progress(&format!(
        "   p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(2),
        ms(4),
        ms(6)
    ));
    Ok(())
}

async fn phase_sustained(cfg: &Config, p: &Pair, md: &mut String) -> Result<()> {
    progress(&format!(
        "2. sustained: {} connections flooding {}-row commits for {} s",
        cfg.flood_conns, cfg.flood_rows, cfg.sustained_seconds
    ));
    let writers = connections(&p.edge.conninfo(), cfg.flood_conns, "").await?;
    let m0 = MachineStat::take()?;
    let t0 = server_now(&p.ec).await?;
    let commits = flood(
        writers,
        Until::Elapsed(Duration::from_secs(cfg.sustained_seconds)),
        insert_sql("sus", cfg.flood_rows),
    )
    .await?;
    let t1 = server_now(&p.ec).await?;
    let busy_write = MachineStat::take()?.cores_busy_since(&m0, cores());
    let rows = commits * cfg.flood_rows;
    let id = marker(&p.ec, "mark-sus").await?;
    wait_marker(&p.rc, &id).await?;
    let busy_all = MachineStat::take()?.cores_busy_since(&m0, cores());
    let r = p
        .rc
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE extract(epoch FROM bench_applied_at)::float8 <= $1::float8),
                    extract(epoch FROM max(bench_applied_at))::float8
               FROM orders WHERE order_number LIKE 'sus-%'",
            &[&t1],
        )
        .await?;
    let (n, in_window, last): (i64, i64, f64) = (r.get(0), r.get(1), r.get(2));
    ensure!(
        n == rows as i64,
        "sustained: {n} rows on the regional, {rows} written"
    );
    let window = t1 - t0;
    let edge_rate = rows as f64 / window;
    let applied_window = in_window as f64 / window;
    let caught_up = last - t0;
    let applied_total = rows as f64 / caught_up;
    let _ = writeln!(
        md,
        "## 2. Sustained replicated rows/s\n\n\
         The edge writes as fast as it can: {} connections, commits of {} rows (multi-row \
         `INSERT ... SELECT`, each row through the ownership guard trigger), for {} s. Apply \
         times come from `bench_applied_at`; the end is found by a marker row looked up by key.\n\n\
         | edge rows | edge insert rows/s | regional applied rows/s during the write window | applied rows/s from start until caught up | caught up after (s) | ratio applied/edge (until caught up) | machine busy while writing / until caught up (cores of {}) |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n\
         | {} | {} | {} | {} | {:.1} | {:.2} | {:.2} / {:.2} |\n",
        cfg.flood_conns,
        cfg.flood_rows,
        cfg.sustained_seconds,
        cores(),
        fmt_rate(rows as f64),
        fmt_rate(edge_rate),
        fmt_rate(applied_window),
        fmt_rate(applied_total),
        caught_up,
        applied_total / edge_rate,
        busy_write,
        busy_all
    );
    progress(&format!(
        "   edge {edge_rate:.0} rows/s, applied {applied_window:.0} rows/s in window, {applied_total:.0} rows/s until caught up ({caught_up:.1} s)"
    ));
    Ok(())
}

async fn phase_catch_up(cfg: &Config, p: &Pair, md: &mut String) -> Result<()> {
    let commits = cfg.backlog.div_ceil(cfg.flood_rows);
    let rows = commits * cfg.flood_rows;
    progress(&format!(
        "3. catch-up: subscription disabled, backlog of {rows} rows"
    ));
    exec(&p.rc, "ALTER SUBSCRIPTION regional_from_edge DISABLE").await?;
    wait_until("the edge's walsender to go", T, || async {
        let n: i64 =
            p.ec.query_one("SELECT count(*) FROM pg_stat_replication", &[])
                .await?
                .get(0);
        Ok((n == 0).then_some(()))
    })
    .await?;
    let writers = connections(&p.edge.conninfo(), cfg.flood_conns, "").await?;
    let t0 = server_now(&p.ec).await?;
    flood(
        writers,
        Until::Commits(commits),
        insert_sql("bl", cfg.flood_rows),
    )
    .await?;
    let t1 = server_now(&p.ec).await?;
    let id = marker(&p.ec, "mark-bl").await?;
    let edge_rate = rows as f64 / (t1 - t0);
    let retained: i64 = p
        .ec
        .query_one(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint FROM pg_replication_slots WHERE slot_name = 'regional_from_edge_slot'",
            &[],
        )
        .await?
        .get(0);
    let m0 = MachineStat::take()?;
    let t_enable = server_now(&p.rc).await?;
    exec(&p.rc, "ALTER SUBSCRIPTION regional_from_edge ENABLE").await?;
    wait_marker(&p.rc, &id).await?;
    let busy = MachineStat::take()?.cores_busy_since(&m0, cores());
    let r = p
        .rc
        .query_one(
            "SELECT count(*), extract(epoch FROM min(bench_applied_at))::float8, extract(epoch FROM max(bench_applied_at))::float8
               FROM orders WHERE order_number LIKE 'bl-%'",
            &[],
        )
        .await?;
    let (n, first, last): (i64, f64, f64) = (r.get(0), r.get(1), r.get(2));
    let filter = "order_number LIKE 'bl-%'";
    let on_edge = checksum(&p.ec, EDGE_ORDERS, filter, "facility_id, id").await?;
    let on_regional = checksum(&p.rc, EDGE_ORDERS, filter, "facility_id, id").await?;
    ensure!(
        n == rows as i64 && on_edge == on_regional,
        "backlog differs: edge {on_edge:?}, regional {on_regional:?} ({n} rows, {rows} written)"
    );
    let catch_up = last - t_enable;
    let rate = rows as f64 / catch_up;
    let _ = writeln!(
        md,
        "## 3. Catch-up after a backlog\n\n\
         `ALTER SUBSCRIPTION ... DISABLE` on the regional, {} rows written on the edge ({} \
         connections, {}-row commits), then `ENABLE`; catch-up time = last `bench_applied_at` \
         of the backlog - the moment of `ENABLE` (includes the apply worker's start). Verified \
         after: count and md5 checksum of the backlog rows (every column the edge has) equal on \
         both sides.\n\n\
         | backlog rows | WAL retained by the slot | edge insert rows/s | first row applied after (s) | caught up after (s) | catch-up rows/s | ratio catch-up/edge | count and checksum equal | machine busy during catch-up (cores of {}) |\n\
         |---:|---:|---:|---:|---:|---:|---:|---|---:|\n\
         | {} | {:.0} MB | {} | {:.2} | {:.1} | {} | {:.2} | yes ({} rows, md5 {}) | {:.2} |\n",
        fmt_rate(rows as f64),
        cfg.flood_conns,
        cfg.flood_rows,
        cores(),
        fmt_rate(rows as f64),
        retained as f64 / 1e6,
        fmt_rate(edge_rate),
        first - t_enable,
        catch_up,
        fmt_rate(rate),
        rate / edge_rate,
        on_edge.0,
        &on_edge.1[..12],
        busy
    );
    progress(&format!(
        "   edge {edge_rate:.0} rows/s, caught up in {catch_up:.1} s = {rate:.0} rows/s"
    ));
    Ok(())
}

// ------------------------------------------------------------------ phase 4

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn edge_name(k: usize) -> String {
    format!("e{k:02}")
}

fn tenant(cfg: &Config, k: usize) -> String {
    format!("tenant-t{}", (k - 1) % cfg.tenants + 1)
}

fn with_db(conninfo: &str, db: &str) -> String {
    conninfo.replace("dbname=agog", &format!("dbname={db}"))
}

/// One window of phase 4.
struct Window {
    edges: usize,
    seconds: f64,
    ingest_per_s: f64,
    master_per_s: f64,
    regional: CpuUse,
    regional_walsenders: usize,
    master: Option<(CpuUse, usize)>,
    /// Largest `pg_current_wal_lsn() - sent_lsn` of the publishing cluster's walsenders at the
    /// end of the window: how far decoding trails the WAL.
    lag_bytes: i64,
    machine_busy: f64,
}

async fn walsender_pids(c: &Client) -> Result<Vec<i32>> {
    Ok(c.query("SELECT pid FROM pg_stat_replication", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

async fn send_lag(c: &Client) -> Result<i64> {
    Ok(c
        .query_one(
            "SELECT coalesce(max(pg_wal_lsn_diff(pg_current_wal_lsn(), sent_lsn)), 0)::bigint FROM pg_stat_replication",
            &[],
        )
        .await?
        .get(0))
}

/// Layout (a) `shared`: the regional ingest cluster publishes master data to the edges.
/// Layout (b) separate: a master cluster does.
async fn phase_layout(cfg: &Config, shared: bool) -> Result<Vec<Window>> {
    let label = if shared { "a, shared" } else { "b, separate" };
    let many = [("max_wal_senders", "100"), ("max_replication_slots", "100")];
    let regional = Cluster::start_with("bench-reg", &many)?;
    let master = if shared {
        None
    } else {
        Some(Cluster::start_with("bench-master", &many)?)
    };
    let mut subscribers: Vec<Cluster> = Vec::new();
    let mut made = 0usize;
    let publisher = if shared { "reg" } else { "mst" };

    let spec = |n: usize, subscribers: &[Cluster]| -> String {
        let mut s = format!(
            "[[nodes]]\nname = \"reg\"\nkind = \"regional\"\nregion = \"bench\"\nadmin = \"{}\"\n\n",
            regional.conninfo()
        );
        if let Some(m) = &master {
            let _ = writeln!(
                s,
                "[[nodes]]\nname = \"mst\"\nkind = \"master\"\nregion = \"bench\"\nadmin = \"{}\"\n\n\
                 [[flows]]\nfrom = \"mst\"\nto = \"reg\"\ngroup = \"master\"\n",
                m.conninfo()
            );
        }
        for k in 1..=n {
            let cluster = &subscribers[(k - 1) / cfg.edges_per_subscriber_cluster];
            let name = edge_name(k);
            let _ = writeln!(
                s,
                "[[nodes]]\nname = \"{name}\"\nkind = \"edge\"\nregion = \"bench\"\nfacility = \"facility-{name}\"\ntenant = \"{}\"\nadmin = \"{}\"\n\n\
                 [[flows]]\nfrom = \"{publisher}\"\nto = \"{name}\"\ngroup = \"master\"\n",
                tenant(cfg, k),
                with_db(&cluster.conninfo(), &name)
            );
        }
        s
    };

    progress(&format!("4{label}: baseline, no edges"));
    settle(&spec(0, &subscribers)).await?;
    let rc = regional.client().await?;
    if !shared {
        wait_subscriptions_ready(&rc, T).await?;
    }
    // Simulated ingest: what the edges' apply workers would write on the regional, with the
    // settings they run with (the reconciler's subscriptions use synchronous_commit = off;
    // apply runs as session_replication_role = replica, which also passes the ownership guard).
    let ingest_rows = cfg.ingest_rows;
    let ingest = PacedWriter::start(
        connections(
            &regional.conninfo(),
            cfg.ingest_conns,
            &format!(
                "SET session_replication_role = replica; SET synchronous_commit = {}",
                cfg.ingest_sync_commit
            ),
        )
        .await?,
        cfg.ingest_commits,
        Arc::new(move |n| {
            format!(
                "INSERT INTO orders (facility_id, tenant_id, order_number, total) \
                 SELECT 'facility-sim-{:02}', 'tenant-t1', 'ing-{n}-' || g, g FROM generate_series(1, {ingest_rows}) g",
                n % 64
            )
        }),
    );
    let tenants = cfg.tenants;
    let master_sql: SqlFn = Arc::new(move |n| {
        format!(
            "INSERT INTO customers (tenant_id, name, email) VALUES ('tenant-t{}', 'customer {n}', 'c{n}@example.com')",
            n as usize % tenants + 1
        )
    });
    // The master writer goes through the ownership guard: on the master cluster from the start,
    // on the shared regional once it publishes master data (it owns none before).
    let mut master_writer = match &master {
        Some(m) => Some(PacedWriter::start(
            connections(&m.conninfo(), 1, "").await?,
            cfg.master_commits,
            master_sql.clone(),
        )),
        None => None,
    };
    let mc = match &master {
        Some(m) => Some(m.client().await?),
        None => None,
    };

    let mut windows = Vec::new();
    let steps: Vec<usize> = std::iter::once(0)
        .chain(cfg.edges.iter().copied())
        .collect();
    for n in steps {
        if n > 0 {
            progress(&format!("4{label}: {n} edges"));
            while subscribers.len() * cfg.edges_per_subscriber_cluster < n {
                subscribers.push(Cluster::start(&format!(
                    "bench-sub{}",
                    subscribers.len() + 1
                ))?);
            }
            for k in made + 1..=n {
                let cluster = &subscribers[(k - 1) / cfg.edges_per_subscriber_cluster];
                let admin = sync_core::connect(&with_db(&cluster.conninfo(), "postgres")).await?;
                exec(&admin, &format!("CREATE DATABASE {}", edge_name(k))).await?;
            }
            settle(&spec(n, &subscribers)).await?;
            for k in made + 1..=n {
                let cluster = &subscribers[(k - 1) / cfg.edges_per_subscriber_cluster];
                let c = sync_core::connect(&with_db(&cluster.conninfo(), &edge_name(k))).await?;
                wait_subscriptions_ready(&c, T).await?;
            }
            made = n;
            if master_writer.is_none() {
                master_writer = Some(PacedWriter::start(
                    connections(&regional.conninfo(), 1, "").await?,
                    cfg.master_commits,
                    master_sql.clone(),
                ));
            }
        }
        tokio::time::sleep(Duration::from_secs(cfg.warmup)).await;

        let pub_client = mc.as_ref().unwrap_or(&rc);
        let reg_ws = walsender_pids(&rc).await?;
        let mst_ws = match &mc {
            Some(c) => walsender_pids(c).await?,
            None => Vec::new(),
        };
        let i0 = ingest.commits();
        let w0 = master_writer.as_ref().map_or(0, |w| w.commits());
        let m0 = MachineStat::take()?;
        let a_reg = Snapshot::of(&regional)?;
        let a_mst = master.as_ref().map(Snapshot::of).transpose()?;
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(cfg.cpu_window)).await;
        let b_reg = Snapshot::of(&regional)?;
        let b_mst = master.as_ref().map(Snapshot::of).transpose()?;
        let seconds = t0.elapsed().as_secs_f64();
        let machine_busy = MachineStat::take()?.cores_busy_since(&m0, cores());
        let i1 = ingest.commits();
        let w1 = master_writer.as_ref().map_or(0, |w| w.commits());
        let lag_bytes = send_lag(pub_client).await?;
        let w = Window {
            edges: n,
            seconds,
            ingest_per_s: (i1 - i0) as f64 / seconds,
            master_per_s: (w1 - w0) as f64 / seconds,
            regional: cpu_between(&a_reg, &b_reg, &reg_ws),
            regional_walsenders: reg_ws.len(),
            master: match (&a_mst, &b_mst) {
                (Some(a), Some(b)) => Some((cpu_between(a, b, &mst_ws), mst_ws.len())),
                _ => None,
            },
            lag_bytes,
            machine_busy,
        };
        progress(&format!(
            "   regional {:.1}% (walsenders {:.1}%){} ingest {:.0}/s, machine {:.2} cores",
            w.regional.total / seconds * 100.0,
            w.regional.selected / seconds * 100.0,
            w.master
                .map(|(m, _)| format!(
                    ", master cluster {:.1}% (walsenders {:.1}%),",
                    m.total / seconds * 100.0,
                    m.selected / seconds * 100.0
                ))
                .unwrap_or_else(|| ",".into()),
            w.ingest_per_s,
            machine_busy
        ));
        windows.push(w);
    }
    ingest.stop().await?;
    if let Some(w) = master_writer {
        w.stop().await?;
    }
    drop(subscribers);
    Ok(windows)
}

fn pct(cpu_s: f64, secs: f64) -> f64 {
    cpu_s / secs * 100.0
}

fn report_layouts(cfg: &Config, shared: &[Window], separate: &[Window], md: &mut String) {
    let _ = writeln!(
        md,
        "## 4. Publishing-cluster CPU per edge, shared vs separate layout\n\n\
         The regional ingest cluster takes ~{} commits/s of operational writes ({} rows each), \
         **simulated by a paced local writer** ({} connections, `session_replication_role = \
         replica` and `synchronous_commit = {}`; the edges' apply workers run as replica, with the \
         subscriptions' `synchronous_commit = off`), and \
         ~{} commits/s of master-data changes (one `customers` row each, tenants in turn, written \
         through the ownership guard). Edges subscribe to master data with a tenant row filter \
         ({} tenants); each edge is one database in a shared subscriber cluster (up to {} per \
         cluster), made by the reconciler from the spec like any edge. CPU = utime+stime deltas \
         from /proc/<pid>/stat over a {} s window (after {} s warm-up) of the postmaster and all \
         its children; walsenders = the pids of pg_stat_replication. % = of one core. \
         Per-edge = walsender CPU / edges; marginal = (cluster CPU - CPU with no edges) / edges. \
         Lag = largest `pg_current_wal_lsn() - sent_lsn` of its walsenders at the end of the \
         window (decoding that trails the WAL means the walsenders cannot keep up).\n",
        cfg.ingest_commits,
        cfg.ingest_rows,
        cfg.ingest_conns,
        cfg.ingest_sync_commit,
        cfg.master_commits,
        cfg.tenants,
        cfg.edges_per_subscriber_cluster,
        cfg.cpu_window,
        cfg.warmup
    );
    if !shared.is_empty() {
        let _ = writeln!(
        md,
        "### (a) shared: the regional ingest cluster publishes master data\n\n\
         With no edges the regional publishes no master data, so the baseline has no master writes.\n\n\
         | edges | ingest commits/s | master commits/s | regional cluster CPU % | walsenders CPU % | walsender µs/s per edge | walsender µs per commit per edge | marginal µs/s per edge | lag at end | machine busy (cores of {}) |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        cores()
    );
        let base = shared.first().map(|w| w.regional.total / w.seconds);
        for w in shared {
            let ws = w.regional.selected / w.seconds;
            let per_edge = |x: f64| {
                if w.edges == 0 {
                    "-".to_string()
                } else {
                    format!("{:.0}", x / w.edges as f64 * 1e6)
                }
            };
            let commits = w.ingest_per_s + w.master_per_s;
            let per_commit = if w.edges == 0 || commits == 0.0 {
                "-".to_string()
            } else {
                format!("{:.1}", ws / w.edges as f64 / commits * 1e6)
            };
            let _ = writeln!(
                md,
                "| {} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {:.0} kB | {:.2} |",
                w.edges,
                w.ingest_per_s,
                w.master_per_s,
                pct(w.regional.total, w.seconds),
                pct(w.regional.selected, w.seconds),
                per_edge(ws),
                per_commit,
                per_edge(w.regional.total / w.seconds - base.unwrap_or(0.0)),
                w.lag_bytes as f64 / 1e3,
                w.machine_busy
            );
        }
    }
    if !separate.is_empty() {
        let _ = writeln!(
        md,
        "\n### (b) separate: a master cluster publishes master data (to the edges and to the regional)\n\n\
         | edges | ingest commits/s | master commits/s | regional cluster CPU % | regional walsenders | master cluster CPU % | master walsenders (count) CPU % | master walsender µs/s per edge | marginal master-cluster µs/s per edge | lag at end | machine busy (cores of {}) |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        cores()
    );
        let base = separate
            .first()
            .and_then(|w| w.master.map(|(m, _)| m.total / w.seconds));
        for w in separate {
            let (m, n_ws) = w.master.unwrap_or_default();
            let per_edge = |x: f64| {
                if w.edges == 0 {
                    "-".to_string()
                } else {
                    format!("{:.0}", x / w.edges as f64 * 1e6)
                }
            };
            let _ = writeln!(
            md,
            "| {} | {:.0} | {:.1} | {:.1} | {} | {:.1} | ({}) {:.2} | {} | {} | {:.0} kB | {:.2} |",
            w.edges,
            w.ingest_per_s,
            w.master_per_s,
            pct(w.regional.total, w.seconds),
            w.regional_walsenders,
            pct(m.total, w.seconds),
            n_ws,
            pct(m.selected, w.seconds),
            per_edge(m.selected / w.seconds),
            per_edge(m.total / w.seconds - base.unwrap_or(0.0)),
            w.lag_bytes as f64 / 1e3,
            w.machine_busy
        );
        }
    }
    // Extrapolations from the largest fleet measured.
    let _ = writeln!(md);
    // A window counts as "kept up" when the ingest writer reached 95 % of its target.
    let kept_up = |w: &&Window| w.ingest_per_s >= 0.95 * cfg.ingest_commits;
    for w in shared.iter().filter(|w| w.edges > 0 && !kept_up(w)) {
        let _ = writeln!(
            md,
            "Shared, {} edges: the regional did **not** sustain the ingest target \
             ({:.0} of {} commits/s achieved; walsenders {:.0} % of a core, machine {:.2} cores busy).\n",
            w.edges,
            w.ingest_per_s,
            cfg.ingest_commits,
            pct(w.regional.selected, w.seconds),
            w.machine_busy
        );
    }
    if let Some(w) = shared.iter().rev().find(|w| w.edges > 0 && kept_up(w)) {
        let commits = w.ingest_per_s + w.master_per_s;
        let per_commit = w.regional.selected / w.seconds / w.edges as f64 / commits;
        if per_commit > 0.0 {
            let _ = writeln!(
                md,
                "Shared, from {} edges (the largest fleet that kept up): {:.1} µs of walsender \
                 CPU per commit per edge, so the walsenders alone take one core at ~{:.0} edges \
                 at {} ingest commits/s (linear extrapolation: 1 / (µs per commit per edge x \
                 commits/s)).\n",
                w.edges,
                per_commit * 1e6,
                1.0 / (per_commit * (cfg.ingest_commits + cfg.master_commits)),
                cfg.ingest_commits
            );
        }
    }
    if let Some(w) = separate.iter().rev().find(|w| w.edges > 0) {
        if let Some((m, _)) = w.master {
            let per_edge = m.selected / w.seconds / w.edges as f64;
            let _ = writeln!(
                md,
                "Separate, from {} edges: 64 edges would take ~{:.1} % of a core in the master \
                 cluster's walsenders, ~{:.1} % for the whole master cluster (linear \
                 extrapolation).",
                w.edges,
                per_edge * 64.0 * 100.0,
                (m.total / w.seconds) / w.edges as f64 * 64.0 * 100.0
            );
        }
    }
    let _ = writeln!(md);
}

// ------------------------------------------------------------------ main

/// The BENCH_* variables of this run, as a command prefix.
fn env_prefix() -> String {
    let mut vars: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| k.starts_with("BENCH_") && k != "BENCH_REPORT")
        .collect();
    vars.sort();
    vars.iter().map(|(k, v)| format!("{k}={v} ")).collect()
}

async fn run() -> Result<String> {
    let cfg = Config::from_env()?;
    progress(&format!("config {cfg:?}"));
    let started = Instant::now();
    let load0 = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let date = String::from_utf8_lossy(
        &std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()?
            .stdout,
    )
    .trim()
    .to_owned();

    let mut body = String::new();
    let version = {
        let c = Cluster::start("bench-version")?;
        let v: String = c
            .client()
            .await?
            .query_one("SELECT version()", &[])
            .await?
            .get(0);
        v
    };
    if cfg.runs("1") || cfg.runs("2") || cfg.runs("3") {
        let pair = edge_and_regional().await?;
        if cfg.runs("1") {
            phase_latency(&cfg, &pair, &mut body).await?;
        }
        if cfg.runs("2") {
            phase_sustained(&cfg, &pair, &mut body).await?;
        }
        if cfg.runs("3") {
            phase_catch_up(&cfg, &pair, &mut body).await?;
        }
    }
    if cfg.runs("4a") || cfg.runs("4b") {
        let shared = if cfg.runs("4a") {
            phase_layout(&cfg, true).await?
        } else {
            Vec::new()
        };
        let separate = if cfg.runs("4b") {
            phase_layout(&cfg, false).await?
        } else {
            Vec::new()
        };
        report_layouts(&cfg, &shared, &separate, &mut body);
    }

    let mut md = String::new();
    let _ = writeln!(
        md,
        "# AGOG replication bench\n\n\
         - date: {date}\n\
         - machine: {} cores (`nproc`), load average at start: {}\n\
         - PostgreSQL: {version}\n\
         - clusters: the test harness's (one machine, loopback, `fsync = off`, \
         `shared_buffers = 32MB`); edge, regional, subscribers and the bench client share the cores\n\
         - command: `{}cargo bench -p agog-tests --bench replication`\n\
         - config ({}): rate {} rows/s ({} rows/commit) for {} s; flood {} connections x {} rows/commit \
         for {} s; backlog {} rows; edges {:?}; ingest {} commits/s x {} rows (synchronous_commit = {}); \
         master {} commits/s; CPU window {} s; parts {}\n\
         - run took {:.0} s\n",
        cores(),
        load0.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        env_prefix(),
        if cfg.quick { "quick" } else { "full" },
        cfg.rate,
        cfg.rows_per_commit,
        cfg.seconds,
        cfg.flood_conns,
        cfg.flood_rows,
        cfg.sustained_seconds,
        cfg.backlog,
        cfg.edges,
        cfg.ingest_commits,
        cfg.ingest_rows,
        cfg.ingest_sync_commit,
        cfg.master_commits,
        cfg.cpu_window,
        cfg.phases.join(","),
        started.elapsed().as_secs_f64()
    );
    md.push_str(&body);
    Ok(md)
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let md = rt.block_on(run())?;
    print!("{md}");
    if let Ok(path) = std::env::var("BENCH_REPORT") {
        if !path.is_empty() {
            std::fs::write(&path, &md).with_context(|| format!("write {path}"))?;
            eprintln!("report written to {path}");
        }
    }
    Ok(())
}
