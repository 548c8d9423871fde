//! The local PostgreSQL 16 in managed mode: initdb on a bare disk, the settings logical
//! replication needs, pg_hba that lets the replication role in only from the regional, and a
//! supervisor that restarts the server with backoff after a crash.

use std::ffi::CString;
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::config::{EdgeConfig, PostgresConfig};

/// Marker line that includes our settings file from postgresql.conf.
const INCLUDE_LINE: &str = "include_if_exists = 'agog.conf'  # settings managed by edge-agent";

/// What the supervisor tells the rest of the agent.
#[derive(Debug, Default)]
pub struct ServerState {
    pub up: AtomicBool,
    pub restarts: AtomicU32,
}

/// The uid/gid of the server's OS user when we are root; `None` when we are not root (the
/// server then runs as us).
fn server_user(cfg: &PostgresConfig) -> Result<Option<(u32, u32)>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let name = CString::new(cfg.os_user.as_str())?;
    // SAFETY: getpwnam returns a pointer to static storage or null; we copy out immediately.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    if pw.is_null() {
        bail!(
            "postgres.os_user {:?} does not exist (initdb refuses to run as root)",
            cfg.os_user
        );
    }
    // SAFETY: pw is non-null and points to a valid passwd.
    Ok(Some(unsafe { ((*pw).pw_uid, (*pw).pw_gid) }))
}

fn as_server_user(cmd: &mut Command, user: Option<(u32, u32)>) {
    if let Some((uid, gid)) = user {
        cmd.uid(uid).gid(gid);
    }
}

