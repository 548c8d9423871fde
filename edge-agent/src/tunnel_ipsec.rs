//! The edge's IPsec tunnel (`[tunnel] kind = "ipsec"`): IKEv2 with raw RSA public keys (the
//! box's made at enrollment, `state_dir/ipsec.key`, only its public half sent; the hub's from the
//! enrollment), strongSwan's charon as a supervised child in a mount namespace of its own (its
//! pid file path is fixed under /run) with its own strongswan.conf and VICI socket, ESP in
//! userspace through kernel-libipsec where the kernel has none. The connection comes from
//! `vpn-templates/strongswan/swanctl.conf.j2`, loaded with `swanctl --load-all`; the tunnel
//! address sits on `lo` (charon routes the hub's side through `ipsec0` from it). Watched with
//! `swanctl --list-sas`: up when the IKE SA is ESTABLISHED and the CHILD SA INSTALLED.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use sync_core::api::TunnelSettings;
use sync_core::health::TunnelHealth;
use tokio::sync::watch;

use crate::config::{EdgeConfig, TunnelConfig};
use crate::state::AgentState;

pub const KEY_FILE: &str = "ipsec.key";

pub struct IpsecTunnel {
    cfg: TunnelConfig,
    settings: TunnelSettings,
    dir: PathBuf,
    connection: String,
    child: Option<tokio::process::Child>,
    health: TunnelHealth,
    started: Option<Instant>,
    up_logged: bool,
}

impl IpsecTunnel {
    pub fn new(cfg: &EdgeConfig, settings: TunnelSettings) -> Result<IpsecTunnel> {
        let t = cfg.tunnel.clone().context("no [tunnel] section")?;
        anyhow::ensure!(
            settings.kind == "ipsec",
            "the hub handed out a {:?} tunnel; this agent's [tunnel] kind is ipsec",
            settings.kind
        );
        anyhow::ensure!(
            sync_core::ipsec::is_public_key_pem(&settings.hub_public_key),
            "the hub's IPsec public key is not a PEM public key"
        );
        let e = cfg.enroll.as_ref().context("a tunnel needs [enroll]")?;
        let dir = e.state_dir.join("tunnel/ipsec");
        for d in ["pubkey", "private", "run"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            e.state_dir.join("tunnel"),
            std::fs::Permissions::from_mode(0o700),
        )?;
        let key = e.state_dir.join(KEY_FILE);
        let public = sync_core::ipsec::rsa_key(&key)?;
        std::fs::write(dir.join("pubkey/agog-edge.pem"), public)?;
        std::fs::write(dir.join("pubkey/agog-hub.pem"), &settings.hub_public_key)?;
        sync_core::fsutil::write_private(
            &dir.join("private/agog-edge.key"),
            &std::fs::read(&key)?,
        )?;
        let (host, _) = settings
            .hub_endpoint
            .rsplit_once(':')
            .unwrap_or((settings.hub_endpoint.as_str(), ""));
        let address = crate::tunnel::address_ip(&settings).unwrap_or_default();
        let v = sync_core::vpn::IpsecValues {
            facility: cfg.facility.to_string(),
            local_addrs: "%any".into(),
            remote_addrs: host.to_string(),
            local_id: cfg.facility.to_string(),
            remote_id: "hub".into(),
            local_ts: format!("{address}/32"),
            remote_ts: format!("{}/32", settings.hub_address),
            auth: "pubkey".into(),
            psk: None,
            local_pubkey: Some("agog-edge.pem".into()),
            remote_pubkey: Some("agog-hub.pem".into()),
            dpd_secs: 5,
            start_action: "start".into(),
        };
        std::fs::write(dir.join("swanctl.conf"), v.render()?.text)?;
        std::fs::write(
            dir.join("strongswan.conf"),
            sync_core::ipsec::strongswan_conf(&dir.join("charon.vici")),
        )?;
        let health = TunnelHealth {
            kind: "ipsec".into(),
            up: false,
            last_handshake_at: None,
            interface: Some("ipsec0".into()),
            backend: Some("strongswan".into()),
            address: Some(settings.address.clone()),
            endpoint: Some(settings.hub_endpoint.clone()),
            rx_bytes: 0,
            tx_bytes: 0,
            reconnects: 0,
            error: Some("not up yet".into()),
        };
        Ok(IpsecTunnel {
            cfg: t,
            settings,
            connection: format!("agog-{}", cfg.facility),
            dir,
            child: None,
            health,
            started: None,
            up_logged: false,
        })
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("strongswan.conf")
    }

