//! The edge's tunnel to its hub (`[tunnel]` in edge.toml, settings from the enrollment).
//!
//! WireGuard through `sync_core::wg` (wireguard-control: the kernel backend where the kernel has
//! WireGuard, else `wireguard-go` as a supervised child). Brought up before PostgreSQL starts
//! (the server listens on the tunnel address), then watched every `check_interval_secs`: the
//! interface gone (wireguard-go died, link deleted) is brought up again; no handshake for
//! `handshake_timeout_secs` re-resolves the hub's endpoint and re-applies the peer. `/health`
//! carries what the watcher saw. The rendered configuration files (wg-quick and
//! systemd-networkd forms, `sync_core::vpn`) are written to `state_dir/tunnel/`, 0600: what
//! the agent runs, for an operator to read or to run by hand.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use sync_core::api::TunnelSettings;
use sync_core::health::TunnelHealth;
use sync_core::wg::{Key, Peer, WgInterface};
use tokio::sync::watch;

use crate::config::{EdgeConfig, TunnelConfig};
use crate::state::AgentState;

pub struct Tunnel {
    cfg: TunnelConfig,
    settings: TunnelSettings,
    key: Key,
    iface: Option<WgInterface>,
    health: TunnelHealth,
    up_since: Option<Instant>,
    first_handshake_logged: bool,
    last_reapply: Instant,
}

/// The edge's private key (made at enrollment).
pub fn key_path(cfg: &EdgeConfig) -> Option<PathBuf> {
    cfg.enroll
        .as_ref()
        .map(|e| e.state_dir.join(crate::enroll::WIREGUARD_KEY_FILE))
}

/// The edge's tunnel address without its prefix.
pub fn address_ip(s: &TunnelSettings) -> Option<String> {
    s.address.split('/').next().map(str::to_owned)
}

async fn resolve(endpoint: &str) -> Result<SocketAddr> {
    tokio::net::lookup_host(endpoint)
        .await
        .with_context(|| format!("resolve the hub's endpoint {endpoint}"))?
        .next()
        .with_context(|| format!("the hub's endpoint {endpoint} resolves to nothing"))
}

fn parse_allowed(s: &TunnelSettings) -> Result<Vec<(IpAddr, u8)>> {
    s.allowed_ips
        .iter()
        .map(|a| {
            sync_core::vpn::parse_cidr(a).with_context(|| format!("allowed IP {a:?} from the hub"))
        })
        .collect()
}

fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl Tunnel {
    pub fn new(cfg: &EdgeConfig, settings: TunnelSettings) -> Result<Tunnel> {
        let t = cfg.tunnel.clone().context("no [tunnel] section")?;
        let want = match t.kind {
            crate::config::TunnelKind::Wireguard => "wireguard",
            crate::config::TunnelKind::Openvpn => "openvpn",
            crate::config::TunnelKind::Ipsec => "ipsec",
        };
        anyhow::ensure!(
            settings.kind == want,
            "the hub handed out a {:?} tunnel; this agent's [tunnel] kind is {want}",
            settings.kind
        );
        let path = key_path(cfg).context("a tunnel needs [enroll] (the key is made there)")?;
        let text =
            std::fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
        let key = Key::from_base64(text.trim())
            .map_err(|_| anyhow::anyhow!("{} is not a WireGuard key", path.display()))?;
        let state_dir = cfg.enroll.as_ref().map(|e| e.state_dir.clone()).unwrap();
        write_files(&state_dir, cfg, &t, &settings, &key)?;
        let health = TunnelHealth {
            kind: "wireguard".into(),
            up: false,
            last_handshake_at: None,
            interface: Some(t.interface.clone()),
            backend: None,
            address: Some(settings.address.clone()),
            endpoint: Some(settings.hub_endpoint.clone()),
            rx_bytes: 0,
            tx_bytes: 0,
            reconnects: 0,
            error: Some("not up yet".into()),
        };
        Ok(Tunnel {
            cfg: t,
            settings,
            key,
            iface: None,
            health,
            up_since: None,
            first_handshake_logged: false,
            last_reapply: Instant::now(),
        })
    }

    async fn peer(&self) -> Result<Peer> {
        Ok(Peer {
            public_key: Key::from_base64(&self.settings.hub_public_key)
                .map_err(|_| anyhow::anyhow!("the hub's public key is not a WireGuard key"))?,
            endpoint: Some(resolve(&self.settings.hub_endpoint).await?),
            allowed_ips: parse_allowed(&self.settings)?,
            keepalive_secs: Some(self.settings.keepalive_secs),
        })
    }

    /// Bring the interface up (address and link included) with the hub as its one peer.
    pub async fn bring_up(&mut self) -> Result<()> {
        let started = Instant::now();
        if let Some(i) = self.iface.take() {
            i.down().await;
        }
        let iface = WgInterface::up(
            &self.cfg.interface,
            self.cfg.backend,
            &self.cfg.wireguard_go,
            &self.key,
            None,
            &self.settings.address,
        )
        .await?;
        self.health.backend = Some(iface.backend_name().into());
        self.iface = Some(iface);
        let peer = self.peer().await?;
        self.iface.as_ref().unwrap().set_peers(&[peer])?;
        self.up_since = Some(Instant::now());
        self.first_handshake_logged = false;
        self.last_reapply = Instant::now();
        tracing::info!(
            interface = %self.cfg.interface,
            backend = self.health.backend.as_deref().unwrap_or(""),
            address = %self.settings.address,
            endpoint = %self.settings.hub_endpoint,
            bring_up_ms = started.elapsed().as_millis() as u64,
            "tunnel interface up"
        );
        Ok(())
    }

    /// One check: bring up what is gone, read the handshake, reconnect when it is stale.
    pub async fn check(&mut self) {
        let gone = match self.iface.as_mut() {
            None => true,
            Some(i) => !i.alive(),
        };
        if gone {
            if self.iface.is_some() {
                tracing::warn!(interface = %self.cfg.interface, "the tunnel interface is gone: bringing it up again");
                self.health.reconnects += 1;
            }
            if let Err(e) = self.bring_up().await {
                let msg = format!("{e:#}");
                tracing::error!(error = %msg, "cannot bring up the tunnel");
                self.health.up = false;
                self.health.error = Some(msg);
                return;
            }
        }
        let state = match self.iface.as_ref().unwrap().state() {
            Ok(s) => s,
            Err(e) => {
                self.health.up = false;
                self.health.error = Some(format!("{e:#}"));
                return;
            }
        };
        let hub = state
            .peers
            .iter()
            .find(|p| p.public_key == self.settings.hub_public_key);
        let Some(hub) = hub else {
            self.health.up = false;
            self.health.error = Some("the hub is not a peer of the interface".into());
            let _ = self.reapply("the hub's peer is missing").await;
            return;
        };
        self.health.rx_bytes = hub.rx_bytes;
        self.health.tx_bytes = hub.tx_bytes;
        self.health.last_handshake_at = hub.last_handshake.map(rfc3339);
        let age = hub
            .last_handshake
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        let timeout = Duration::from_secs(self.cfg.handshake_timeout_secs.max(10));
        match age {
            Some(a) if a <= timeout => {
                if !self.first_handshake_logged {
                    self.first_handshake_logged = true;
                    tracing::info!(
                        interface = %self.cfg.interface,
                        since_up_ms = self.up_since.map(|t| t.elapsed().as_millis() as u64).unwrap_or(0),
                        "tunnel handshake with the hub"
                    );
                }
                if !self.health.up {
                    tracing::info!(interface = %self.cfg.interface, "tunnel up");
                }
                self.health.up = true;
                self.health.error = None;
            }
            _ => {
                if self.health.up {
                    tracing::warn!(interface = %self.cfg.interface, last_handshake = ?self.health.last_handshake_at, "tunnel down: no handshake with the hub");
                }
                self.health.up = false;
                self.health.error = Some(match (age, hub.rx_bytes) {
                    (None, 0) => format!(
                        "no handshake with the hub at {} yet (nothing received)",
                        self.settings.hub_endpoint
                    ),
                    (None, _) => "no handshake with the hub yet".into(),
                    (Some(a), _) => format!("last handshake {} s ago", a.as_secs()),
                });
                // Reconnect: the endpoint may have moved (DNS) or a NAT mapping expired.
                if self.last_reapply.elapsed() >= timeout / 2 {
                    let _ = self.reapply("no recent handshake").await;
                }
            }
        }
    }

    async fn reapply(&mut self, why: &str) -> Result<()> {
        self.last_reapply = Instant::now();
        let peer = self.peer().await?;
        let r = self.iface.as_ref().unwrap().set_peers(&[peer]);
        self.health.reconnects += 1;
        tracing::info!(why, endpoint = %self.settings.hub_endpoint, ok = r.is_ok(), "tunnel peer re-applied");
        r
    }

    fn publish(&self, state: &AgentState) {
        *state.tunnel.lock().unwrap() = Some(self.health.clone());
    }

    /// Watch until `stop`; then take the interface down.
    pub async fn watch(mut self, state: Arc<AgentState>, mut stop: watch::Receiver<bool>) {
        let every = Duration::from_secs(self.cfg.check_interval_secs.max(1));
        // Quick checks until the first handshake (it takes a round trip), then the interval.
        loop {
            self.check().await;
            self.publish(&state);
            let wait = if self.health.up || self.health.last_handshake_at.is_some() {
                every
            } else {
                Duration::from_millis(250).min(every)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stop.changed() => break,
            }
        }
        if let Some(i) = self.iface.take() {
            i.down().await;
        }
    }
}

/// The rendered configuration files, 0600 where they hold the key.
fn write_files(
    state_dir: &Path,
    cfg: &EdgeConfig,
    t: &TunnelConfig,
    s: &TunnelSettings,
    key: &Key,
) -> Result<()> {
    let dir = state_dir.join("tunnel");
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
    let v = sync_core::vpn::WireGuardValues {
        facility: cfg.facility.to_string(),
        interface: t.interface.clone(),
        private_key: key.to_base64(),
        address: s.address.clone(),
        listen_port: None,
        mtu: None,
        peer_public_key: s.hub_public_key.clone(),
        endpoint: s.hub_endpoint.clone(),
        allowed_ips: s.allowed_ips.clone(),
        keepalive_secs: s.keepalive_secs,
    };
    for f in v.render()? {
        let path = dir.join(&f.file_name);
        if f.secret {
            sync_core::fsutil::write_private(&path, f.text.as_bytes())?;
        } else {
            std::fs::write(&path, &f.text)?;
        }
    }
    Ok(())
}

/// Stop a tunnel daemon the agent supervises (openvpn, charon): SIGTERM so it tears its tunnel
/// down cleanly, SIGKILL if it is still there after 3 s.
pub async fn stop_child(mut c: tokio::process::Child) {
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
}
