//! The hub's side of the edges' WireGuard tunnels (`[tunnel]` in hub.toml).
//!
//! Addresses: each edge gets one host address of the region's `range`, the lowest free one,
//! reserved when its provisioning request is made (the hub-side peer then waits for the box's
//! key, made on the box and sent at enrollment) or given at enrollment for an edge enrolled with
//! a plain token; under a transaction-level advisory lock, and UNIQUE columns: never two edges
//! on one address. A re-enrolled facility keeps its address; decommissioning deletes the edge's
//! row and the reservation and so frees it. The hub's own address is the range's
//! first host unless set.
//!
//! The interface (`manage_interface`, default on): `hub serve` brings up its own WireGuard
//! interface with the hub's key and keeps its peer list equal to the enrolled edges (public
//! key, tunnel address /32), checked every `sync_secs` and right after an enrollment; a dead
//! interface (wireguard-go gone) is brought up again.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::Deserialize;
use sync_core::api::TunnelSettings;
use sync_core::wg::{BackendChoice, Key, Peer, WgInterface};
use tokio::sync::{watch, Notify};

use crate::config::HubConfig;

/// Which tunnel the edges get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HubTunnelKind {
    /// The hub runs the WireGuard interface itself.
    Wireguard,
    /// An OpenVPN server runs beside the hub (`topology subnet`, `client-config-dir`,
    /// certificates with each edge's facility id as CN); the hub writes one client-config file
    /// per enrolled edge (`ifconfig-push` of its address) into `openvpn_ccd_dir`.
    Openvpn,
    /// strongSwan (IKEv2, raw public keys, kernel-libipsec where the kernel has no ESP) runs
    /// beside the hub; the hub writes its swanctl.conf (a connection per enrolled edge, the
    /// edge's public key) into `ipsec_dir` and loads it with `swanctl --load-all`.
    Ipsec,
}

impl HubTunnelKind {
    /// As the config, the form and the agent's `[tunnel] kind` spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            HubTunnelKind::Wireguard => "wireguard",
            HubTunnelKind::Openvpn => "openvpn",
            HubTunnelKind::Ipsec => "ipsec",
        }
    }
}

fn default_kind() -> HubTunnelKind {
    HubTunnelKind::Wireguard
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelConfig {
    /// `wireguard` (default) or `openvpn`.
    #[serde(default = "default_kind")]
    pub kind: HubTunnelKind,
    /// OpenVPN: the server's `client-config-dir`, kept equal to the fleet by the hub.
    pub openvpn_ccd_dir: Option<PathBuf>,
    /// IPsec: the swanctl directory of the charon beside the hub (`swanctl.conf`, `conf.d/`,
    /// `pubkey/`, `private/`), and the strongswan.conf swanctl reaches it with.
    pub ipsec_dir: Option<PathBuf>,
    pub ipsec_strongswan_conf: Option<PathBuf>,
    /// The region's tunnel range, IPv4, e.g. `10.99.0.0/24`.
    pub range: String,
    /// The hub's address in it. Default: the range's first host.
    pub address: Option<Ipv4Addr>,
    /// What edges dial: `host:port` of this hub from the edges' side.
    pub endpoint: String,
    /// Default 51820.
    #[serde(default = "default_port")]
    pub listen_port: u16,
    /// Default `agogwg0`.
    #[serde(default = "default_interface")]
    pub interface: String,
    /// The hub's private key (base64), made 0600 when missing. Default `/etc/agog/wireguard.key`.
    #[serde(default = "default_key_file")]
    pub private_key_file: PathBuf,
    /// Keepalive edges send. Default 25 s.
    #[serde(default = "default_keepalive")]
    pub keepalive_secs: u16,
    /// Bring up and keep this hub's interface. Default true; false when something else runs
    /// the hub's WireGuard (then only addresses and settings are handed out).
    #[serde(default = "yes")]
    pub manage_interface: bool,
    /// `auto` (kernel, else userspace), `kernel` or `userspace`.
    #[serde(default = "default_backend")]
    pub backend: BackendChoice,
    /// The userspace implementation. Default `wireguard-go`.
    #[serde(default = "default_wireguard_go")]
    pub wireguard_go: PathBuf,
    /// How often the peer list is compared with the fleet. Default 5 s.
    #[serde(default = "default_sync")]
    pub sync_secs: u64,
}

fn default_port() -> u16 {
    51820
}
fn default_interface() -> String {
    "agogwg0".into()
}
fn default_key_file() -> PathBuf {
    "/etc/agog/wireguard.key".into()
}
fn default_keepalive() -> u16 {
    25
}
fn yes() -> bool {
    true
}
fn default_backend() -> BackendChoice {
    BackendChoice::Auto
}
fn default_wireguard_go() -> PathBuf {
    "wireguard-go".into()
}
fn default_sync() -> u64 {
    5
}

/// An IPv4 range: network address and prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub network: u32,
    pub prefix: u8,
}

