//! Static binaries and packages: the musl builds of `packaging/build-static` are static, small
//! and run (aarch64 under qemu-user), the systemd units pass `systemd-analyze verify`, and
//! `packaging/build-deb` makes packages holding the binary, the units and the conffile.
//!
//! The static binaries are built by `scripts/test.sh` (it runs `packaging/build-static` before
//! the tests): building them here would take minutes and wait on cargo's build lock.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TRIPLES: [&str; 2] = ["x86_64-unknown-linux-musl", "aarch64-unknown-linux-musl"];
const BINARIES: [&str; 2] = ["edge-agent", "hub"];
/// The budget of each static binary: the box's agent keeps its issue's goal (under 15 MiB);
/// the hub, a regional server with the dashboard and provisioning, has 24 MiB.
fn max_bytes(name: &str) -> u64 {
    if name == "edge-agent" {
        15 * 1024 * 1024
    } else {
        24 * 1024 * 1024
    }
}
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target"))
}

/// `target/<triple>/release/<name>`, or a clear failure saying how to build it.
fn static_binary(triple: &str, name: &str) -> PathBuf {
    let path = target_dir().join(triple).join("release").join(name);
    assert!(
        path.exists(),
        "{} is missing: run packaging/build-static (scripts/test.sh runs it before the tests)",
        path.display()
    );
    path
}

/// Fail with the package to install when a tool is missing.
fn need(tool: &str, apt_package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        found,
        "`{tool}` not found: apt-get install --no-install-recommends {apt_package} \
         (packaging/build-static installs it)"
    );
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("agog-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn static_binaries_are_static_small_and_run_on_both_architectures() {
    need("file", "file");
    need("qemu-aarch64-static", "qemu-user-static");
    for triple in TRIPLES {
        for name in BINARIES {
            let bin = static_binary(triple, name);
            let what = stdout(&run(Command::new("file").arg("-b").arg(&bin)));
            assert!(
                what.contains("statically linked") || what.contains("static-pie linked"),
                "{}: not static: {what}",
                bin.display()
            );
            let arch = if triple.starts_with("x86_64") {
                "x86-64"
            } else {
                "ARM aarch64"
            };
            assert!(what.contains(arch), "{}: {what}", bin.display());
            let size = fs::metadata(&bin).unwrap().len();
            assert!(
                size < max_bytes(name),
                "{} is {:.1} MiB, over its {} MiB budget",
                bin.display(),
                size as f64 / 1048576.0,
                max_bytes(name) / 1048576
            );

            // aarch64 under qemu-user, x86_64 natively.
            let command = |args: &[&str]| {
                let mut c = if triple.starts_with("aarch64") {
                    let mut c = Command::new("qemu-aarch64-static");
                    c.arg(&bin);
                    c
                } else {
                    Command::new(&bin)
                };
                c.args(args);
                c
            };
            let out = run(&mut command(&["--version"]));
            assert!(out.status.success(), "{name} --version: {out:?}");
            assert_eq!(
                stdout(&out).trim(),
                format!("{name} {VERSION}"),
                "{} --version",
                bin.display()
            );
            let sub = if name == "edge-agent" {
                "status"
            } else {
                "plan"
            };
            let out = run(&mut command(&[sub, "--help"]));
            assert!(out.status.success(), "{name} {sub} --help: {out:?}");
            let help = stdout(&out);
            assert!(
                help.contains(&format!("Usage: {name} {sub}")),
                "{} {sub} --help printed:\n{help}",
                bin.display()
            );
        }
    }
}

#[test]
fn the_static_agent_reads_the_packaged_example_config() {
    // `status` loads the config first: exit 2 is a bad config; with a good one it goes on to
    // ask a (not running) agent and exits 1.
    let bin = static_binary("x86_64-unknown-linux-musl", "edge-agent");
    let example = repo().join("packaging/deb/edge.toml.example");
    let out = run(Command::new(&bin)
        .arg("--config")
        .arg(&example)
        .arg("status")
        .env("RUST_LOG", "off"));
    assert_ne!(
        out.status.code(),
        Some(2),
        "the agent refuses {}: {}",
        example.display(),
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains("config"),
        "config error: {}",
        stderr(&out)
    );
}

