//! Who is asking: operators (made with `hub operator`), their bearer tokens and dashboard
//! sessions. Secrets are never stored: passwords as Argon2id hashes, tokens and session ids
//! (32 random bytes each) as SHA-256. Every lookup yields an [`Operator`], whose tenant (if any)
//! scopes every query of the dashboard and the read API.

use argon2::password_hash::{rand_core::OsRng, PasswordHash, PasswordHasher, SaltString};
use argon2::{Argon2, PasswordVerifier};
use base64::Engine;
use rand::RngCore;
use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::enroll::token_hash;

/// Operator tokens start with this, so a leaked one is recognisable (and scanners can match it).
pub const TOKEN_PREFIX: &str = "agog_ot_";
/// The dashboard's session cookie.
pub const SESSION_COOKIE: &str = "agog_session";

/// A signed-in operator.
#[derive(Debug, Clone, Serialize)]
pub struct Operator {
    pub id: i64,
    pub name: String,
    /// `None`: every tenant of the region; `Some(t)`: only tenant `t`.
    pub tenant: Option<String>,
}

impl Operator {
    /// The tenant every query is limited to (`None`: all).
    pub fn scope(&self) -> Option<&str> {
        self.tenant.as_deref()
    }
}

/// 32 random bytes, URL-safe base64 with `prefix`.
pub fn random_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hash the password: {e}"))
}

fn verify_password(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash of a password nobody has, verified against when the operator does not exist, so a
/// wrong name costs as long as a wrong password.
fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash_password(&random_secret("")).expect("argon2 with default parameters"))
}

/// Name and password -> the operator, if both are right and the operator is enabled.
pub async fn by_password(
    db: &impl GenericClient,
    name: &str,
    password: &str,
) -> anyhow::Result<Option<Operator>> {
    let row = db
        .query_opt(
            "SELECT id, name, tenant_id, password_hash FROM agog_hub.operators
              WHERE name = $1 AND disabled_at IS NULL",
            &[&name.trim().to_ascii_lowercase()],
        )
        .await?;
    let hash: Option<String> = row.as_ref().and_then(|r| r.get(3));
    let candidate = hash.clone().unwrap_or_else(|| decoy_hash().to_string());
    let password = password.to_string();
    // Argon2 takes tens of milliseconds of CPU: off the async workers.
    let ok = tokio::task::spawn_blocking(move || verify_password(&candidate, &password)).await?;
    Ok(match (row, ok && hash.is_some()) {
        (Some(r), true) => Some(Operator {
            id: r.get(0),
            name: r.get(1),
            tenant: r.get(2),
        }),
        _ => None,
    })
}

/// A bearer token -> its operator, if the token is known, unexpired and unrevoked and the
/// operator enabled. Records the use.
pub async fn by_token(db: &impl GenericClient, token: &str) -> anyhow::Result<Option<Operator>> {
    if !token.starts_with(TOKEN_PREFIX) {
        return Ok(None);
    }
    let row = db
        .query_opt(
            "UPDATE agog_hub.operator_tokens t SET last_used_at = now()
               FROM agog_hub.operators o
              WHERE t.token_sha256 = $1 AND o.id = t.operator_id
                AND t.revoked_at IS NULL AND t.expires_at > now() AND o.disabled_at IS NULL
             RETURNING o.id, o.name, o.tenant_id",
            &[&token_hash(token)],
        )
        .await?;
    Ok(row.map(|r| Operator {
        id: r.get(0),
        name: r.get(1),
        tenant: r.get(2),
    }))
}

/// Open a session; returns the cookie value (shown to the browser only).
pub async fn open_session(
    db: &impl GenericClient,
    operator: &Operator,
    max_minutes: u64,
) -> anyhow::Result<String> {
    let id = random_secret("");
    db.execute(
        "INSERT INTO agog_hub.operator_sessions (id_sha256, operator_id, expires_at)
         VALUES ($1, $2, now() + make_interval(mins => $3))",
        &[
            &token_hash(&id),
            &operator.id,
            &(max_minutes.min(i32::MAX as u64) as i32),
        ],
    )
    .await?;
    // Sessions that ended stay until someone signs in again; this keeps the table small.
    db.execute(
        "DELETE FROM agog_hub.operator_sessions WHERE expires_at < now() - interval '1 day'",
        &[],
    )
    .await?;
    Ok(id)
}

/// A session cookie -> its operator, if the session has neither expired nor been idle for
/// `idle_minutes`. Each use moves the idle deadline.
pub async fn by_session(
    db: &impl GenericClient,
    cookie: &str,
    idle_minutes: u64,
) -> anyhow::Result<Option<Operator>> {
    let row = db
        .query_opt(
            "UPDATE agog_hub.operator_sessions s SET last_seen_at = now()
               FROM agog_hub.operators o
              WHERE s.id_sha256 = $1 AND o.id = s.operator_id AND o.disabled_at IS NULL
                AND s.expires_at > now() AND s.last_seen_at > now() - make_interval(mins => $2)
             RETURNING o.id, o.name, o.tenant_id",
            &[
                &token_hash(cookie),
                &(idle_minutes.min(i32::MAX as u64) as i32),
            ],
        )
        .await?;
    Ok(row.map(|r| Operator {
        id: r.get(0),
        name: r.get(1),
        tenant: r.get(2),
    }))
}

pub async fn close_session(db: &impl GenericClient, cookie: &str) -> anyhow::Result<()> {
    db.execute(
        "DELETE FROM agog_hub.operator_sessions WHERE id_sha256 = $1",
        &[&token_hash(cookie)],
    )
    .await?;
    Ok(())
}

/// The session cookie of a request, if it sent one.
pub fn session_cookie(headers: &axum::http::HeaderMap) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|h| cookie_value(h, SESSION_COOKIE).map(String::from))
}

/// The value of cookie `name` in a `Cookie` header.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_own_hash() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(&h, "correct horse"));
        assert!(!verify_password(&h, "correct horse "));
        assert!(!verify_password("not a hash", "x"));
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let h = "a=1; agog_session=abc; agog_session_old=zzz";
        assert_eq!(cookie_value(h, SESSION_COOKIE), Some("abc"));
        assert_eq!(cookie_value("agog_session_old=zzz", SESSION_COOKIE), None);
    }
}
