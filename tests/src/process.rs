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
    spawn(bin, config, command, log, false)
}

/// As [`start`], in a session of its own when `detach`: the process outlives the one that
/// started it and no terminal signal (Ctrl-C, hang-up) reaches it. The lab runs its daemons so.
pub fn spawn(bin: &str, config: &Path, command: &str, log: &Path, detach: bool) -> Result<Child> {
    spawn_in(bin, config, command, log, detach, None)
}

/// As [`spawn`], inside network namespace `netns` (`/var/run/netns/<name>`) when given.
pub fn spawn_in(
    bin: &str,
    config: &Path,
    command: &str,
    log: &Path,
    detach: bool,
    netns: Option<&str>,
) -> Result<Child> {
    let log = fs::OpenOptions::new().create(true).append(true).open(log)?;
    let mut cmd = Command::new(bin_path::binary(bin));
    cmd.arg("--config")
        .arg(config)
        .arg(command)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let ns = netns
        .map(|n| fs::File::open(format!("/var/run/netns/{n}")))
        .transpose()
        .context("open the network namespace")?;
    let ns_fd = ns.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
    if detach || ns_fd.is_some() {
        use std::os::unix::process::CommandExt;
        // SAFETY: setsid and setns are async-signal-safe and touch nothing of the parent; the
        // namespace file stays open until spawn returns.
        unsafe {
            cmd.pre_exec(move || {
                if detach {
                    libc::setsid();
                }
                if let Some(fd) = ns_fd {
                    if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
    let child = cmd.spawn().with_context(|| format!("start {bin}"));
    drop(ns);
    child
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
    Ok(cli_command(bin, config, args).output()?)
}

/// As [`cli`], inside network namespace `netns` (`ip netns exec`).
pub fn cli_in(netns: &str, bin: &str, config: &Path, args: &[&str]) -> Result<Output> {
    Ok(Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(bin_path::binary(bin))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()?)
}

fn cli_command(bin: &str, config: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin_path::binary(bin));
    c.arg("--config")
        .arg(config)
        .args(args)
        .env("RUST_LOG", "warn");
    c
}

/// As [`cli`], with `input` on standard input (e.g. a password for `--password-stdin`).
pub fn cli_with_input(bin: &str, config: &Path, args: &[&str], input: &str) -> Result<Output> {
    use std::io::Write;
    let mut child = cli_command(bin, config, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())?;
    Ok(child.wait_with_output()?)
}

/// Whether `pid` is alive and runs `bin` (so a recycled pid is never mistaken for ours).
pub fn runs(pid: u32, bin: &str) -> bool {
    use std::os::unix::ffi::OsStrExt;
    // A zombie's command line is empty, so it does not count as running either.
    fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
        let argv0 = c.split(|b| *b == 0).next().unwrap_or_default();
        Path::new(std::ffi::OsStr::from_bytes(argv0))
            .file_name()
            .is_some_and(|n| n == bin)
    })
}

/// SIGTERM `pid` if it runs `bin`, wait up to `deadline`, then SIGKILL. For processes another
/// invocation started (the lab's), which are no child of ours. Ok(false): it had to be killed.
pub fn stop_pid(pid: u32, bin: &str, deadline: Duration) -> Result<bool> {
    if !runs(pid, bin) {
        return Ok(true);
    }
    // SAFETY: signalling a process we started (checked by its command line above).
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let start = Instant::now();
    while start.elapsed() < deadline {
        if !runs(pid, bin) {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    Ok(false)
}
