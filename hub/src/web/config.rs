//! `[web]` in hub.toml: the dashboard and the operators' read API, on a listener of their own.

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebConfig {
    /// e.g. `0.0.0.0:8444`. Without TLS only a loopback address is accepted.
    pub listen: SocketAddr,
    /// PEM certificate chain and key: HTTPS. Required unless `listen` is a loopback address
    /// (a local lab, or behind a TLS-terminating proxy on the same host).
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// A session ends this long after sign-in, whatever happens. Default 12 h.
    #[serde(default = "default_session_max")]
    pub session_max_minutes: u64,
    /// A session ends after this long without a request. Default 60 min.
    #[serde(default = "default_session_idle")]
    pub session_idle_minutes: u64,
    /// How often open pages refresh their live part. Default 5 s.
    #[serde(default = "default_refresh")]
    pub refresh_secs: u64,
    /// Inventory is STALE when the facility's last sync is older than this. Default 60 s (the
    /// design's rule).
    #[serde(default = "default_stale_after")]
    pub stale_after_secs: u64,
}

fn default_session_max() -> u64 {
    12 * 60
}
fn default_session_idle() -> u64 {
    60
}
fn default_refresh() -> u64 {
    5
}
fn default_stale_after() -> u64 {
    60
}

impl WebConfig {
    pub fn validate(&self) -> Result<(), String> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), Some(_)) => {}
            (None, None) if self.listen.ip().is_loopback() => {}
            (None, None) => {
                return Err(format!(
                    "web.listen {}: plain HTTP only on a loopback address; set web.tls_cert and web.tls_key to serve it on the network",
                    self.listen
                ))
            }
            _ => return Err("web.tls_cert and web.tls_key go together".into()),
        }
        if self.session_max_minutes == 0 || self.session_idle_minutes == 0 {
            return Err("web.session_max_minutes and web.session_idle_minutes: at least 1".into());
        }
        if self.refresh_secs == 0 || self.stale_after_secs == 0 {
            return Err("web.refresh_secs and web.stale_after_secs: at least 1".into());
        }
        Ok(())
    }

    pub fn tls(&self) -> bool {
        self.tls_cert.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<(), String> {
        let c: WebConfig = toml::from_str(s).map_err(|e| e.to_string())?;
        c.validate()
    }

    #[test]
    fn plain_http_only_on_loopback_and_tls_files_go_together() {
        assert!(parse("listen = \"127.0.0.1:8444\"").is_ok());
        let e = parse("listen = \"0.0.0.0:8444\"").unwrap_err();
        assert!(e.contains("loopback"), "{e}");
        assert!(parse("listen = \"0.0.0.0:8444\"\ntls_cert = \"c\"\ntls_key = \"k\"").is_ok());
        let e = parse("listen = \"0.0.0.0:8444\"\ntls_cert = \"c\"").unwrap_err();
        assert!(e.contains("go together"), "{e}");
    }
}
