use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

/// Where throwaway clusters live. Short, because the unix socket path must fit in 107 bytes.
const BASE: &str = "/tmp/agog-pg";
const DB: &str = "agog";

/// Settings every test cluster gets: what logical replication needs, sized for a dozen peers,
/// and durability off (a test cluster never survives a crash of the machine anyway).
const SETTINGS: &str = "
listen_addresses = '127.0.0.1'
wal_level = logical
max_wal_senders = 48
max_replication_slots = 48
max_logical_replication_workers = 40
max_worker_processes = 64
max_sync_workers_per_subscription = 2
wal_retrieve_retry_interval = '500ms'
fsync = off
full_page_writes = off
shared_buffers = '32MB'
max_connections = 100
log_min_messages = warning
log_line_prefix = '%m [%p] %a '
";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// The directory holding `postgres`, `initdb`, `pg_ctl` and `psql`.
pub fn pg_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Ok(p) = std::env::var("AGOG_PG_BIN") {
            return PathBuf::from(p);
        }
        let setup = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/setup.sh");
        let out = Command::new("bash")
            .arg(&setup)
            .output()
            .expect("run scripts/setup.sh");
        assert!(
            out.status.success(),
            "scripts/setup.sh failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8_lossy(&out.stdout);
        PathBuf::from(
            stdout
                .lines()
                .last()
                .expect("setup.sh prints the bin dir")
                .trim(),
        )
    })
}

fn run_as_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn pg_user() -> String {
    std::env::var("AGOG_PG_USER").unwrap_or_else(|_| "agogpg".into())
}

/// A command that runs as the unprivileged cluster user when we are root.
fn pg_command(program: &str) -> Command {
    let path = pg_bin().join(program);
    if run_as_root() {
        let mut c = Command::new("runuser");
        c.arg("-u").arg(pg_user()).arg("--").arg(path);
        c
    } else {
        Command::new(path)
    }
}

/// As [`pg_command`], inside network namespace `netns` when given (`ip netns exec`).
fn pg_command_in(program: &str, netns: Option<&str>) -> Command {
    let Some(ns) = netns else {
        return pg_command(program);
    };
    let inner = pg_command(program);
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(inner.get_program());
    c.args(inner.get_args());
    c
}

fn check(out: Output, what: &str) -> Result<Output> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

fn chown_to_pg_user(path: &Path) -> Result<()> {
    if run_as_root() {
        check(
            Command::new("chown")
                .arg("-R")
                .arg(pg_user())
                .arg(path)
                .output()?,
            "chown",
        )?;
    }
    Ok(())
}

fn base_dir() -> Result<PathBuf> {
    let base = PathBuf::from(BASE);
    fs::create_dir_all(&base)?;
    fs::set_permissions(&base, fs::Permissions::from_mode(0o755)).ok();
    Ok(base)
}

fn pid_alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 || *libc::__errno_location() == libc::EPERM }
}

/// Stop and remove clusters whose test process is gone (killed, so its Drop never ran).
fn reap_orphans(base: &Path) {
    let Ok(entries) = fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let dir = e.path();
        let Some(owner) = fs::read_to_string(dir.join("owner.pid"))
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        else {
            continue;
        };
        if !pid_alive(owner) {
            let _ = pg_command("pg_ctl")
                .arg("-D")
                .arg(dir.join("data"))
                .args(["-m", "immediate", "stop"])
                .output();
            let _ = fs::remove_dir_all(&dir);
        }
    }
}