fn make_dir(path: &Path, mode: u32, user: Option<(u32, u32)>) -> Result<()> {
    std::fs::create_dir_all(path).with_context(|| format!("create {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if let Some((uid, gid)) = user {
        chown(path, Some(uid), Some(gid))?;
    }
    Ok(())
}

/// Write a file the server reads, atomically (a crash never leaves half a pg_hba.conf).
fn write_server_file(path: &Path, text: &str, user: Option<(u32, u32)>) -> Result<()> {
    let tmp = path.with_extension("agog-tmp");
    std::fs::write(&tmp, text)?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
    if let Some((uid, gid)) = user {
        chown(&tmp, Some(uid), Some(gid))?;
    }
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// `max_slot_wal_keep_size` in MB: configured, or a fifth of the data directory's filesystem,
/// clamped to [256 MB, 32 GB], so an offline peer can never fill the disk.
pub fn wal_keep_mb(cfg: &PostgresConfig) -> u64 {
    if cfg.wal_keep_mb > 0 {
        return cfg.wal_keep_mb;
    }
    let total = crate::disk::usage(&cfg.data_dir)
        .map(|(_, total)| total)
        .unwrap_or(0);
    (total / 5 / (1 << 20)).clamp(256, 32 * 1024)
}

pub fn settings_text(cfg: &EdgeConfig, extra_listen: &[String]) -> String {
    let pg = &cfg.postgres;
    let mut listen: Vec<String> = pg.listen_addresses.clone();
    listen.extend(extra_listen.iter().cloned());
    let mut s = format!(
        "# Managed by edge-agent, rewritten at every start. Put your own settings in [postgres.settings].\n\
         listen_addresses = '{}'\n\
         port = {}\n\
         unix_socket_directories = '{}'\n\
         unix_socket_permissions = 0700\n\
         wal_level = logical\n\
         max_replication_slots = 10\n\
         max_wal_senders = 10\n\
         max_logical_replication_workers = 6\n\
         max_worker_processes = 16\n\
         max_slot_wal_keep_size = '{}MB'\n\
         wal_sender_timeout = '60s'\n\
         password_encryption = 'scram-sha-256'\n",
        listen.join(","),
        pg.port,
        pg.socket_dir.display(),
        wal_keep_mb(pg),
    );
    for (k, v) in &pg.settings {
        s.push_str(&format!("{k} = '{}'\n", v.replace('\'', "''")));
    }
    s
}

pub fn hba_text(cfg: &EdgeConfig) -> String {
    let pg = &cfg.postgres;
    let mut s = format!(
        "# Managed by edge-agent, rewritten at every start.\n\
         # The socket directory is 0700: only root and the server user reach it.\n\
         local   all   {}   trust\n",
        pg.superuser
    );
    if let Some(u) = &cfg.upstream {
        let addr = if u.regional_address.contains('/') {
            u.regional_address.clone()
        } else if u.regional_address.contains(':') {
            format!("{}/128", u.regional_address)
        } else {
            format!("{}/32", u.regional_address)
        };
        s.push_str(&format!(
            "# The regional subscribes with its own role, from its address only.\n\
             host    {}   {}   {}   scram-sha-256\n",
            pg.database, u.replication_role, addr
        ));
    }
    s
}

/// initdb when there is no cluster yet, then (re)write the managed settings and pg_hba.
pub async fn prepare(cfg: &EdgeConfig, extra_listen: &[String]) -> Result<()> {
    let pg = &cfg.postgres;
    let user = server_user(pg)?;
    make_dir(&pg.socket_dir, 0o700, user)?;
    if !pg.data_dir.join("PG_VERSION").exists() {
        tracing::info!(data_dir = %pg.data_dir.display(), "no cluster yet: running initdb");
        make_dir(&pg.data_dir, 0o700, user)?;
        let mut cmd = Command::new(pg.bin_dir.join("initdb"));
        cmd.arg("-D")
            .arg(&pg.data_dir)
            .args([
                "-U",
                &pg.superuser,
                "-E",
                "UTF8",
                "--locale=C",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .stdin(Stdio::null());
        as_server_user(&mut cmd, user);
        let out = cmd
            .output()
            .await
            .with_context(|| format!("run {}/initdb", pg.bin_dir.display()))?;
        if !out.status.success() {
            bail!(
                "initdb failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
    }
    let conf = pg.data_dir.join("postgresql.conf");
    let text =
        std::fs::read_to_string(&conf).with_context(|| format!("read {}", conf.display()))?;
    if !text.contains(INCLUDE_LINE) {
        write_server_file(&conf, &format!("{text}\n{INCLUDE_LINE}\n"), user)?;
    }
    write_server_file(
        &pg.data_dir.join("agog.conf"),
        &settings_text(cfg, extra_listen),
        user,
    )?;
    write_server_file(&pg.data_dir.join("pg_hba.conf"), &hba_text(cfg), user)?;
    Ok(())
}

/// A server left running by a previous agent (killed before it could stop it) is stopped, so
/// the one we start is ours to supervise.
async fn stop_leftover(pg: &PostgresConfig) {
    let Ok(pidfile) = std::fs::read_to_string(pg.data_dir.join("postmaster.pid")) else {
        return;
    };
    let Some(pid) = pidfile
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<i32>().ok())
    else {
        return;
    };
    // SAFETY: signal 0 only checks existence; SIGINT asks for a fast shutdown.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return;
    }
    tracing::warn!(
        pid,
        "a server from a previous agent run is still up: stopping it to supervise a fresh one"
    );
    unsafe { libc::kill(pid, libc::SIGINT) };
    for _ in 0..300 {
        if unsafe { libc::kill(pid, 0) } != 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::error!(pid, "leftover server did not stop within 30 s");
}

fn spawn(pg: &PostgresConfig) -> Result<Child> {
    let user = server_user(pg)?;
    let mut cmd = Command::new(pg.bin_dir.join("postgres"));
    cmd.arg("-D")
        .arg(&pg.data_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd.kill_on_drop(false);
    as_server_user(&mut cmd, user);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("start {}/postgres", pg.bin_dir.display()))?;
    // The server's log goes to ours (and so to the journal).
    for stream in [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
    ]
    .into_iter()
    .flatten()
    {
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                tracing::info!(target: "postgres", "{line}");
            }
        });
    }
    Ok(child)
}

/// Run the server and restart it with backoff (1 s doubling to 30 s) whenever it exits, until
/// `shutdown` turns true; then stop it with a fast shutdown.
pub async fn supervise(
    cfg: EdgeConfig,
    state: Arc<ServerState>,
    mut shutdown: watch::Receiver<bool>,
) {
    let pg = &cfg.postgres;
    stop_leftover(pg).await;
    let mut backoff = Duration::from_secs(1);
    loop {
        let mut child = match spawn(pg) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot start postgres");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        let pid = child.id();
        tracing::info!(pid, "postgres started");
        let ready = wait_ready(&cfg, &mut child).await;
        if ready {
            state.up.store(true, Ordering::SeqCst);
            backoff = Duration::from_secs(1);
        }
        tokio::select! {
            status = child.wait() => {
                state.up.store(false, Ordering::SeqCst);
                state.restarts.fetch_add(1, Ordering::SeqCst);
                tracing::error!(?status, retry_in = ?backoff, "postgres exited; restarting");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.changed() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            _ = shutdown.changed() => {
                state.up.store(false, Ordering::SeqCst);
                if let Some(pid) = pid {
                    // SAFETY: SIGINT to our own child asks for a fast shutdown.
                    unsafe { libc::kill(pid as i32, libc::SIGINT) };
                }
                let _ = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
                tracing::info!("postgres stopped");
                return;
            }
        }
    }
}

async fn wait_ready(cfg: &EdgeConfig, child: &mut Child) -> bool {
    let conninfo = admin_conninfo(cfg);
    for _ in 0..600 {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if sync_core::connect(&conninfo).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The maintenance database, which exists before ours does.
pub fn admin_conninfo(cfg: &EdgeConfig) -> String {
    cfg.local_conninfo().replace(
        &format!("dbname={}", cfg.postgres.database),
        "dbname=postgres",
    )
}

/// Create the agent's database if it is missing.
pub async fn ensure_database(cfg: &EdgeConfig) -> Result<()> {
    let client = sync_core::connect(&admin_conninfo(cfg))
        .await
        .context("connect to the local server")?;
    let db = &cfg.postgres.database;
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[db])
        .await?
        .is_some();
    if !exists {
        tracing::info!(database = %db, "creating the database");
        client
            .batch_execute(&format!("CREATE DATABASE {}", sync_core::sql::ident(db)))
            .await?;
    }
    Ok(())
}
