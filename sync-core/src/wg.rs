//! A WireGuard interface of our own, for the agent (one peer: its hub) and the hub (a peer per
//! enrolled edge), through `wireguard-control` (LGPL-2.1-or-later, used unmodified; README.md,
//! "Licences").
//!
//! The kernel backend where the kernel has WireGuard (`ip link add <if> type wireguard`);
//! otherwise the userspace one: `wireguard-go` as a supervised child in foreground mode
//! (`WG_PROCESS_FOREGROUND=1`), talked to over its UAPI socket `/var/run/wireguard/<if>.sock`.
//! Addresses and link state are set with `ip` (the crate does not do them).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
pub use wireguard_control::Backend;
pub use wireguard_control::Key;
use wireguard_control::{Device, DeviceUpdate, InterfaceName, PeerConfigBuilder};

/// Which backend to use: `auto` tries the kernel first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    Auto,
    Kernel,
    Userspace,
}

/// A peer as we configure it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub public_key: Key,
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: Vec<(IpAddr, u8)>,
    pub keepalive_secs: Option<u16>,
}

/// What `Device::get` says about one peer.
#[derive(Debug, Clone)]
pub struct PeerState {
    pub public_key: String,
    pub endpoint: Option<SocketAddr>,
    pub last_handshake: Option<SystemTime>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// The interface as read back.
#[derive(Debug, Clone)]
pub struct DeviceState {
    pub public_key: Option<String>,
    pub listen_port: Option<u16>,
    pub peers: Vec<PeerState>,
}

pub struct WgInterface {
    pub name: String,
    iface: InterfaceName,
    backend: Backend,
    /// The userspace implementation, when that backend is used.
    child: Option<tokio::process::Child>,
    wireguard_go: PathBuf,
}

/// The private key in `path` (base64, as `wg genkey` writes it); made (0600) when missing.
pub fn load_or_create_key(path: &Path) -> Result<Key> {
    match std::fs::read_to_string(path) {
        Ok(text) => Key::from_base64(text.trim())
            .map_err(|_| anyhow::anyhow!("{} is not a base64 WireGuard key", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Key::generate_private();
            crate::fsutil::write_private(path, key.to_base64().as_bytes())?;
            Ok(key)
        }
        Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
    }
}

pub fn uapi_socket(name: &str) -> PathBuf {
    PathBuf::from(format!("/var/run/wireguard/{name}.sock"))
}

async fn ip(args: &[&str]) -> Result<()> {
    let out = tokio::process::Command::new("ip")
        .args(args)
        .output()
        .await
        .context("run ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl WgInterface {
    /// Create the interface (or take over an existing kernel one), set the key and listen port,
    /// the address (`a.b.c.d/n`) and bring the link up.
    pub async fn up(
        name: &str,
        choice: BackendChoice,
        wireguard_go: &Path,
        private_key: &Key,
        listen_port: Option<u16>,
        address: &str,
    ) -> Result<WgInterface> {
        let iface: InterfaceName = name
            .parse()
            .map_err(|e| anyhow::anyhow!("interface name {name:?}: {e:?}"))?;
        let mut me = WgInterface {
            name: name.to_string(),
            iface,
            backend: Backend::Userspace,
            child: None,
            wireguard_go: wireguard_go.to_path_buf(),
        };
        let kernel = match choice {
            BackendChoice::Userspace => false,
            BackendChoice::Kernel => {
                me.create_kernel().await?;
                true
            }
            BackendChoice::Auto => match me.create_kernel().await {
                Ok(()) => true,
                Err(e) => {
                    tracing::info!(interface = name, reason = %format!("{e:#}"), "no kernel WireGuard here: using the userspace backend (wireguard-go)");
                    false
                }
            },
        };
        if kernel {
            me.backend = Backend::Kernel;
        } else {
            me.start_userspace().await?;
        }
        let mut update = DeviceUpdate::new().set_private_key(private_key.clone());
        if let Some(p) = listen_port {
            update = update.set_listen_port(p);
        }
        update
            .apply(&me.iface, me.backend)
            .with_context(|| format!("configure {name}"))?;
        ip(&["addr", "replace", address, "dev", name]).await?;
        ip(&["link", "set", name, "up"]).await?;
        Ok(me)
    }

    async fn create_kernel(&self) -> Result<()> {
        if Device::get(&self.iface, Backend::Kernel).is_ok() {
            return Ok(());
        }
        ip(&["link", "add", &self.name, "type", "wireguard"]).await
    }

    async fn start_userspace(&mut self) -> Result<()> {
        let sock = uapi_socket(&self.name);
        if sock.exists() {
            // Left by a wireguard-go of ours that is still running (an agent restarted):
            // its socket answers, so use it; a dead one's socket does not.
            if Device::get(&self.iface, Backend::Userspace).is_ok() {
                tracing::info!(interface = %self.name, "taking over the running wireguard-go");
                return Ok(());
            }
            let _ = std::fs::remove_file(&sock);
        }
        let child = tokio::process::Command::new(&self.wireguard_go)
            .arg(&self.name)
            .env("WG_PROCESS_FOREGROUND", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", self.wireguard_go.display()))?;
        self.child = Some(child);
        let start = Instant::now();
        while !sock.exists() {
            if let Some(c) = self.child.as_mut() {
                if let Some(status) = c.try_wait()? {
                    let mut err = String::new();
                    if let Some(mut e) = c.stderr.take() {
                        use tokio::io::AsyncReadExt;
                        let _ = e.read_to_string(&mut err).await;
                    }
                    bail!(
                        "wireguard-go {} exited ({status}): {}",
                        self.name,
                        err.trim()
                    );
                }
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!("wireguard-go made no socket {} in 10 s", sock.display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Kernel => "kernel",
            _ => "userspace",
        }
    }

    /// Whether the interface still exists (its wireguard-go runs, its link is there).
    pub fn alive(&mut self) -> bool {
        if let Some(c) = self.child.as_mut() {
            if !matches!(c.try_wait(), Ok(None)) {
                return false;
            }
        }
        Device::get(&self.iface, self.backend).is_ok()
    }

    /// Make the peer list exactly `peers`.
    pub fn set_peers(&self, peers: &[Peer]) -> Result<()> {
        let mut update = DeviceUpdate::new().replace_peers();
        for p in peers {
            update = update.add_peer(builder(p));
        }
        update
            .apply(&self.iface, self.backend)
            .with_context(|| format!("set the peers of {}", self.name))
    }

    /// Make the peer list equal to `peers` without disturbing the sessions of peers that stay:
    /// remove the others, then add or update these.
    pub fn sync_peers(&self, peers: &[Peer]) -> Result<()> {
        let current = Device::get(&self.iface, self.backend)
            .with_context(|| format!("read {}", self.name))?;
        let mut update = DeviceUpdate::new();
        for p in &current.peers {
            if !peers.iter().any(|w| w.public_key == p.config.public_key) {
                update = update.remove_peer_by_key(&p.config.public_key);
            }
        }
        for p in peers {
            update = update.add_peer(builder(p));
        }
        update
            .apply(&self.iface, self.backend)
            .with_context(|| format!("set the peers of {}", self.name))
    }

    pub fn state(&self) -> Result<DeviceState> {
        read_state(&self.name, self.backend)
    }

    /// Stop: SIGTERM wireguard-go (it removes its socket and link) or delete the kernel link.
    pub async fn down(mut self) {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = c.id() {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(pid as i32, libc::SIGTERM) };
            }
            if tokio::time::timeout(Duration::from_secs(3), c.wait())
                .await
                .is_err()
            {
                let _ = c.kill().await;
            }
        } else if self.backend == Backend::Kernel {
            let _ = ip(&["link", "del", &self.name]).await;
        }
    }
}

fn builder(p: &Peer) -> PeerConfigBuilder {
    let mut b = PeerConfigBuilder::new(&p.public_key).replace_allowed_ips();
    if let Some(e) = p.endpoint {
        b = b.set_endpoint(e);
    }
    if let Some(k) = p.keepalive_secs {
        b = b.set_persistent_keepalive_interval(k);
    }
    for (a, c) in &p.allowed_ips {
        b = b.add_allowed_ip(*a, *c);
    }
    b
}

/// Read an interface of either backend by name (for `doctor`, which runs in another process).
pub fn read_state(name: &str, backend: Backend) -> Result<DeviceState> {
    let iface: InterfaceName = name
        .parse()
        .map_err(|e| anyhow::anyhow!("interface name {name:?}: {e:?}"))?;
    let d = Device::get(&iface, backend).with_context(|| format!("read {name}"))?;
    Ok(DeviceState {
        public_key: d.public_key.map(|k| k.to_base64()),
        listen_port: d.listen_port,
        peers: d
            .peers
            .into_iter()
            .map(|p| PeerState {
                public_key: p.config.public_key.to_base64(),
                endpoint: p.config.endpoint,
                last_handshake: p.stats.last_handshake_time,
                rx_bytes: p.stats.rx_bytes,
                tx_bytes: p.stats.tx_bytes,
            })
            .collect(),
    })
}

/// Either backend: the kernel's when it has the interface, else the userspace socket.
pub fn read_any(name: &str) -> Result<DeviceState> {
    read_state(name, Backend::Kernel).or_else(|_| read_state(name, Backend::Userspace))
}
