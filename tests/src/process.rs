//! Running the workspace's daemons as real processes: start with a config and a log file,
//! SIGKILL, SIGTERM with a deadline, and one-shot CLI calls. Shared by `EdgeBox` and `HubProcess`.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::bin_path;

/// `<bin> --config <config> <command>`, stdout and stderr appended to `log`.
pub fn start(bin: &str, config: &Path, command: &str, log: &Path) -> Result<Child> {
    let log = fs::OpenOptions::new().create(true).append(true).open(log)?;
    Command::new(bin_path::binary(bin))
        .arg("--config")
        .arg(config)
        .arg(command)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .with_context(|| format!("start {bin}"))
}

/// SIGKILL, as a crash would.
pub fn kill(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// SIGTERM, then wait up to `deadline`; SIGKILL after it. Ok(false) when it had to be killed.
pub fn stop(child: &mut Option<Child>, deadline: Duration) -> Result<bool> {
    let Some(mut c) = child.take() else {
        return Ok(true);
    };
    // SAFETY: signalling our own child.
    unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    while start.elapsed() < deadline {
        if c.try_wait()?.is_some() {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = c.kill();
    let _ = c.wait();
    Ok(false)
}

/// `<bin> --config <config> <args...>` to completion.
pub fn cli(bin: &str, config: &Path, args: &[&str]) -> Result<Output> {
    Ok(Command::new(bin_path::binary(bin))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()?)
}