impl Range {
    pub fn parse(s: &str) -> Result<Range, String> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not address/prefix"))?;
        let a: Ipv4Addr = a.parse().map_err(|_| format!("{a:?} is not IPv4"))?;
        let p: u8 = p.parse().map_err(|_| format!("{p:?} is not a prefix"))?;
        if !(8..=30).contains(&p) {
            return Err(format!("prefix /{p}: use /8 to /30"));
        }
        let mask = u32::MAX << (32 - p);
        let network = u32::from(a) & mask;
        if network != u32::from(a) {
            return Err(format!(
                "{s}: host bits set (the range is {}/{p})",
                Ipv4Addr::from(network)
            ));
        }
        Ok(Range { network, prefix: p })
    }

    pub fn contains(&self, a: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix);
        u32::from(a) & mask == self.network
    }

    fn first_host(&self) -> u32 {
        self.network + 1
    }

    fn last_host(&self) -> u32 {
        self.network + (1u32 << (32 - self.prefix)) - 2
    }

    /// The lowest host address that is neither `hub` nor in `taken`.
    pub fn allocate(&self, hub: Ipv4Addr, taken: &[Ipv4Addr]) -> Option<Ipv4Addr> {
        (self.first_host()..=self.last_host())
            .map(Ipv4Addr::from)
            .find(|a| *a != hub && !taken.contains(a))
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.network), self.prefix)
    }
}

impl TunnelConfig {
    pub fn validate(&self) -> Result<(), String> {
        let r = Range::parse(&self.range).map_err(|e| format!("tunnel.range: {e}"))?;
        if let Some(a) = self.address {
            if !r.contains(a) {
                return Err(format!("tunnel.address {a} is not in tunnel.range {r}"));
            }
        }
        match self.endpoint.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => {}
            _ => return Err(format!("tunnel.endpoint {:?}: host:port", self.endpoint)),
        }
        if self.kind == HubTunnelKind::Openvpn && self.openvpn_ccd_dir.is_none() {
            return Err("tunnel.openvpn_ccd_dir is required with kind = \"openvpn\"".into());
        }
        if self.kind == HubTunnelKind::Ipsec
            && (self.ipsec_dir.is_none() || self.ipsec_strongswan_conf.is_none())
        {
            return Err(
                "tunnel.ipsec_dir and tunnel.ipsec_strongswan_conf are required with kind = \"ipsec\"".into(),
            );
        }
        if self.interface.is_empty()
            || self.interface.len() > 15
            || !self
                .interface
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err("tunnel.interface: up to 15 letters, digits, - and _".into());
        }
        Ok(())
    }

    pub fn range(&self) -> Range {
        Range::parse(&self.range).expect("validated")
    }

    pub fn hub_address(&self) -> Ipv4Addr {
        self.address
            .unwrap_or_else(|| Ipv4Addr::from(self.range().first_host()))
    }

    pub fn private_key(&self) -> anyhow::Result<Key> {
        if let Some(dir) = self.private_key_file.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        sync_core::wg::load_or_create_key(&self.private_key_file)
    }

    /// The settings an edge with tunnel address `edge` gets.
    pub fn settings_for(&self, edge: Ipv4Addr) -> anyhow::Result<TunnelSettings> {
        let r = self.range();
        let (kind, hub_public_key) = match self.kind {
            HubTunnelKind::Wireguard => ("wireguard", self.private_key()?.get_public().to_base64()),
            // The edge trusts the server by its certificate (its CA, remote-cert-tls).
            HubTunnelKind::Openvpn => ("openvpn", String::new()),
            // The hub's raw RSA public key (PEM).
            HubTunnelKind::Ipsec => ("ipsec", sync_core::ipsec::rsa_key(&self.private_key_file)?),
        };
        Ok(TunnelSettings {
            kind: kind.into(),
            address: format!("{edge}/{}", r.prefix),
            hub_address: self.hub_address().to_string(),
            hub_public_key,
            hub_endpoint: self.endpoint.clone(),
            allowed_ips: vec![r.to_string()],
            keepalive_secs: self.keepalive_secs,
        })
    }
}