    async fn start(&mut self) -> Result<()> {
        // The address charon routes the hub's side from.
        let address = crate::tunnel::address_ip(&self.settings).unwrap_or_default();
        let _ = tokio::process::Command::new("ip")
            .args(["addr", "replace", &format!("{address}/32"), "dev", "lo"])
            .status()
            .await;
        let vici = self.dir.join("charon.vici");
        let _ = std::fs::remove_file(&vici);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("charon.log"))?;
        let child = tokio::process::Command::new("unshare")
            .args([
                "-m",
                "sh",
                "-c",
                &format!(
                    "mount --bind '{}' /run && exec '{}'",
                    self.dir.join("run").display(),
                    self.cfg.charon.display()
                ),
            ])
            .env("STRONGSWAN_CONF", self.conf())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("start charon")?;
        self.child = Some(child);
        self.started = Some(Instant::now());
        self.up_logged = false;
        let t0 = Instant::now();
        while !vici.exists() {
            anyhow::ensure!(
                t0.elapsed() < Duration::from_secs(10),
                "charon made no VICI socket in 10 s (see {})",
                self.dir.join("charon.log").display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let (conf, file) = (self.conf(), self.dir.join("swanctl.conf"));
        tokio::task::spawn_blocking(move || sync_core::ipsec::load_all(&conf, &file)).await??;
        tracing::info!(connection = %self.connection, endpoint = %self.settings.hub_endpoint, "charon started, connection loaded");
        Ok(())
    }

    pub async fn bring_up(&mut self) -> Result<()> {
        self.start().await?;
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(20) {
            self.check().await;
            if self.health.up {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::bail!("the IPsec SA is not up after 20 s")
    }

    pub async fn check(&mut self) {
        let dead = match self.child.as_mut() {
            None => true,
            Some(c) => !matches!(c.try_wait(), Ok(None)),
        };
        if dead {
            if self.child.is_some() {
                tracing::warn!("charon exited: starting it again");
                self.health.reconnects += 1;
            }
            if let Err(e) = self.start().await {
                self.health.up = false;
                self.health.error = Some(format!("{e:#}"));
                return;
            }
        }
        let (conf, conn) = (self.conf(), self.connection.clone());
        match tokio::task::spawn_blocking(move || sync_core::ipsec::sa_up(&conf, &conn)).await {
            Ok(Ok(true)) => {
                if !self.up_logged {
                    self.up_logged = true;
                    tracing::info!(
                        connection = %self.connection,
                        since_start_ms = self.started.map(|t| t.elapsed().as_millis() as u64).unwrap_or(0),
                        "IPsec SA established with the hub"
                    );
                    self.health.last_handshake_at =
                        Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
                }
                self.health.up = true;
                self.health.error = None;
            }
            Ok(Ok(false)) => {
                if self.health.up {
                    tracing::warn!(connection = %self.connection, "tunnel down: no IPsec SA");
                }
                self.up_logged = false;
                self.health.up = false;
                self.health.error = Some("no established IPsec SA with the hub".into());
            }
            Ok(Err(e)) => {
                self.health.up = false;
                self.health.error = Some(format!("{e:#}"));
            }
            Err(e) => {
                self.health.up = false;
                self.health.error = Some(e.to_string());
            }
        }
    }

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
