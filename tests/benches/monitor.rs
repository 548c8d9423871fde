//! The hub's health monitor at fleet scale: 10,000 edges, each `/health` on its own loopback
//! address (127.1.x.y:4010), some slow, some dead, some flapping, watched by one real `hub serve`
//! process. Reports the hub's CPU per 30 s round, how late checks start against their schedule,
//! and the time from an edge going down to its alert arriving at a Slack receiver.
//!
//!     cargo build --release -p hub && AGOG_BIN_DIR=$PWD/target/release cargo bench -p agog-tests --bench monitor
//!     knobs: BENCH_EDGES (10000), BENCH_ROUNDS (2 measured rounds of 30 s), BENCH_DOWN (20)

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agog_tests::cpu;
use agog_tests::hub_process::HubProcess;
use agog_tests::receivers::slack;
use agog_tests::Cluster;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use axum::Router;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What an edge does: most are healthy; every 20th is dead (nothing listens), every 20th slow
/// (2 s answers, inside the 5 s timeout), every 20th flapping (unhealthy one minute in two).
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Healthy,
    Slow,
    Dead,
    Flapping,
}

fn kind(i: usize) -> Kind {
    match i % 20 {
        1 => Kind::Dead,
        2 => Kind::Slow,
        3 => Kind::Flapping,
        _ => Kind::Healthy,
    }
}

fn addr(i: usize) -> SocketAddr {
    let n = i + 256;
    SocketAddr::from((
        Ipv4Addr::new(127, 1, (n / 256) as u8, (n % 256) as u8),
        4010,
    ))
}

struct Edge {
    kind: Kind,
    down: AtomicBool,
    hits: AtomicU64,
}

async fn health(State(e): State<Arc<Edge>>) -> impl IntoResponse {
    e.hits.fetch_add(1, Ordering::Relaxed);
    if e.kind == Kind::Slow {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let flapping_down = e.kind == Kind::Flapping && (chrono::Utc::now().timestamp() / 60) % 2 == 1;
    if e.down.load(Ordering::Relaxed) || flapping_down {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"status": "unhealthy", "reasons": ["bench"]})),
        )
    } else {
        (StatusCode::OK, Json(healthy_report().clone()))
    }
}

