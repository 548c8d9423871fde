//! A hub replica as a real process (`hub serve`) with its own config file and log.

use std::fs;
use std::path::PathBuf;
use std::process::Child;
use std::time::Duration;

use anyhow::Result;

use crate::{cluster, process};

pub struct HubProcess {
    pub dir: PathBuf,
    pub replica: String,
    child: Option<Child>,
}

impl HubProcess {
    /// Write `config` (TOML) for replica `replica`; nothing runs yet.
    pub fn new(replica: &str, config: &str) -> Result<HubProcess> {
        let dir = cluster::scratch_dir(&format!("hub-{replica}"))?;
        fs::write(
            dir.join("hub.toml"),
            format!("replica_id = \"{replica}\"\n{config}"),
        )?;
        Ok(HubProcess {
            dir,
            replica: replica.to_string(),
            child: None,
        })
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("hub.toml")
    }

    pub fn start(&mut self) -> Result<()> {
        self.child = Some(process::start(
            "hub",
            &self.config_path(),
            "serve",
            &self.dir.join("hub.log"),
        )?);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL, as a crashed machine would.
    pub fn kill(&mut self) {
        process::kill(&mut self.child);
    }

    /// SIGTERM; killed if still running after 10 s.
    pub fn stop(&mut self) {
        let _ = process::stop(&mut self.child, Duration::from_secs(10));
    }

    /// Run a CLI command against this replica's config: (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> Result<(i32, String, String)> {
        let out = process::cli("hub", &self.config_path(), args)?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("hub.log")).unwrap_or_default()
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