/// In the enrollment or the provisioning transaction: the facility's address (kept when its
/// edge has one, or taken from its provisioning request's reservation), else the lowest one
/// neither an edge nor a reservation holds. `None` when the range is full.
pub async fn assign_address(
    tx: &tokio_postgres::Transaction<'_>,
    t: &TunnelConfig,
    facility: &str,
) -> Result<Option<Ipv4Addr>, tokio_postgres::Error> {
    // One allocator at a time per regional database (replicas enroll concurrently).
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('agog_hub.tunnel_address'))",
        &[],
    )
    .await?;
    // The facility's own first: its edge's address, then its reservation.
    let rows = tx
        .query(
            "SELECT facility_id, host(tunnel_address), 0 AS rank FROM agog_hub.edges
              WHERE tunnel_address IS NOT NULL
             UNION ALL
             SELECT facility_id, host(tunnel_address), 1 FROM agog_hub.provisioning_requests
              WHERE tunnel_address IS NOT NULL
             ORDER BY rank",
            &[],
        )
        .await?;
    let mut taken = Vec::new();
    for r in &rows {
        let a: Option<Ipv4Addr> = r.get::<_, String>(1).parse().ok();
        if let Some(a) = a {
            if r.get::<_, String>(0) == facility && t.range().contains(a) {
                return Ok(Some(a));
            }
            taken.push(a);
        }
    }
    Ok(t.range().allocate(t.hub_address(), &taken))
}

/// The peers the hub's interface should have: every edge with a key and an address.
async fn fleet_peers(db: &tokio_postgres::Client) -> anyhow::Result<Vec<Peer>> {
    let rows = db
        .query(
            "SELECT wireguard_public_key, host(tunnel_address) FROM agog_hub.edges
              WHERE tunnel_address IS NOT NULL AND wireguard_public_key IS NOT NULL
              ORDER BY tunnel_address",
            &[],
        )
        .await?;
    let mut peers = Vec::new();
    for r in rows {
        let key: String = r.get(0);
        let addr: String = r.get(1);
        let (Ok(public_key), Ok(a)) = (Key::from_base64(&key), addr.parse::<IpAddr>()) else {
            tracing::warn!(key, addr, "edge with an unusable key or address: left out");
            continue;
        };
        peers.push(Peer {
            public_key,
            endpoint: None,
            allowed_ips: vec![(a, 32)],
            keepalive_secs: None,
        });
    }
    Ok(peers)
}