#[test]
fn systemd_units_pass_systemd_analyze_verify() {
    need("systemd-analyze", "systemd");
    let dir = TempDir::new("units");
    let units = repo().join("packaging/systemd");
    // verify needs ExecStart's binary to exist: point it at the real static builds.
    let agent = static_binary("x86_64-unknown-linux-musl", "edge-agent");
    let hub = static_binary("x86_64-unknown-linux-musl", "hub");
    let mut files = Vec::new();
    for unit in ["agog-edge-agent.service", "agog-hub.service"] {
        let text = fs::read_to_string(units.join(unit)).unwrap();
        let text = text
            .replace("/usr/bin/edge-agent", agent.to_str().unwrap())
            .replace("/usr/bin/hub", hub.to_str().unwrap());
        fs::write(dir.0.join(unit), text).unwrap();
        files.push(dir.0.join(unit));
    }
    let out = run(Command::new("systemd-analyze")
        .arg("verify")
        .args(&files)
        .current_dir(&dir.0));
    let err = stderr(&out);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{err}"
    );
    // verify exits 0 on unknown keys and bad values ("..., ignoring"): any line about our
    // units, or any such complaint, is a failure.
    let complaints: Vec<&str> = err
        .lines()
        .filter(|l| {
            l.contains("agog-")
                || ["Unknown", "ignoring", "Failed", "Invalid", "not executable"]
                    .iter()
                    .any(|w| l.contains(w))
        })
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify complained:\n{}",
        complaints.join("\n")
    );

    // The settings the agent relies on (sd_notify READY, watchdog petted every 5 s).
    let agent_unit = fs::read_to_string(units.join("agog-edge-agent.service")).unwrap();
    for line in [
        "Type=notify",
        "WatchdogSec=30s",
        "Restart=always",
        "ExecStart=/usr/bin/edge-agent --config /etc/agog/edge.toml run",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(
            agent_unit.lines().any(|l| l.trim() == line),
            "agog-edge-agent.service lacks `{line}`"
        );
    }
    // It starts PostgreSQL as another user and will manage tunnels: nothing may take that away.
    let caps = agent_unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("agog-edge-agent.service sets CapabilityBoundingSet");
    for cap in ["CAP_SETUID", "CAP_SETGID", "CAP_CHOWN", "CAP_NET_ADMIN"] {
        assert!(caps.split_whitespace().any(|c| c == cap), "{cap} missing");
    }
    for forbidden in ["PrivateUsers=yes", "PrivateDevices=yes", "User="] {
        assert!(
            !agent_unit.lines().any(|l| l.trim().starts_with(forbidden)),
            "agog-edge-agent.service must not set {forbidden}"
        );
    }
}

/// `dpkg-deb --contents` lines: (mode, owner, path).
fn contents(deb: &Path) -> Vec<(String, String, String)> {
    let out = run(Command::new("dpkg-deb").arg("--contents").arg(deb));
    assert!(out.status.success(), "dpkg-deb --contents: {out:?}");
    stdout(&out)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[1].to_string(), f[5].to_string())
        })
        .collect()
}

fn field(deb: &Path, name: &str) -> String {
    let out = run(Command::new("dpkg-deb").arg("--field").arg(deb).arg(name));
    assert!(out.status.success(), "dpkg-deb --field {name}: {out:?}");
    stdout(&out).trim().to_string()
}

