//! The `lab` binary as the dashboard test runs it: `up` in a directory of its own, `fail`,
//! `heal`, `status --json`, and `down` when dropped (even when the test fails).

use std::path::PathBuf;
use std::process::{Command, Output};

use anyhow::Context;

use crate::{bin_path, cluster};

pub struct Lab {
    pub dir: PathBuf,
}

impl Lab {
    /// `lab up` with `args` (e.g. a short check interval); fails with the lab's output.
    pub fn up(args: &[&str]) -> anyhow::Result<Lab> {
        let lab = Lab {
            dir: cluster::scratch_dir("lab")?,
        };
        let mut all = vec!["up"];
        all.extend_from_slice(args);
        if let Err(e) = lab.run(&all) {
            lab.keep_logs();
            return Err(e);
        }
        Ok(lab)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin_path::binary("lab"));
        c.arg("--dir").arg(&self.dir).args(args);
        // The binaries next to lab: it must not try to build them from inside a test.
        c.env(
            "AGOG_BIN_DIR",
            bin_path::binary("lab").parent().expect("bin dir"),
        );
        c
    }

    /// Run `lab <args>`; its stdout, or an error with everything it said.
    pub fn run(&self, args: &[&str]) -> anyhow::Result<String> {
        let out: Output = self
            .command(args)
            .output()
            .with_context(|| format!("run lab {args:?}"))?;
        anyhow::ensure!(
            out.status.success(),
            "lab {args:?} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    pub fn status(&self) -> anyhow::Result<serde_json::Value> {
        Ok(serde_json::from_str(&self.run(&["status", "--json"])?)?)
    }

    /// A log file of the lab (relative to its directory), for failure messages.
    pub fn log(&self, rel: &str) -> String {
        std::fs::read_to_string(self.dir.join(rel)).unwrap_or_default()
    }
}

impl Lab {
    /// Copy the hubs', agents' and sink's logs to /tmp/agog-failed/lab for the post-mortem.
    pub fn keep_logs(&self) {
        let keep = PathBuf::from("/tmp/agog-failed/lab");
        let _ = std::fs::create_dir_all(&keep);
        for rel in [
            "us-east-hub/hub.log",
            "eu-central-hub/hub.log",
            "edge-la/agent.log",
            "edge-nyc/agent.log",
            "edge-fra/agent.log",
            "sink.log",
        ] {
            let _ = std::fs::copy(self.dir.join(rel), keep.join(rel.replace('/', "-")));
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("AGOG_KEEP_LOGS").is_some() {
            self.keep_logs();
        }
        let _ = self.command(&["down"]).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