/// `hub serve`'s tunnel task: bring up the interface, keep its peers equal to the fleet.
pub async fn run(cfg: Arc<HubConfig>, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    let Some(t) = cfg.tunnel.clone() else { return };
    if t.kind == HubTunnelKind::Openvpn {
        return run_openvpn_ccd(cfg, t, wake, stop).await;
    }
    if t.kind == HubTunnelKind::Ipsec {
        return run_ipsec(cfg, t, wake, stop).await;
    }
    if !t.manage_interface {
        return;
    }
    let address = format!("{}/{}", t.hub_address(), t.range().prefix);
    let mut iface: Option<WgInterface> = None;
    let mut applied: Option<Vec<Peer>> = None;
    let mut db: Option<tokio_postgres::Client> = None;
    loop {
        if iface.as_mut().is_some_and(|i| !i.alive()) {
            tracing::warn!(interface = %t.interface, "the tunnel interface is gone: bringing it up again");
            if let Some(i) = iface.take() {
                i.down().await;
            }
            applied = None;
        }
        if iface.is_none() {
            match bring_up(&t, &address).await {
                Ok(i) => {
                    tracing::info!(interface = %t.interface, backend = i.backend_name(), %address, port = t.listen_port, "hub tunnel interface up");
                    iface = Some(i);
                }
                Err(e) => {
                    tracing::error!(interface = %t.interface, error = %format!("{e:#}"), "cannot bring up the tunnel interface")
                }
            }
        }
        if db.as_ref().is_none_or(|c| c.is_closed()) {
            db = sync_core::connect(&cfg.database).await.ok();
        }
        if let (Some(i), Some(c)) = (&iface, &db) {
            match fleet_peers(c).await {
                Ok(peers) if applied.as_ref() != Some(&peers) => match i.sync_peers(&peers) {
                    Ok(()) => {
                        tracing::info!(interface = %t.interface, peers = peers.len(), "tunnel peers set to the fleet");
                        applied = Some(peers);
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "cannot set the tunnel peers")
                    }
                },
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot read the fleet's peers")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(t.sync_secs.max(1))) => {}
            _ = wake.notified() => {}
            _ = stop.changed() => break,
        }
    }
    if let Some(i) = iface {
        i.down().await;
    }
}

/// OpenVPN: one client-config file per enrolled edge, named by its facility id (the CN of its
/// certificate), pushing its address; files of edges that went are removed.
async fn run_openvpn_ccd(
    cfg: Arc<HubConfig>,
    t: TunnelConfig,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let dir = t.openvpn_ccd_dir.clone().expect("validated");
    let mask = Ipv4Addr::from(u32::MAX << (32 - t.range().prefix));
    let mut db: Option<tokio_postgres::Client> = None;
    loop {
        if db.as_ref().is_none_or(|c| c.is_closed()) {
            db = sync_core::connect(&cfg.database).await.ok();
        }
        if let Some(c) = &db {
            if let Err(e) = write_ccd(c, &dir, mask).await {
                tracing::warn!(error = %format!("{e:#}"), dir = %dir.display(), "cannot write the OpenVPN client configs");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(t.sync_secs.max(1))) => {}
            _ = wake.notified() => {}
            _ = stop.changed() => break,
        }
    }
}

