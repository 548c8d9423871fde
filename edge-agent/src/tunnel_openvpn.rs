//! The edge's OpenVPN tunnel (`[tunnel] kind = "openvpn"`): the client config rendered from
//! `vpn-templates/openvpn/client.conf.j2` with the hub's endpoint and this box's certificate
//! files, `openvpn` run as a supervised child, watched over its management interface (a unix
//! socket in `state_dir/tunnel/`): `state` answers `<time>,CONNECTED,SUCCESS,<tunnel ip>,...`
//! when up. OpenVPN reconnects by itself (`persist-tun` keeps the address, so PostgreSQL keeps
//! listening on it); a dead process is started again.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sync_core::api::TunnelSettings;
use sync_core::health::TunnelHealth;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::watch;

use crate::config::{EdgeConfig, TunnelConfig};
use crate::state::AgentState;

pub struct OpenVpnTunnel {
    cfg: TunnelConfig,
    settings: TunnelSettings,
    conf: PathBuf,
    log: PathBuf,
    mgmt: PathBuf,
    child: Option<tokio::process::Child>,
    health: TunnelHealth,
    started: Option<Instant>,
    connected_logged: bool,
}

/// The management socket of the box's OpenVPN client.
pub fn management_socket(cfg: &EdgeConfig) -> Option<PathBuf> {
    cfg.enroll
        .as_ref()
        .map(|e| e.state_dir.join("tunnel/openvpn.sock"))
}

/// `state` over the management interface: (state name, unix time, tunnel ip).
pub async fn query_state(sock: &std::path::Path) -> Result<(String, i64, String)> {
    let stream = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::UnixStream::connect(sock),
    )
    .await
    .context("the management interface does not answer")?
    .with_context(|| format!("connect to {}", sock.display()))?;
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    w.write_all(b"state\n").await?;
    let read = async {
        while let Some(line) = lines.next_line().await? {
            if line.starts_with('>') {
                continue; // the >INFO banner and other notifications
            }
            if line == "END" {
                break;
            }
            let f: Vec<&str> = line.split(',').collect();
            if f.len() >= 4 {
                return Ok((
                    f[1].to_string(),
                    f[0].parse().unwrap_or(0),
                    f[3].to_string(),
                ));
            }
        }
        anyhow::bail!("no state line")
    };
    let r = tokio::time::timeout(Duration::from_secs(2), read)
        .await
        .context("the management interface sent no state")?;
    let _ = w.write_all(b"quit\n").await;
    r
}

impl OpenVpnTunnel {
    pub fn new(cfg: &EdgeConfig, settings: TunnelSettings) -> Result<OpenVpnTunnel> {
        let t = cfg.tunnel.clone().context("no [tunnel] section")?;
        anyhow::ensure!(
            settings.kind == "openvpn",
            "the hub handed out a {:?} tunnel; this agent's [tunnel] kind is openvpn",
            settings.kind
        );
        let e = cfg.enroll.as_ref().context("a tunnel needs [enroll]")?;
        let dir = e.state_dir.join("tunnel");
        std::fs::create_dir_all(&dir)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        let (host, port) = settings
            .hub_endpoint
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
            .context("the hub's endpoint is not host:port")?;
        let need = |f: &Option<PathBuf>, what: &str| -> Result<String> {
            Ok(f.as_ref()
                .with_context(|| format!("[tunnel] {what} is required for openvpn"))?
                .display()
                .to_string())
        };
        let mgmt = dir.join("openvpn.sock");
        let v = sync_core::vpn::OpenVpnValues {
            facility: cfg.facility.to_string(),
            interface: t.interface.clone(),
            proto: "udp".into(),
            remote_host: host,
            remote_port: port,
            server_name: t.server_name.clone(),
            ca: need(&t.ca, "ca")?,
            cert: need(&t.cert, "cert")?,
            key: need(&t.key, "key")?,
            tls_crypt: need(&t.tls_crypt, "tls_crypt")?,
            management_socket: mgmt.display().to_string(),
        };
        let r = v.render()?;
        let conf = dir.join(&r.file_name);
        sync_core::fsutil::write_private(&conf, r.text.as_bytes())?;
        let health = TunnelHealth {
            kind: "openvpn".into(),
            up: false,
            last_handshake_at: None,
            interface: Some(t.interface.clone()),
            backend: Some("openvpn".into()),
            address: Some(settings.address.clone()),
            endpoint: Some(settings.hub_endpoint.clone()),
            rx_bytes: 0,
            tx_bytes: 0,
            reconnects: 0,
            error: Some("not up yet".into()),
        };
        Ok(OpenVpnTunnel {
            cfg: t,
            settings,
            conf,
            log: dir.join("openvpn.log"),
            mgmt,
            child: None,
            health,
            started: None,
            connected_logged: false,
        })
    }