#[test]
fn debs_hold_the_binary_the_units_and_the_conffile() {
    need("dpkg-deb", "dpkg");
    need("file", "file");
    need("qemu-aarch64-static", "qemu-user-static");
    for triple in TRIPLES {
        for name in BINARIES {
            static_binary(triple, name);
        }
    }
    let dir = TempDir::new("debs");
    let out = run(Command::new("bash")
        .arg(repo().join("packaging/build-deb"))
        .arg("--fast")
        .arg("--out")
        .arg(&dir.0));
    assert!(
        out.status.success(),
        "packaging/build-deb failed:\n{}",
        stderr(&out)
    );

    for (arch, triple) in [("amd64", TRIPLES[0]), ("arm64", TRIPLES[1])] {
        let agent = dir.0.join(format!("agog-edge-agent_{VERSION}_{arch}.deb"));
        let hub = dir.0.join(format!("agog-hub_{VERSION}_{arch}.deb"));
        assert!(agent.exists(), "{} was not built", agent.display());
        assert!(hub.exists(), "{} was not built", hub.display());

        assert_eq!(field(&agent, "Package"), "agog-edge-agent");
        assert_eq!(field(&agent, "Architecture"), arch);
        assert_eq!(field(&agent, "Version"), VERSION);
        assert_eq!(
            field(&agent, "Recommends"),
            "postgresql-16, postgresql-16-pgvector"
        );
        assert_eq!(field(&hub, "Architecture"), arch);

        let files = contents(&agent);
        let has = |files: &[(String, String, String)], path: &str, mode: &str| {
            let f = files
                .iter()
                .find(|f| f.2 == path)
                .unwrap_or_else(|| panic!("{path} is not in the package: {files:?}"));
            assert_eq!(f.0, mode, "{path} mode");
            assert_eq!(f.1, "root/root", "{path} owner");
        };
        has(&files, "./usr/bin/edge-agent", "-rwxr-xr-x");
        has(
            &files,
            "./lib/systemd/system/agog-edge-agent.service",
            "-rw-r--r--",
        );
        has(&files, "./etc/agog/edge.toml", "-rw-r--r--");
        has(
            &files,
            "./usr/share/doc/agog-edge-agent/copyright",
            "-rw-r--r--",
        );
        let conffiles = run(Command::new("dpkg-deb")
            .arg("--info")
            .arg(&agent)
            .arg("conffiles"));
        assert_eq!(stdout(&conffiles).trim(), "/etc/agog/edge.toml");
        let postinst = run(Command::new("dpkg-deb")
            .arg("--info")
            .arg(&agent)
            .arg("postinst"));
        assert!(
            stdout(&postinst).contains("mkdir -p /var/lib/agog")
                && stdout(&postinst).contains("deb-systemd-helper"),
            "postinst: {}",
            stdout(&postinst)
        );

        // The packaged binary: a stripped copy of the static build, still static, and it runs.
        let unpacked = dir.0.join(format!("x-{arch}"));
        let out = run(Command::new("dpkg-deb")
            .arg("--extract")
            .arg(&agent)
            .arg(&unpacked));
        assert!(out.status.success(), "dpkg-deb --extract: {out:?}");
        let packaged = unpacked.join("usr/bin/edge-agent");
        let what = stdout(&run(Command::new("file").arg("-b").arg(&packaged)));
        assert!(
            (what.contains("statically linked") || what.contains("static-pie linked"))
                && what.contains(", stripped"),
            "packaged edge-agent ({arch}): {what}"
        );
        let mut version = if arch == "arm64" {
            let mut c = Command::new("qemu-aarch64-static");
            c.arg(&packaged);
            c
        } else {
            Command::new(&packaged)
        };
        let out = run(version.arg("--version"));
        assert_eq!(
            stdout(&out).trim(),
            format!("edge-agent {VERSION}"),
            "packaged edge-agent ({arch}) --version: {out:?}"
        );
        assert!(
            fs::metadata(&packaged).unwrap().len()
                <= fs::metadata(static_binary(triple, "edge-agent"))
                    .unwrap()
                    .len(),
            "the packaged edge-agent is not the stripped static build"
        );

        let files = contents(&hub);
        has(&files, "./usr/bin/hub", "-rwxr-xr-x");
        has(
            &files,
            "./lib/systemd/system/agog-hub.service",
            "-rw-r--r--",
        );
        has(
            &files,
            "./usr/share/doc/agog-hub/hub.toml.example",
            "-rw-r--r--",
        );
    }

    // Debian's own checker: no error, and no warning but the one we know of (the CLIs document
    // themselves with --help; there are no man pages yet).
    need("lintian", "lintian");
    let debs: Vec<PathBuf> = fs::read_dir(&dir.0)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "deb"))
        .collect();
    assert_eq!(debs.len(), 4, "{debs:?}");
    let out = run(Command::new("lintian")
        .arg("--fail-on")
        .arg("error")
        .args(&debs));
    let said = stdout(&out);
    assert!(
        out.status.success(),
        "lintian found errors:\n{said}{}",
        stderr(&out)
    );
    let unexpected: Vec<&str> = said
        .lines()
        .filter(|l| l.starts_with("E:") || (l.starts_with("W:") && !l.contains("no-manual-page")))
        .collect();
    assert!(unexpected.is_empty(), "lintian:\n{}", unexpected.join("\n"));
}