/// IPsec: the hub's swanctl.conf with one connection per enrolled edge (its key in `pubkey/`),
/// loaded into the charon beside the hub whenever it changes (and every minute, in case charon
/// restarted).
async fn run_ipsec(
    cfg: Arc<HubConfig>,
    t: TunnelConfig,
    wake: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut db: Option<tokio_postgres::Client> = None;
    let mut loaded: Option<(String, std::time::Instant)> = None;
    loop {
        if db.as_ref().is_none_or(|c| c.is_closed()) {
            db = sync_core::connect(&cfg.database).await.ok();
        }
        if let Some(c) = &db {
            match ipsec_conf(c, &t).await {
                Ok(text) => {
                    let stale = loaded
                        .as_ref()
                        .is_none_or(|(l, at)| *l != text || at.elapsed() > Duration::from_secs(60));
                    if stale {
                        let dir = t.ipsec_dir.clone().unwrap();
                        let conf = t.ipsec_strongswan_conf.clone().unwrap();
                        let file = dir.join("swanctl.conf");
                        let r = std::fs::write(&file, &text)
                            .map_err(anyhow::Error::from)
                            .and_then(|_| sync_core::ipsec::load_all(&conf, &file));
                        match r {
                            Ok(_) => {
                                tracing::info!(file = %file.display(), "IPsec connections loaded");
                                loaded = Some((text, std::time::Instant::now()));
                            }
                            Err(e) => {
                                tracing::warn!(error = %format!("{e:#}"), "cannot load the IPsec connections")
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "cannot write the IPsec connections")
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(t.sync_secs.max(1))) => {}
            _ = wake.notified() => {}
            _ = stop.changed() => break,
        }
    }
}

async fn ipsec_conf(db: &tokio_postgres::Client, t: &TunnelConfig) -> anyhow::Result<String> {
    let dir = t.ipsec_dir.clone().expect("validated");
    for d in ["pubkey", "private"] {
        std::fs::create_dir_all(dir.join(d))?;
    }
    let hub_pub = sync_core::ipsec::rsa_key(&t.private_key_file)?;
    std::fs::copy(&t.private_key_file, dir.join("private/agog-hub.key"))?;
    std::fs::write(dir.join("pubkey/agog-hub.pem"), &hub_pub)?;
    let rows = db
        .query(
            "SELECT facility_id, host(tunnel_address), ipsec_public_key FROM agog_hub.edges
              WHERE tunnel_address IS NOT NULL AND ipsec_public_key IS NOT NULL
              ORDER BY facility_id",
            &[],
        )
        .await?;
    let mut text = String::new();
    for r in rows {
        let facility: String = r.get(0);
        sync_core::ids::FacilityId::parse(&facility)
            .map_err(|e| anyhow::anyhow!("facility {facility:?}: {e}"))?;
        let addr: String = r.get(1);
        let key: String = r.get(2);
        anyhow::ensure!(
            sync_core::ipsec::is_public_key_pem(&key),
            "{facility}: not a public key"
        );
        let key_file = format!("agog-edge-{facility}.pem");
        std::fs::write(dir.join("pubkey").join(&key_file), &key)?;
        let v = sync_core::vpn::IpsecValues {
            facility: facility.clone(),
            local_addrs: "%any".into(),
            remote_addrs: "%any".into(),
            local_id: "hub".into(),
            remote_id: facility.clone(),
            local_ts: format!("{}/32", t.hub_address()),
            remote_ts: format!("{addr}/32"),
            auth: "pubkey".into(),
            psk: None,
            local_pubkey: Some("agog-hub.pem".into()),
            remote_pubkey: Some(key_file),
            dpd_secs: 10,
            start_action: "none".into(),
        };
        text.push_str(&v.render()?.text);
    }
    Ok(text)
}

async fn write_ccd(
    db: &tokio_postgres::Client,
    dir: &std::path::Path,
    mask: Ipv4Addr,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let rows = db
        .query(
            "SELECT facility_id, host(tunnel_address) FROM agog_hub.edges
              WHERE tunnel_address IS NOT NULL",
            &[],
        )
        .await?;
    let mut keep = std::collections::BTreeSet::new();
    for r in rows {
        let facility: String = r.get(0);
        let addr: Ipv4Addr = r.get::<_, String>(1).parse()?;
        // Facility ids are validated ids (letters, digits, dashes): safe as file names.
        sync_core::ids::FacilityId::parse(&facility)
            .map_err(|e| anyhow::anyhow!("facility {facility:?}: {e}"))?;
        let text = format!("ifconfig-push {addr} {mask}\n");
        let path = dir.join(&facility);
        if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            std::fs::write(&path, &text)?;
            tracing::info!(facility, %addr, "OpenVPN client config written");
        }
        keep.insert(facility);
    }
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !keep.contains(&name) {
            let _ = std::fs::remove_file(e.path());
            tracing::info!(facility = name, "OpenVPN client config removed");
        }
    }
    Ok(())
}

async fn bring_up(t: &TunnelConfig, address: &str) -> anyhow::Result<WgInterface> {
    let key = t.private_key()?;
    WgInterface::up(
        &t.interface,
        t.backend,
        &t.wireguard_go,
        &key,
        Some(t.listen_port),
        address,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_allocate_the_lowest_free_host_never_the_hub_or_a_taken_one() {
        let r = Range::parse("10.99.0.0/29").unwrap();
        let hub: Ipv4Addr = "10.99.0.1".parse().unwrap();
        let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert_eq!(r.allocate(hub, &[]), Some(a("10.99.0.2")));
        assert_eq!(r.allocate(hub, &[a("10.99.0.2")]), Some(a("10.99.0.3")));
        let all: Vec<_> = (2..=6).map(|i| a(&format!("10.99.0.{i}"))).collect();
        assert_eq!(r.allocate(hub, &all), None, "broadcast .7 is never given");
        assert!(Range::parse("10.99.0.1/24").is_err());
        assert!(Range::parse("10.99.0.0/31").is_err());
    }
}