    fn start(&mut self) -> Result<()> {
        let _ = std::fs::remove_file(&self.mgmt);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = tokio::process::Command::new(&self.cfg.openvpn)
            .arg("--config")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", self.cfg.openvpn.display()))?;
        self.child = Some(child);
        self.started = Some(Instant::now());
        self.connected_logged = false;
        tracing::info!(interface = %self.cfg.interface, endpoint = %self.settings.hub_endpoint, "openvpn started");
        Ok(())
    }

    /// Start openvpn and wait (up to `wait`) for it to connect: PostgreSQL listens on the
    /// address it sets.
    pub async fn bring_up(&mut self, wait: Duration) -> Result<()> {
        self.start()?;
        let t0 = Instant::now();
        while t0.elapsed() < wait {
            self.check().await;
            if self.health.up {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        anyhow::bail!(
            "openvpn did not connect within {wait:?}: {}",
            self.health.error.as_deref().unwrap_or("?")
        )
    }

    pub async fn check(&mut self) {
        let dead = match self.child.as_mut() {
            None => true,
            Some(c) => !matches!(c.try_wait(), Ok(None)),
        };
        if dead {
            if self.child.is_some() {
                tracing::warn!(interface = %self.cfg.interface, "openvpn exited: starting it again");
                self.health.reconnects += 1;
            }
            if let Err(e) = self.start() {
                self.health.up = false;
                self.health.error = Some(format!("{e:#}"));
                return;
            }
        }
        match query_state(&self.mgmt).await {
            Ok((state, at, ip)) if state == "CONNECTED" => {
                if !self.connected_logged {
                    self.connected_logged = true;
                    tracing::info!(
                        interface = %self.cfg.interface,
                        address = ip,
                        since_start_ms = self.started.map(|t| t.elapsed().as_millis() as u64).unwrap_or(0),
                        "openvpn connected to the hub"
                    );
                }
                if !self.health.up {
                    tracing::info!(interface = %self.cfg.interface, "tunnel up");
                }
                self.health.up = true;
                self.health.error = None;
                self.health.last_handshake_at = chrono::DateTime::from_timestamp(at, 0)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
            }
            Ok((state, _, _)) => {
                if self.health.up {
                    tracing::warn!(interface = %self.cfg.interface, state, "tunnel down");
                    self.connected_logged = false;
                }
                self.health.up = false;
                self.health.error = Some(format!("openvpn is {state}, not connected"));
            }
            Err(e) => {
                self.health.up = false;
                self.health.error = Some(format!("{e:#}"));
            }
        }
    }

    /// Watch until `stop`; then stop openvpn.
    pub async fn watch(mut self, state: Arc<AgentState>, mut stop: watch::Receiver<bool>) {
        let every = Duration::from_secs(self.cfg.check_interval_secs.max(1));
        loop {
            self.check().await;
            *state.tunnel.lock().unwrap() = Some(self.health.clone());
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop.changed() => break,
            }
        }
        if let Some(c) = self.child.take() {
            crate::tunnel::stop_child(c).await;
        }
    }
}