/// An initialised data directory with the `agog` database, made once per machine and
/// copied for every cluster (initdb costs a second; a copy, milliseconds).
fn template() -> Result<PathBuf> {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    if let Some(t) = TEMPLATE.get() {
        return Ok(t.clone());
    }
    let base = base_dir()?;
    reap_orphans(&base);
    let version = String::from_utf8_lossy(
        &Command::new(pg_bin().join("postgres"))
            .arg("--version")
            .output()?
            .stdout,
    )
    .trim()
    .replace(|c: char| !c.is_ascii_alphanumeric(), "_");
    let tpl = base.join(format!("template-{version}-{}", fnv(SETTINGS)));
    // Test processes run in parallel (nextest runs one per test): one builds, the others wait.
    let lock = fs::File::create(base.join("template.lock"))?;
    // SAFETY: flock on a file descriptor we own; released when `lock` is dropped.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&lock), libc::LOCK_EX) } != 0 {
        bail!("cannot lock {}/template.lock", base.display());
    }
    if !tpl.join("ready").exists() {
        let tmp = base.join(format!("template-tmp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp)?;
        chown_to_pg_user(&tmp)?;
        let data = tmp.join("data");
        check(
            pg_command("initdb")
                .arg("-D")
                .arg(&data)
                .args([
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                ])
                .output()?,
            "initdb",
        )?;
        let conf = data.join("postgresql.conf");
        let mut text = fs::read_to_string(&conf)?;
        text.push_str(SETTINGS);
        fs::write(&conf, text)?;
        let port = free_port()?;
        start_postgres(&tmp, port)?;
        let created = check(
            pg_command("psql")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "postgres",
                    "-d",
                    "postgres",
                    "-qc",
                ])
                .arg(format!("CREATE DATABASE {DB}"))
                .output()?,
            "create database",
        );
        let stopped = check(
            pg_command("pg_ctl")
                .arg("-D")
                .arg(&data)
                .args(["-m", "fast", "-w", "stop"])
                .output()?,
            "stop",
        );
        created?;
        stopped?;
        let _ = fs::remove_file(data.join("postmaster.opts"));
        fs::write(tmp.join("ready"), "")?;
        let _ = fs::remove_dir_all(&tpl);
        fs::rename(&tmp, &tpl)?;
    }
    let _ = TEMPLATE.set(tpl.clone());
    Ok(tpl)
}

fn fnv(s: &str) -> u32 {
    s.bytes().fold(0x811c9dc5u32, |h, b| {
        (h ^ b as u32).wrapping_mul(0x01000193)
    })
}

pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn start_postgres(dir: &Path, port: u16) -> Result<()> {
    start_postgres_in(dir, port, None)
}

fn start_postgres_in(dir: &Path, port: u16, netns: Option<&str>) -> Result<()> {
    let data = dir.join("data");
    check(
        pg_command_in("pg_ctl", netns)
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("postgres.log"))
            .arg("-o")
            .arg(format!("-p {port} -k {}", dir.display()))
            .args(["-w", "-t", "30", "start"])
            .output()?,
        "pg_ctl start",
    )?;
    Ok(())
}

/// A fresh directory under the harness base, owned by the cluster user, reaped with the
/// clusters if this process dies without cleaning up.
pub fn scratch_dir(name: &str) -> Result<PathBuf> {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let dir = base_dir()?.join(format!("{}-{}-{n}", std::process::id(), name));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("owner.pid"), std::process::id().to_string())?;
    chown_to_pg_user(&dir)?;
    Ok(dir)
}

/// Create `dir` (and its parents) owned by the cluster user, as a box or a cluster needs it.
pub fn owned_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).ok();
    chown_to_pg_user(dir)
}

/// A throwaway PostgreSQL 16 cluster with an `agog` database, stopped and deleted on drop
/// (unless made with [`Cluster::start_in`] or [`Cluster::attach`]: the lab's clusters outlive
/// the command that started them).
pub struct Cluster {
    pub name: String,
    pub dir: PathBuf,
    pub port: u16,
    keep: bool,
    /// The network namespace the server runs in; reached over its unix socket from anywhere.
    pub netns: Option<String>,
}

impl Cluster {
    /// Start a new cluster on a free loopback port.
    pub fn start(name: &str) -> Result<Cluster> {
        Self::start_with(name, &[])
    }

    /// Start a new cluster with extra `postgresql.conf` settings.
    pub fn start_with(name: &str, settings: &[(&str, &str)]) -> Result<Cluster> {
        Self::create(name, scratch_dir(name)?, settings, false, None)
    }

    /// A new cluster inside network namespace `netns`, listening on every address there
    /// (`listen_addresses = '*'`; password logins from any address) besides its unix socket,
    /// which [`Cluster::conninfo`] uses.
    pub fn start_in_netns(name: &str, netns: &str, settings: &[(&str, &str)]) -> Result<Cluster> {
        let mut all = vec![("listen_addresses", "*")];
        all.extend_from_slice(settings);
        Self::create(name, scratch_dir(name)?, &all, false, Some(netns))
    }

