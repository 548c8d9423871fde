//! Network namespaces as test hosts: made with `ip netns add`, joined by veth pairs, and
//! removed with every process still inside them when dropped (even when the test failed).
//! Names carry the test process's id, so a later test reaps those of a killed one; interface
//! names are unique per process too, because `/var/run/wireguard/<iface>.sock` is shared by
//! every namespace.

use std::fs;
use std::os::fd::AsRawFd;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};

const PREFIX: &str = "agogt-";
static COUNTER: AtomicUsize = AtomicUsize::new(0);
/// Interface names handed out here, whose WireGuard sockets are removed when stale.
static IFNAMES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn ip(args: &[&str]) -> Result<Output> {
    Command::new("ip")
        .args(args)
        .output()
        .with_context(|| format!("run ip {}", args.join(" ")))
}

fn ok(out: Output, what: &str) -> Result<String> {
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A short name unique to this process and call (at most 15 bytes: an interface name).
pub fn unique_ifname(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let name = format!("{tag}{:x}{n:x}", std::process::id());
    assert!(name.len() <= 15, "interface name {name} too long");
    IFNAMES.lock().unwrap().push(name.clone());
    name
}

/// Remove `/var/run/wireguard/<name>.sock` of our interfaces when nothing answers on it any
/// more (a wireguard-go killed with SIGKILL leaves its socket behind).
fn remove_stale_sockets() {
    for name in IFNAMES.lock().unwrap().iter() {
        let sock = format!("/var/run/wireguard/{name}.sock");
        if std::path::Path::new(&sock).exists()
            && std::os::unix::net::UnixStream::connect(&sock).is_err()
        {
            let _ = fs::remove_file(&sock);
        }
    }
}

pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A new, empty namespace with its loopback up.
    pub fn new(tag: &str) -> Result<Netns> {
        reap_orphans();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{n}-{tag}", std::process::id());
        ok(ip(&["netns", "add", &name])?, "ip netns add")?;
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// `ip netns exec <ns> <program>`: a command that runs inside.
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Run a command inside and return its stdout; an error with its output when it fails.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let out = self.command(program).args(args).output()?;
        ok(
            out,
            &format!("{program} {} in {}", args.join(" "), self.name),
        )
    }

    /// `ip -n <ns> ...`
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut a = vec!["-n", self.name.as_str()];
        a.extend_from_slice(args);
        ok(ip(&a)?, &format!("ip {}", a.join(" ")))
    }

    /// The namespace file, for `setns`.
    pub fn file(&self) -> Result<fs::File> {
        fs::File::open(format!("/var/run/netns/{}", self.name))
            .with_context(|| format!("open namespace {}", self.name))
    }

    /// A TCP listener bound inside the namespace (a thread enters it, binds and ends; the
    /// socket stays in the namespace), for servers of the test process itself.
    pub fn bind_tcp(&self, addr: &str) -> Result<std::net::TcpListener> {
        let f = self.file()?;
        let addr = addr.to_string();
        std::thread::spawn(move || -> Result<std::net::TcpListener> {
            // SAFETY: setns on this thread only (it ends right after binding).
            if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                bail!("setns: {}", std::io::Error::last_os_error());
            }
            let l = std::net::TcpListener::bind(&addr)?;
            l.set_nonblocking(true)?;
            Ok(l)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("bind thread panicked"))?
    }

    /// Pids of the processes inside.
    pub fn pids(&self) -> Vec<i32> {
        ip(&["netns", "pids", &self.name])
            .ok()
            .map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// A veth pair between two namespaces, each end with an address (`a.b.c.d/n`) and up.
pub fn veth(a: &Netns, a_addr: &str, b: &Netns, b_addr: &str) -> Result<(String, String)> {
    let ia = unique_ifname("va");
    let ib = unique_ifname("vb");
    ok(
        ip(&[
            "link", "add", &ia, "netns", &a.name, "type", "veth", "peer", "name", &ib, "netns",
            &b.name,
        ])?,
        "ip link add veth",
    )?;
    a.ip(&["addr", "add", a_addr, "dev", &ia])?;
    b.ip(&["addr", "add", b_addr, "dev", &ib])?;
    a.ip(&["link", "set", &ia, "up"])?;
    b.ip(&["link", "set", &ib, "up"])?;
    Ok((ia, ib))
}

fn kill_all(name: &str, pids: &[i32]) {
    for p in pids {
        // SAFETY: signalling processes inside a namespace this test made.
        unsafe { libc::kill(*p, libc::SIGKILL) };
    }
    for _ in 0..50 {
        let left = ip(&["netns", "pids", name])
            .map(|o| !o.stdout.trim_ascii().is_empty())
            .unwrap_or(false);
        if !left {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(Stdio::null())
        .status();
}

/// Namespaces of test processes that are gone (killed before their Drop ran).
fn reap_orphans() {
    let Ok(out) = ip(&["netns", "list"]) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        // SAFETY: signal 0 only checks for existence.
        if unsafe { libc::kill(pid, 0) } != 0 {
            let pids: Vec<i32> = ip(&["netns", "pids", name])
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .filter_map(|p| p.parse().ok())
                        .collect()
                })
                .unwrap_or_default();
            kill_all(name, &pids);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let pids = self.pids();
        kill_all(&self.name, &pids);
        remove_stale_sockets();
    }
}
