//! A hub replica as a real process (`hub serve`) with its own config file and log.

use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::{bin_path, cluster};

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
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("hub.log"))?;
        let child = Command::new(bin_path::binary("hub"))
            .arg("--config")
            .arg(self.config_path())
            .arg("serve")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start hub")?;
        self.child = Some(child);
        Ok(())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL, as a crashed machine would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            for _ in 0..100 {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Run a CLI command against this replica's config: (exit code, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> Result<(i32, String, String)> {
        let out = Command::new(bin_path::binary("hub"))
            .arg("--config")
            .arg(self.config_path())
            .args(args)
            .env("RUST_LOG", "warn")
            .output()?;
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
