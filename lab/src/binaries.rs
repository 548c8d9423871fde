//! The lab runs the workspace's own `hub` and `edge-agent`. Started with `cargo run -p lab`, it
//! builds them first (same profile as itself; cargo has released its lock by then, as for any
//! xtask); installed next to them, it uses them as they are. `AGOG_BIN_DIR` points elsewhere
//! and skips the build (the tests' binaries are built before the tests run).

use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;

pub const NEEDED: &[&str] = &["hub", "edge-agent"];

/// Make sure the binaries exist and point the harness at them (`AGOG_BIN_DIR`). Call before
/// any thread starts (it sets an environment variable).
pub fn prepare(progress: &dyn Fn(&str)) -> anyhow::Result<PathBuf> {
    let dir = match std::env::var_os("AGOG_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().context("where is the lab binary")?;
            let dir = exe
                .parent()
                .context("the lab binary's directory")?
                .to_path_buf();
            if let Some(cargo) = std::env::var_os("CARGO") {
                progress("building hub and edge-agent (cargo build)");
                let mut cmd = Command::new(cargo);
                cmd.args(["build", "--bins", "-p", "hub", "-p", "edge-agent"]);
                if dir.file_name().is_some_and(|n| n == "release") {
                    cmd.arg("--release");
                }
                if let Some(ws) = option_env!("CARGO_MANIFEST_DIR") {
                    cmd.current_dir(PathBuf::from(ws).join(".."));
                }
                let status = cmd.status().context("run cargo build")?;
                anyhow::ensure!(status.success(), "cargo build of hub and edge-agent failed");
            }
            // Set before any thread exists (main calls this first).
            std::env::set_var("AGOG_BIN_DIR", &dir);
            dir
        }
    };
    for b in NEEDED {
        anyhow::ensure!(
            dir.join(b).exists(),
            "{} is missing: build it (cargo build --bins -p hub -p edge-agent) or set AGOG_BIN_DIR",
            dir.join(b).display()
        );
    }
    Ok(dir)
}
