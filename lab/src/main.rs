//! lab: a whole two-region fleet on one machine. `up` starts it (running `scripts/setup.sh`
//! for PostgreSQL 16 first), `status`, `write`, `fail`/`heal` and `down` work on it.
//!
//! Everything lives in one directory (default `/tmp/agog-lab`, or `--dir` / `AGOG_LAB_DIR`);
//! its daemons run in sessions of their own, so they outlive the command that started them.
//! Exit codes: 0 success; 1 a command failed; 2 bad usage.

mod binaries;
mod down;
mod layout;
mod outage;
mod seed;
mod sink;
mod state;
mod status;
mod up;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

use state::LabState;

#[derive(Parser)]
#[command(
    name = "lab",
    version,
    about = "A two-region AGOG fleet on this machine"
)]
struct Cli {
    /// Where the lab keeps its databases, configs, logs and state.
    #[arg(
        long,
        global = true,
        env = "AGOG_LAB_DIR",
        default_value = "/tmp/agog-lab"
    )]
    dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the fleet: 2 regional databases and hubs, 3 edges enrolled with tokens.
    Up {
        /// How often each hub checks each edge's /health.
        #[arg(long, default_value_t = 5)]
        check_interval: u64,
        /// No healthy answer for this long: offline, and an alert.
        #[arg(long, default_value_t = 30)]
        offline_after: u64,
        /// How often open dashboard pages refresh.
        #[arg(long, default_value_t = 3)]
        refresh: u64,
    },
    /// Every node with its ports and URLs.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Steady traffic: picks, receipts and orders on every edge, master data in every region.
    Write {
        /// Stop after this long (default: until Ctrl-C).
        #[arg(long)]
        seconds: Option<u64>,
        /// Writes per second on each edge.
        #[arg(long, default_value_t = 5)]
        rate: u32,
    },
    /// An outage: stop a facility's agent (and its PostgreSQL).
    Fail { facility: String },
    /// End the outage: start the facility's agent again.
    Heal { facility: String },
    /// Stop everything the lab started and remove its directory.
    Down,
    /// (internal) the alert sink process.
    #[command(hide = true)]
    Sink {
        #[arg(long)]
        port: u16,
    },
}

/// Progress lines with the time since the command started.
pub struct Progress {
    started: Instant,
}

impl Progress {
    pub fn step(&self, what: &str) {
        eprintln!("[{:>5.1}s] {what}", self.started.elapsed().as_secs_f64());
    }
}

/// How the user invoked the lab, for the hints it prints.
fn invocation() -> &'static str {
    if std::env::var_os("CARGO").is_some() {
        "cargo run -p lab --"
    } else {
        "lab"
    }
}

/// Start this binary again with `args`, detached, its output in `log`. Returns its pid.
pub fn spawn_self(args: &[&str], log: &Path) -> anyhow::Result<u32> {
    use std::os::unix::process::CommandExt;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(args)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    Ok(cmd.spawn()?.id())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let p = Progress {
        started: Instant::now(),
    };
    if let Command::Sink { port } = cli.command {
        return finish(runtime().block_on(sink::run(port)));
    }
    // Before any thread: it may set AGOG_BIN_DIR.
    if matches!(cli.command, Command::Up { .. } | Command::Heal { .. }) {
        if let Err(e) = binaries::prepare(&|s| p.step(s)) {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    }
    finish(runtime().block_on(run(cli, &p)))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn finish(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(dir: &Path) -> anyhow::Result<LabState> {
    LabState::load(dir)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no lab in {} (start one with `{} up`)",
            dir.display(),
            invocation()
        )
    })
}

async fn run(cli: Cli, p: &Progress) -> anyhow::Result<()> {
    let dir = cli.dir;
    let lab = invocation();
    match cli.command {
        Command::Up {
            check_interval,
            offline_after,
            refresh,
        } => {
            anyhow::ensure!(
                check_interval >= 1 && offline_after >= check_interval && refresh >= 1,
                "--check-interval and --refresh at least 1, --offline-after at least the check interval"
            );
            let _lock = state::lock(&dir)?;
            if let Some(st) = LabState::load(&dir)? {
                let v = status::report(&st).await;
                status::print(&v);
                if st.complete {
                    eprintln!("\nThe lab is up already (`{lab} down` stops it).");
                    return Ok(());
                }
                anyhow::bail!(
                    "a lab whose start did not finish is in {}: `{lab} down` removes it, then `{lab} up` again",
                    dir.display()
                );
            }
            p.step("PostgreSQL 16 (scripts/setup.sh, a minute the first time)");
            let pg = tokio::task::spawn_blocking(|| agog_tests::pg_bin().to_path_buf()).await?;
            p.step(&format!("PostgreSQL 16 in {}", pg.display()));
            let st = up::up(
                &dir,
                &up::Options {
                    check_interval_secs: check_interval,
                    offline_after_secs: offline_after,
                    refresh_secs: refresh,
                },
                p,
            )
            .await
            .map_err(|e| {
                e.context(format!(
                    "the lab did not start; logs are in {}; `{lab} down` removes it",
                    dir.display()
                ))
            })?;
            summary(&st, p, lab);
        }
        Command::Status { json } => {
            let st = load(&dir)?;
            let v = status::report(&st).await;
            if json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                status::print(&v);
            }
        }
        Command::Write { seconds, rate } => write(&load(&dir)?, seconds, rate, p).await?,
        Command::Fail { facility } => {
            let _lock = state::lock(&dir)?;
            let mut st = load(&dir)?;
            let id = outage::fail(&mut st, &facility).await?;
            println!(
                "{id}: agent and PostgreSQL stopped. Its hub shows it OFFLINE after {} s without a healthy answer \
                 and alerts the sink; its inventory turns STALE with the banner. `{lab} heal {id}` ends it.",
                st.offline_after_secs
            );
        }
        Command::Heal { facility } => {
            let _lock = state::lock(&dir)?;
            let mut st = load(&dir)?;
            p.step(&format!("starting the agent of {facility}"));
            let id = outage::heal(&mut st, &facility).await?;
            println!(
                "{id} is healthy again; its hub marks it online after 2 healthy checks and sends the recovery."
            );
        }
        Command::Down => {
            let _lock = state::lock(&dir)?;
            match LabState::load(&dir)? {
                Some(st) => down::down(&st, &|s| p.step(s))?,
                None => {
                    eprintln!("no lab in {}", dir.display());
                }
            }
        }
        Command::Sink { .. } => unreachable!("handled in main"),
    }
    Ok(())
}

