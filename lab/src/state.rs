//! The lab's state file (`<dir>/lab.json`, 0600: it holds the login): what runs, on which
//! ports, with which pid. Written after every step of `up`, so `down` cleans up after a start
//! that failed half-way.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    pub dir: PathBuf,
    pub started_at: DateTime<Utc>,
    /// `up` finished.
    pub complete: bool,
    pub check_interval_secs: u64,
    pub offline_after_secs: u64,
    pub sink: Option<SinkState>,
    pub regions: Vec<RegionState>,
    pub edges: Vec<EdgeState>,
    pub login: Option<Login>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SinkState {
    pub pid: u32,
    pub port: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegionState {
    pub region: String,
    pub db_dir: PathBuf,
    pub db_port: u16,
    pub hub_dir: PathBuf,
    pub hub_pid: Option<u32>,
    pub api_port: u16,
    pub web_port: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EdgeState {
    pub node: String,
    pub facility: String,
    pub tenant: String,
    pub region: String,
    pub dir: PathBuf,
    pub pg_port: u16,
    pub health_port: u16,
    pub pid: Option<u32>,
    /// Stopped by `lab fail` (until `lab heal`).
    pub failed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Login {
    pub operator: String,
    pub password: String,
    pub tenant_operator: String,
    pub tenant: String,
    pub tenant_password: String,
    /// A bearer token of `operator` for the read API (us-east's hub).
    pub token: String,
}

impl RegionState {
    pub fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} dbname=agog user=postgres",
            self.db_port
        )
    }
    pub fn dashboard_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.web_port)
    }
    pub fn api_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.api_port)
    }
    pub fn hub_config(&self) -> PathBuf {
        self.hub_dir.join("hub.toml")
    }
}

impl EdgeState {
    pub fn health_url(&self) -> String {
        format!("http://127.0.0.1:{}/health", self.health_port)
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("edge.toml")
    }
    /// The superuser over the box's private socket (what `lab write` uses).
    pub fn conninfo(&self) -> String {
        format!(
            "host={}/sock port={} dbname=agog user=postgres",
            self.dir.display(),
            self.pg_port
        )
    }
}

impl SinkState {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join("lab.json")
}

impl LabState {
    pub fn load(dir: &Path) -> anyhow::Result<Option<LabState>> {
        match fs::read_to_string(path(dir)) {
            Ok(text) => Ok(Some(serde_json::from_str(&text).with_context(|| {
                format!("{} is not a lab state file", path(dir).display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("read {}", path(dir).display())),
        }
    }

    /// Atomically: a temporary file, then rename.
    pub fn save(&self) -> anyhow::Result<()> {
        let tmp = self.dir.join("lab.json.tmp");
        let mut f = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(serde_json::to_string_pretty(self)?.as_bytes())?;
        f.sync_all()?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600))?;
        fs::rename(&tmp, path(&self.dir))?;
        Ok(())
    }
}

/// One lab command at a time per directory (an exclusive flock held until the process ends).
pub fn lock(dir: &Path) -> anyhow::Result<fs::File> {
    fs::create_dir_all(dir)?;
    let f = fs::File::create(dir.join("lab.lock"))?;
    // SAFETY: flock on a descriptor we own; released when the file is closed.
    if unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    } != 0
    {
        anyhow::bail!(
            "another lab command is running on {} (wait for it to finish)",
            dir.display()
        );
    }
    Ok(f)
}
