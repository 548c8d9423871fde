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
    /// Left running with its directory when dropped (the lab's hubs).
    keep: bool,
    /// The network namespace `hub serve` runs in (`None`: this one).
    pub netns: Option<String>,
}

/// The trimmed stdout of a hub CLI run (`cli`, `cli_with_input`) that must succeed.
pub fn succeeded((code, out, err): (i32, String, String)) -> anyhow::Result<String> {
    anyhow::ensure!(code == 0, "hub CLI failed ({code}): {err}");
    Ok(out.trim().to_string())
}

impl HubProcess {
    /// Write `config` (TOML) for replica `replica`; nothing runs yet.
    pub fn new(replica: &str, config: &str) -> Result<HubProcess> {
        Self::new_in(
            cluster::scratch_dir(&format!("hub-{replica}"))?,
            replica,
            config,
        )
    }

    /// A hub whose config and log live in `dir` (created if needed).
    pub fn new_in(dir: PathBuf, replica: &str, config: &str) -> Result<HubProcess> {
        fs::create_dir_all(&dir)?;
        fs::write(
            dir.join("hub.toml"),
            format!("replica_id = \"{replica}\"\n{config}"),
        )?;
        Ok(HubProcess {
            dir,
            replica: replica.to_string(),
            child: None,
            keep: false,
            netns: None,
        })
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("hub.toml")
    }

    pub fn start(&mut self) -> Result<()> {
        self.child = Some(process::spawn_in(
            "hub",
            &self.config_path(),
            "serve",
            &self.dir.join("hub.log"),
            false,
            self.netns.as_deref(),
        )?);
        Ok(())
    }

    /// Start `hub serve` in a session of its own and leave it (and its directory) when this
    /// value is dropped. Returns its pid.
    pub fn start_detached(&mut self) -> Result<u32> {
        let child = process::spawn(
            "hub",
            &self.config_path(),
            "serve",
            &self.dir.join("hub.log"),
            true,
        )?;
        self.keep = true;
        Ok(child.id())
    }

    /// Run a CLI command with `input` on its standard input: (exit code, stdout, stderr).
    pub fn cli_with_input(&self, args: &[&str], input: &str) -> Result<(i32, String, String)> {
        Ok(outcome(process::cli_with_input(
            "hub",
            &self.config_path(),
            args,
            input,
        )?))
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

    /// The hub's row for `facility` from `hub edges --json`; None when it has none.
    pub fn edge(&self, facility: &str) -> Result<Option<serde_json::Value>> {
        let (code, out, err) = self.cli(&["edges", "--json"])?;
        anyhow::ensure!(code == 0, "hub edges: {err}");
        let v: serde_json::Value = serde_json::from_str(&out)?;
        Ok(v.as_array()
            .and_then(|a| a.iter().find(|e| e["facility_id"] == facility).cloned()))
    }

    /// The hub's state of `facility` (online, offline...); empty when it has no row.
    pub fn edge_state(&self, facility: &str) -> Result<String> {
        Ok(self
            .edge(facility)?
            .and_then(|e| e["state"].as_str().map(String::from))
            .unwrap_or_default())
    }

    /// Run a CLI command against this replica's config: (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> Result<(i32, String, String)> {
        Ok(outcome(process::cli("hub", &self.config_path(), args)?))
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("hub.log")).unwrap_or_default()
    }
}

/// (exit code, stdout, stderr)
fn outcome(out: std::process::Output) -> (i32, String, String) {
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}