/// A healthy report the size of a real agent's (one slot, one subscription, tunnel), so the
/// hub parses what it parses in the field.
fn healthy_report() -> &'static serde_json::Value {
    static REPORT: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    REPORT.get_or_init(|| {
        serde_json::json!({
            "status": "healthy", "reasons": [], "facility_id": "facility-bench-0", "node": "bench-0",
            "version": "0.1.0", "uptime_seconds": 86400, "checked_at": "2026-11-25T17:00:00.000Z",
            "schema_version": 3,
            "postgres": {"up": true, "version": "16.2", "disk_free_bytes": 50_000_000_000u64,
                         "disk_total_bytes": 64_000_000_000u64, "restarts": 0, "error": null},
            "replication": {
                "wal_keep_limit_bytes": 8_589_934_592u64,
                "slots": [{"name": "us_east_from_bench_0_slot", "active": true, "retained_bytes": 1_048_576,
                           "wal_status": "reserved", "lag_bytes": 0, "replay_lag_seconds": null}],
                "subscriptions": [{"name": "bench_0_from_us_east", "enabled": true, "worker_running": true,
                                   "last_message_at": "2026-11-25T16:59:58.000Z", "last_message_age_seconds": 2.1,
                                   "apply_errors": 0, "sync_errors": 0, "lag_bytes": 0}]
            },
            "reconcile": {"last_run_at": "2026-11-25T16:59:30.000Z", "ok": true, "steps_applied": 0,
                          "blocked": [], "error": null},
            "tunnel": {"kind": "wireguard", "up": true, "last_handshake_at": "2026-11-25T16:58:40.000Z"}
        })
    })
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let edges_n = env_or("BENCH_EDGES", 10_000);
    let rounds = env_or("BENCH_ROUNDS", 2);
    let down_n = env_or("BENCH_DOWN", 20);
    let db = Cluster::start_with("monbench", &[("max_connections", "200")])?;
    let slack_rx = slack::start().await;

    // The edges.
    let mut edges = Vec::with_capacity(edges_n);
    for i in 0..edges_n {
        let e = Arc::new(Edge {
            kind: kind(i),
            down: AtomicBool::new(false),
            hits: AtomicU64::new(0),
        });
        if e.kind != Kind::Dead {
            let listener = tokio::net::TcpListener::bind(addr(i)).await?;
            let app = Router::new()
                .route("/health", get(health))
                .with_state(e.clone());
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
        }
        edges.push(e);
    }
    eprintln!("{edges_n} edges listening");

    let config = format!(
        "region = \"us-east\"\ndatabase = \"{}\"\n[monitor]\ninterval_secs = 30\ntimeout_secs = 5\n\
         [[alerts.channels]]\nname = \"ops\"\nkind = \"slack\"\nwebhook_url = \"{}\"\n",
        db.conninfo(),
        slack_rx.webhook_url()
    );
    let mut hub = HubProcess::new("bench", &config)?;
    // Migrate, then register the fleet with checks spread over one interval.
    let (code, _, err) = hub.cli(&["edges", "--json"])?;
    anyhow::ensure!(code == 0, "{err}");
    let c = db.client().await?;
    c.batch_execute(&format!(
        "INSERT INTO agog_hub.edges (facility_id, node, tenant_id, region, display_name, health_url, next_check_at)
         SELECT 'facility-bench-' || g, 'bench-' || g, 'tenant-bench', 'us-east', 'Bench ' || g,
                'http://127.1.' || ((g + 256) / 256) || '.' || ((g + 256) % 256) || ':4010/health',
                now() + (g % 30) * interval '1 second'
           FROM generate_series(0, {}) g",
        edges_n - 1
    ))
    .await?;
    hub.start()?;
    let pid = hub.pid().unwrap() as i32;

    // Warm-up round: every edge reaches its steady state (dead ones go offline after 60 s).
    eprintln!("warm-up: 70 s");
    tokio::time::sleep(Duration::from_secs(70)).await;

    // Take some healthy edges down and time their alerts, while measuring CPU.
    let victims: Vec<usize> = (0..edges_n)
        .filter(|i| kind(*i) == Kind::Healthy)
        .step_by(97)
        .take(down_n)
        .collect();
    let alerts_before = slack_rx.accepted().len();
    let cpu0 = cpu::read_stat(pid).expect("hub stat");
    let db0 = cpu::Snapshot::of(&db)?;
    let t0 = Instant::now();
    for v in &victims {
        edges[*v].down.store(true, Ordering::Relaxed);
    }
    let mut alert_times: Vec<f64> = Vec::new();
    let window = Duration::from_secs(30 * rounds as u64);
    while t0.elapsed() < window.max(Duration::from_secs(90)) && alert_times.len() < victims.len() {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let msgs = slack_rx.accepted();
        alert_times = victims
            .iter()
            .filter_map(|v| {
                let tag = format!("(facility-bench-{v})");
                msgs[alerts_before..]
                    .iter()
                    .any(|m| {
                        let t = m["text"].as_str().unwrap_or_default();
                        t.contains("OFFLINE: ") && t.contains(&tag)
                    })
                    .then(|| t0.elapsed().as_secs_f64())
            })
            .collect();
    }
    while t0.elapsed() < window {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = cpu::read_stat(pid).expect("hub stat");
    let db1 = cpu::Snapshot::of(&db)?;
    let tps = cpu::ticks_per_second();
    let hub_cpu_s = (cpu1.ticks - cpu0.ticks) as f64 / tps;
    let db_cpu = cpu::cpu_between(&db0, &db1, &[]);

    // Check start lateness against the schedule, from the last check of every edge.
    let rows = c
        .query(
            "SELECT extract(epoch FROM last_check_at - (next_check_at - interval '30 seconds'))::float8 * 1000
                    - coalesce(last_latency_ms, 0)
               FROM agog_hub.edges WHERE last_check_at IS NOT NULL",
            &[],
        )
        .await?;
    let mut late: Vec<f64> = rows.iter().map(|r| r.get::<_, f64>(0).max(0.0)).collect();
    late.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let checked: i64 = c
        .query_one("SELECT count(*) FROM agog_hub.edges WHERE last_check_at > now() - interval '35 seconds'", &[])
        .await?
        .get(0);
    let states = c
        .query(
            "SELECT state, count(*) FROM agog_hub.edges GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await?;
    hub.stop();

    let mut alert_sorted = alert_times.clone();
    alert_sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "# Hub monitor at fleet scale ({})\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    println!("Command: `cargo build --release -p hub && AGOG_BIN_DIR=$PWD/target/release cargo bench -p agog-tests --bench monitor` (BENCH_EDGES={edges_n}, BENCH_ROUNDS={rounds}, BENCH_DOWN={down_n}); nproc = {}\n", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0));
    println!("Edges: {edges_n} (1 in 20 dead, 1 in 20 answering in 2 s, 1 in 20 flapping each minute), interval 30 s, timeout 5 s, one hub replica.\n");
    println!("| figure | value |\n|---|---:|");
    println!(
        "| hub CPU per 30 s round | {:.2} s ({:.1} % of one core) |",
        hub_cpu_s * 30.0 / elapsed,
        hub_cpu_s / elapsed * 100.0
    );
    println!(
        "| regional PostgreSQL CPU per 30 s round | {:.2} s ({:.1} % of one core) |",
        db_cpu.total * 30.0 / elapsed,
        db_cpu.total / elapsed * 100.0
    );
    println!("| edges checked in the last 35 s | {checked} of {edges_n} |");
    println!(
        "| check start lateness p50 / p99 / max | {:.0} / {:.0} / {:.0} ms |",
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        late.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "| edges taken down / alerted | {} / {} |",
        victims.len(),
        alert_times.len()
    );
    println!(
        "| down -> alert p50 / max | {:.1} / {:.1} s |",
        percentile(&alert_sorted, 0.5),
        alert_sorted.last().copied().unwrap_or(f64::NAN)
    );
    let states: Vec<String> = states
        .iter()
        .map(|r| format!("{} {}", r.get::<_, String>(0), r.get::<_, i64>(1)))
        .collect();
    println!("| edge states at the end | {} |", states.join(", "));
    Ok(())
}
