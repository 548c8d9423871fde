//! Enrollment: make the box's secrets on the box (a WireGuard key pair, the password of the
//! role the regional subscribes with), present the bootstrap token to the hub over TLS pinned to
//! the hub's CA, and keep what the hub answered. Enrolled once: a restart reads the state back.
//!
//! Files in `state_dir` (0700, root only), each written atomically (temp file, fsync, rename):
//! `wireguard.key` (the private key, never sent), `replication.password`, `enrollment.json`
//! (written last: its presence means "enrolled").

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use backon::{ExponentialBuilder, Retryable};
use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sync_core::api::{
    ApiError, EnrollRequest, EnrollResponse, DEFAULT_REPLICATION_USER, ENROLL_PATH,
};

use crate::config::{EdgeConfig, EnrollConfig, UpstreamConfig};

pub const STATE_FILE: &str = "enrollment.json";
pub const PASSWORD_FILE: &str = "replication.password";
pub const WIREGUARD_KEY_FILE: &str = "wireguard.key";

/// What the agent keeps after enrolling.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enrollment {
    pub response: EnrollResponse,
    pub wireguard_public_key: String,
    /// The agent's clock at enrollment (RFC 3339).
    pub enrolled_at: String,
    /// Our clock minus the hub's, when the answer arrived.
    pub clock_skew_seconds: f64,
}

/// Why an attempt did not enroll.
#[derive(Debug)]
pub enum Failure {
    /// The hub answered and said no (bad, used, expired or revoked token, wrong facility, a bad
    /// field). Retrying the same request would get the same answer.
    Refused { status: u16, error: ApiError },
    /// No answer, or the hub could not complete it right now: retry.
    Transient(String),
    /// Something on this box (files, config).
    Local(anyhow::Error),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Refused { status, error } => write!(
                f,
                "the hub refused the enrollment (HTTP {status}, {}): {}",
                error.error, error.message
            ),
            Failure::Transient(e) => write!(f, "the hub did not answer: {e}"),
            Failure::Local(e) => write!(f, "{e:#}"),
        }
    }
}

fn state_dir(e: &EnrollConfig) -> &Path {
    &e.state_dir
}

/// The enrollment kept in `state_dir`, if this box is enrolled.
pub fn load(cfg: &EdgeConfig) -> anyhow::Result<Option<Enrollment>> {
    let Some(e) = &cfg.enroll else {
        return Ok(None);
    };
    let path = state_dir(e).join(STATE_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err).with_context(|| format!("read {}", path.display())),
    };
    let en: Enrollment =
        serde_json::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
    check_matches(cfg, &en.response).map_err(|m| anyhow::anyhow!("{}: {m}", path.display()))?;
    Ok(Some(en))
}

/// The enrollment provides the upstream (and the node name).
pub fn apply(cfg: &mut EdgeConfig, en: &Enrollment) {
    let Some(e) = &cfg.enroll else { return };
    let r = &en.response;
    cfg.node = Some(r.node.clone());
    cfg.upstream = Some(UpstreamConfig {
        regional_node: r.regional_node.clone(),
        regional_address: r.regional_address.clone(),
        master_node: r.master_node.clone(),
        master_conninfo: r.master_conninfo.clone(),
        replication_role: DEFAULT_REPLICATION_USER.into(),
        replication_password_file: state_dir(e).join(PASSWORD_FILE),
        restore_conninfo: r.restore_conninfo.clone(),
    });
}

fn check_matches(cfg: &EdgeConfig, r: &EnrollResponse) -> Result<(), String> {
    if r.facility_id != cfg.facility || r.tenant_id != cfg.tenant || r.region != cfg.region {
        return Err(format!(
            "the hub enrolled this box as {} / {} / {}, but the config says {} / {} / {}",
            r.facility_id, r.tenant_id, r.region, cfg.facility, cfg.tenant, cfg.region
        ));
    }
    if r.master_conninfo.parse::<tokio_postgres::Config>().is_err() {
        return Err("the hub's master_conninfo is not a connection string".into());
    }
    if let Some(c) = &r.restore_conninfo {
        if c.parse::<tokio_postgres::Config>().is_err() {
            return Err("the hub's restore_conninfo is not a connection string".into());
        }
    }
    Ok(())
}

/// Write `bytes` to `path` atomically, readable by root only.
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    sync_core::fsutil::write_private(path, bytes)
}

fn ensure_state_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    Ok(())
}

fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The WireGuard key pair, made on this box once; returns the public key (base64).
fn wireguard_public_key(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join(WIREGUARD_KEY_FILE);
    let b64 = base64::engine::general_purpose::STANDARD;
    let secret = match std::fs::read_to_string(&path) {
        Ok(text) => {
            let bytes: [u8; 32] = b64
                .decode(text.trim())
                .ok()
                .and_then(|b| b.try_into().ok())
                .with_context(|| format!("{} is not a WireGuard private key", path.display()))?;
            x25519_dalek::StaticSecret::from(bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = x25519_dalek::StaticSecret::random_from_rng(rand::rngs::OsRng);
            write_private(
                &path,
                format!("{}\n", b64.encode(secret.to_bytes())).as_bytes(),
            )?;
            secret
        }
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    Ok(b64.encode(x25519_dalek::PublicKey::from(&secret).as_bytes()))
}

/// The replication password, chosen here once (kept across retries: the hub may have stored it).
fn replication_password(dir: &Path) -> anyhow::Result<String> {
    let path = dir.join(PASSWORD_FILE);
    match std::fs::read_to_string(&path) {
        Ok(p) if !p.trim().is_empty() => Ok(p.trim().to_owned()),
        Ok(_) | Err(_) => {
            let p = random_b64(32);
            write_private(&path, p.as_bytes())?;
            Ok(p)
        }
    }
}

fn bootstrap_token(e: &EnrollConfig) -> anyhow::Result<String> {
    let token = match (&e.bootstrap_token, &e.bootstrap_token_file) {
        (Some(t), _) => t.clone(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("read enroll.bootstrap_token_file {}", f.display()))?,
        (None, None) => anyhow::bail!("enroll: no bootstrap token configured"),
    };
    Ok(token.trim().to_owned())
}

/// The request this box sends (secrets made on first use).
pub fn request(cfg: &EdgeConfig) -> anyhow::Result<EnrollRequest> {
    let e = cfg.enroll.as_ref().context("no [enroll] section")?;
    let dir = state_dir(e);
    ensure_state_dir(dir)?;
    let host = &e.advertise_host;
    let url_host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.clone()
    };
    Ok(EnrollRequest {
        token: bootstrap_token(e)?,
        facility_id: cfg.facility.to_string(),
        node: Some(cfg.node_name().map_err(anyhow::Error::msg)?.to_string()),
        wireguard_public_key: wireguard_public_key(dir)?,
        replication_password: replication_password(dir)?,
        ipsec_public_key: match cfg.tunnel.as_ref().map(|t| t.kind) {
            Some(crate::config::TunnelKind::Ipsec) => Some(sync_core::ipsec::rsa_key(
                &dir.join(crate::tunnel_ipsec::KEY_FILE),
            )?),
            _ => None,
        },
        replication_user: DEFAULT_REPLICATION_USER.into(),
        health_url: format!("http://{url_host}:{}/health", cfg.health.listen.port()),
        replication_host: host.clone(),
        replication_port: cfg.postgres.port,
        replication_dbname: cfg.postgres.database.clone(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
    })
}

fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    s
}

/// An exclusive lock on `state_dir/enroll.lock`, released when the file is dropped.
async fn lock_state_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    ensure_state_dir(dir)?;
    let path = dir.join("enroll.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("open {}", path.display()))?;
    tokio::task::spawn_blocking(move || {
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor we own; the lock goes with the file.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(anyhow::anyhow!(
                "lock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            ));
        }
        Ok(file)
    })
    .await?
}

/// One POST to the hub.
async fn attempt(
    client: &reqwest::Client,
    url: &str,
    req: &EnrollRequest,
) -> Result<EnrollResponse, Failure> {
    let resp = client
        .post(url)
        .json(req)
        .send()
        .await
        .map_err(|e| Failure::Transient(describe(&e)))?;
    let status = resp.status().as_u16();
    let body = resp
        .bytes()
        .await
        .map_err(|e| Failure::Transient(describe(&e)))?;
    if status == 200 {
        return serde_json::from_slice(&body)
            .map_err(|e| Failure::Local(anyhow::anyhow!("the hub's answer does not parse: {e}")));
    }
    let error = serde_json::from_slice::<ApiError>(&body).unwrap_or_else(|_| ApiError {
        error: "http_error".into(),
        message: String::from_utf8_lossy(&body).chars().take(300).collect(),
    });
    if status >= 500 || status == 429 || status == 408 {
        Err(Failure::Transient(format!(
            "HTTP {status} ({}): {}",
            error.error, error.message
        )))
    } else {
        Err(Failure::Refused { status, error })
    }
}

/// Enroll, retrying with exponential backoff and jitter (1 s doubling to 30 s) for as long as
/// the hub does not answer; a refusal is returned at once. On success the state is on disk.
pub async fn enroll(cfg: &EdgeConfig) -> Result<Enrollment, Failure> {
    let e = cfg
        .enroll
        .as_ref()
        .ok_or_else(|| Failure::Local(anyhow::anyhow!("no [enroll] section in the config")))?;
    // One enrollment at a time on this box (`edge-agent enroll` next to a starting `run`):
    // the second waits, then finds the first one's state.
    let _lock = lock_state_dir(state_dir(e)).await.map_err(Failure::Local)?;
    if let Some(en) = load(cfg).map_err(Failure::Local)? {
        return Ok(en);
    }
    let req = request(cfg).map_err(Failure::Local)?;
    let client = crate::tls::pinned_client(&e.ca_cert).map_err(Failure::Local)?;
    let url = format!("{}{ENROLL_PATH}", e.hub_url.trim_end_matches('/'));
    tracing::info!(hub = %e.hub_url, facility = %cfg.facility, "enrolling");
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_secs(1))
        .with_max_delay(Duration::from_secs(30))
        .with_jitter()
        .without_max_times();
    let resp = (|| attempt(&client, &url, &req))
        .retry(backoff)
        .when(|f| matches!(f, Failure::Transient(_)))
        .notify(|f, wait| {
            tracing::warn!(error = %f, retry_in = ?wait, "enrollment: hub not reachable yet, retrying");
        })
        .await?;
    check_matches(cfg, &resp).map_err(|m| Failure::Local(anyhow::anyhow!(m)))?;
    let now = chrono::Utc::now();
    let skew = chrono::DateTime::parse_from_rfc3339(&resp.hub_time)
        .map(|h| (now - h.with_timezone(&chrono::Utc)).num_milliseconds() as f64 / 1000.0)
        .unwrap_or(0.0);
    if skew.abs() > 60.0 {
        tracing::warn!(
            clock_skew_seconds = skew,
            hub_time = %resp.hub_time,
            "this box's clock is off the hub's by more than a minute: check NTP"
        );
    }
    let en = Enrollment {
        wireguard_public_key: req.wireguard_public_key.clone(),
        response: resp,
        enrolled_at: now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        clock_skew_seconds: skew,
    };
    let path: PathBuf = state_dir(e).join(STATE_FILE);
    let text = serde_json::to_vec_pretty(&en).map_err(|e| Failure::Local(e.into()))?;
    write_private(&path, &text).map_err(Failure::Local)?;
    tracing::info!(
        node = %en.response.node,
        regional = %en.response.regional_node,
        master = %en.response.master_node,
        clock_skew_seconds = skew,
        "enrolled"
    );
    Ok(en)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path) -> EdgeConfig {
        EdgeConfig::parse(&format!(
            "facility = \"facility-la-001\"\ntenant = \"tenant-foo-inc\"\nregion = \"us-east\"\nnode = \"la\"\n\
             [enroll]\nhub_url = \"https://127.0.0.1:1\"\nbootstrap_token = \" agog_bt_abc \"\n\
             ca_cert = \"/nonexistent\"\nadvertise_host = \"10.8.0.12\"\nstate_dir = \"{}\"\n",
            dir.display()
        ))
        .unwrap()
    }

    #[test]
    fn secrets_are_made_once_private_and_the_request_is_complete() {
        let dir = std::env::temp_dir().join(format!("agog-enroll-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let c = cfg(&dir.join("state"));
        let a = request(&c).unwrap();
        let b = request(&c).unwrap();
        assert_eq!(a.token, "agog_bt_abc");
        assert_eq!(
            a.wireguard_public_key, b.wireguard_public_key,
            "key made once"
        );
        assert_eq!(a.replication_password, b.replication_password);
        assert_eq!(a.health_url, "http://10.8.0.12:4010/health");
        assert_eq!(a.replication_port, 5432);
        assert_eq!(a.node.as_deref(), Some("la"));
        let key = base64::engine::general_purpose::STANDARD
            .decode(&a.wireguard_public_key)
            .unwrap();
        assert_eq!(key.len(), 32);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir.join("state")), 0o700);
        assert_eq!(mode(&dir.join("state").join(WIREGUARD_KEY_FILE)), 0o600);
        assert_eq!(mode(&dir.join("state").join(PASSWORD_FILE)), 0o600);
        let private = std::fs::read_to_string(dir.join("state").join(WIREGUARD_KEY_FILE)).unwrap();
        assert!(!private.contains(&a.wireguard_public_key));
        assert!(load(&c).unwrap().is_none(), "not enrolled yet");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