fn summary(st: &LabState, p: &Progress, lab: &str) {
    p.step("the lab is up");
    let login = st.login.as_ref().expect("up makes the login");
    let first = &st.regions[0];
    println!();
    println!("AGOG lab: 2 regions, 3 edges, in {}", st.dir.display());
    println!();
    for r in &st.regions {
        println!("  Dashboard {:<11} {}", r.region, r.dashboard_url());
    }
    println!(
        "  Sign in               {} / {}   (every tenant)",
        login.operator, login.password
    );
    println!(
        "                        {} / {}   ({} only)",
        login.tenant_operator, login.tenant_password, login.tenant
    );
    println!(
        "  Read API              curl -H 'Authorization: Bearer {}' {}/api/v1/facilities/facility-la-001/inventory",
        login.token,
        first.dashboard_url()
    );
    if let Some(s) = &st.sink {
        println!("  Alerts (sink)         {}/", s.url());
    }
    println!();
    println!("Try next:");
    println!("  {lab} write                     steady traffic on every edge and region (Ctrl-C stops it)");
    println!(
        "  {lab} fail facility-la-001      LA drops off: OFFLINE within ~{} s, an alert in the sink, STALE inventory",
        st.offline_after_secs + st.check_interval_secs
    );
    println!("  {lab} heal facility-la-001      LA comes back");
    println!("  {lab} status [--json]           every node, its ports and URLs");
    println!(
        "  {lab} down                      stop everything and remove {}",
        st.dir.display()
    );
}

async fn write(st: &LabState, seconds: Option<u64>, rate: u32, p: &Progress) -> anyhow::Result<()> {
    let interval = Duration::from_millis(1000 / rate.clamp(1, 100) as u64);
    let until = seconds.map(|s| Instant::now() + Duration::from_secs(s));
    let mut edges: Vec<(state::EdgeState, Option<tokio_postgres::Client>)> =
        st.edges.iter().map(|e| (e.clone(), None)).collect();
    let mut regions: Vec<(String, String, Option<tokio_postgres::Client>)> = st
        .regions
        .iter()
        .map(|r| (r.region.clone(), r.conninfo(), None))
        .collect();
    let (mut ok, mut failed) = (0u64, 0u64);
    let mut last_report = Instant::now();
    p.step(&format!(
        "writing {rate}/s on each edge and 1/s in each region{}",
        if seconds.is_none() {
            "; Ctrl-C stops"
        } else {
            ""
        }
    ));
    let mut round = 0u64;
    loop {
        round += 1;
        for (e, client) in edges.iter_mut() {
            if client.is_none() {
                *client = sync_core::connect(&e.conninfo()).await.ok();
            }
            let Some(c) = client.as_mut() else {
                failed += 1;
                continue;
            };
            match seed::edge_work(c, e, round).await {
                Ok(()) => ok += 1,
                Err(_) => {
                    failed += 1;
                    *client = None;
                }
            }
        }
        if round % rate.max(1) as u64 == 0 {
            for (_, conninfo, client) in regions.iter_mut() {
                if client.is_none() {
                    *client = sync_core::connect(conninfo).await.ok();
                }
                if let Some(c) = client.as_ref() {
                    match seed::region_work(c).await {
                        Ok(()) => ok += 1,
                        Err(_) => {
                            failed += 1;
                            *client = None;
                        }
                    }
                }
            }
        }
        if last_report.elapsed() >= Duration::from_secs(5) {
            p.step(&format!(
                "{ok} writes{}",
                if failed > 0 {
                    format!(", {failed} refused (a facility is down?)")
                } else {
                    String::new()
                }
            ));
            last_report = Instant::now();
        }
        if until.is_some_and(|u| Instant::now() >= u) {
            break;
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    // The total on stdout, for scripts.
    println!("{ok} writes, {failed} refused");
    Ok(())
}