    /// Start a new cluster in `dir` (which must not exist yet), kept when dropped: it runs until
    /// [`Cluster::destroy`]. Not reaped with the tests' clusters.
    pub fn start_in(name: &str, dir: PathBuf) -> Result<Cluster> {
        anyhow::ensure!(!dir.exists(), "{} exists already", dir.display());
        owned_dir(&dir)?;
        Self::create(name, dir, &[], true, None)
    }

    /// A kept cluster started earlier (by another process) in `dir` on `port`.
    pub fn attach(name: &str, dir: PathBuf, port: u16) -> Cluster {
        Cluster {
            name: name.to_owned(),
            dir,
            port,
            keep: true,
            netns: None,
        }
    }

    /// Whether the server in `dir` runs (`pg_ctl status`).
    pub fn running(&self) -> bool {
        pg_command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("status")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    /// Stop the server and delete its directory (what dropping a test's cluster does).
    pub fn destroy(mut self) {
        self.keep = false;
    }

    fn create(
        name: &str,
        dir: PathBuf,
        settings: &[(&str, &str)],
        keep: bool,
        netns: Option<&str>,
    ) -> Result<Cluster> {
        let tpl = template()?;
        check(
            Command::new("cp")
                .arg("-a")
                .arg(tpl.join("data"))
                .arg(dir.join("data"))
                .output()?,
            "copy template",
        )?;
        if !settings.is_empty() {
            let conf = dir.join("data/postgresql.conf");
            let mut text = fs::read_to_string(&conf)?;
            for (k, v) in settings {
                text.push_str(&format!("\n{k} = '{}'\n", v.replace('\'', "''")));
            }
            fs::write(&conf, text)?;
        }
        if netns.is_some() {
            // Peers in other namespaces (edges through their tunnel) log in with passwords.
            let hba = dir.join("data/pg_hba.conf");
            let mut text = fs::read_to_string(&hba)?;
            text.push_str("\nhost all all 0.0.0.0/0 scram-sha-256\nhost replication all 0.0.0.0/0 scram-sha-256\n");
            fs::write(&hba, text)?;
        }
        chown_to_pg_user(&dir)?;
        let mut cluster = Cluster {
            name: name.to_owned(),
            dir,
            port: 0,
            keep,
            netns: netns.map(str::to_owned),
        };
        let mut last = None;
        for _ in 0..5 {
            // Another test may grab the port between our probe and postgres' bind: retry.
            cluster.port = free_port()?;
            match start_postgres_in(&cluster.dir, cluster.port, netns) {
                Ok(()) => return Ok(cluster),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap()).with_context(|| format!("start cluster {name}"))
    }

    /// libpq connection string of the `agog` database as the superuser. No `connect_timeout`:
    /// subscriptions use it too, and a table-sync worker that times out connecting on a loaded
    /// machine counts a sync error (our own clients get a 5 s default from sync_core::connect).
    pub fn conninfo(&self) -> String {
        if self.netns.is_some() {
            return format!(
                "host={} port={} dbname={DB} user=postgres",
                self.dir.display(),
                self.port
            );
        }
        format!(
            "host=127.0.0.1 port={} dbname={DB} user=postgres",
            self.port
        )
    }

    pub async fn client(&self) -> Result<tokio_postgres::Client> {
        sync_core::connect(&self.conninfo())
            .await
            .with_context(|| format!("connect to cluster {}", self.name))
    }

    /// Stop the server (a clean shutdown); the data stays for [`Cluster::restart`].
    pub fn stop(&self) -> Result<()> {
        check(
            pg_command("pg_ctl")
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-m", "fast", "-w", "stop"])
                .output()?,
            "pg_ctl stop",
        )?;
        Ok(())
    }

    /// Start the server again on the same port.
    pub fn restart(&self) -> Result<()> {
        start_postgres_in(&self.dir, self.port, self.netns.as_deref())
    }

    /// The server log, for assertion messages.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        if std::thread::panicking() || std::env::var_os("AGOG_KEEP_LOGS").is_some() {
            // Keep the server log of a failed test for the post-mortem.
            let keep = PathBuf::from("/tmp/agog-failed");
            let _ = fs::create_dir_all(&keep);
            let _ = fs::copy(
                self.dir.join("postgres.log"),
                keep.join(format!("{}-{}.log", self.name, self.port)),
            );
        }
        let _ = pg_command("pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
