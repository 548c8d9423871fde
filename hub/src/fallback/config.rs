//! `[fallback]` in hub.toml.

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FallbackConfig {
    /// Where workers reach their facility's workspace; `{role}` and `{facility}` are filled in.
    /// Default: `postgresql://{role}@<host>:<port>/<dbname>` of `database`.
    pub workspace_address: Option<String>,
    /// The `[[alerts.channels]]` entry (kind = "email") that tells workers. Default: the first
    /// email channel.
    pub email_channel: Option<String>,
    /// How a rebuilt edge reaches the regional database for its restore when master data is
    /// published by a node of its own (without user or password). Default: host, port and
    /// dbname of `database`.
    pub regional_replication: Option<String>,
    /// How long the rebuilt edge's first copy may take while the workspace stays writable
    /// before the workspace turns read-only anyway so the copy can finish. Default 600 s.
    pub copy_wait_secs: u64,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        FallbackConfig {
            workspace_address: None,
            email_channel: None,
            regional_replication: None,
            copy_wait_secs: 600,
        }
    }
}

impl FallbackConfig {
    pub fn validate(&self) -> Result<(), String> {
        if let Some(r) = &self.regional_replication {
            let parsed: tokio_postgres::Config = r
                .parse()
                .map_err(|e| format!("fallback.regional_replication: {e}"))?;
            if parsed.get_user().is_some() || parsed.get_password().is_some() {
                return Err("fallback.regional_replication: leave user and password out (each rebuilt edge gets its own)".into());
            }
        }
        if let Some(a) = &self.workspace_address {
            if a.trim().is_empty() || a.chars().any(|c| c.is_control()) {
                return Err("fallback.workspace_address: one line, not empty".into());
            }
        }
        Ok(())
    }
}

/// `host=... port=... dbname=...` of a libpq connection string, without credentials.
pub fn address_of(conninfo: &str) -> Option<(String, u16, String)> {
    let c: tokio_postgres::Config = conninfo.parse().ok()?;
    let host = match c.get_hosts().first()? {
        tokio_postgres::config::Host::Tcp(h) => h.clone(),
        #[allow(unreachable_patterns)]
        _ => return None,
    };
    let port = c.get_ports().first().copied().unwrap_or(5432);
    let db = c.get_dbname().unwrap_or("agog").to_owned();
    Some((host, port, db))
}
