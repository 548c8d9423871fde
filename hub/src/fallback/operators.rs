//! Who may activate a cloud fallback and issue restore tokens: operators granted the right
//! (`hub fallback grant <name>`), each with an API key for the dashboard and the API (only its
//! SHA-256 is kept). The CLI names its operator with `--operator` (default: the login name);
//! holding the hub's config is not enough to act under a name that was not granted.

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

use super::Refusal;
use crate::enroll::token_hash;

/// API keys start with this (recognisable when pasted in the wrong place).
pub const KEY_PREFIX: &str = "agog_op_";

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '+' | '-'))
}

/// The name the CLI acts under when `--operator` is not given: the person behind sudo, or the
/// login name.
pub fn default_cli_operator() -> Option<String> {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .find(|v| !v.is_empty())
}

/// Grant the right (again): a new API key, printed once by the caller.
pub async fn grant(
    db: &impl GenericClient,
    operator: &str,
    granted_by: &str,
) -> Result<String, Refusal> {
    if !valid_name(operator) {
        return Err(Refusal::invalid(format!(
            "operator name {:?}: 1 to 100 letters, digits and . _ @ + -",
            operator.chars().take(100).collect::<String>()
        )));
    }
    let key = crate::enroll::new_token().replacen(sync_core::api::TOKEN_PREFIX, KEY_PREFIX, 1);
    db.execute(
        "INSERT INTO agog_hub.fallback_operators (operator, key_sha256, granted_by) VALUES ($1, $2, $3)
         ON CONFLICT (operator) DO UPDATE SET key_sha256 = EXCLUDED.key_sha256,
             granted_by = EXCLUDED.granted_by, granted_at = now()",
        &[&operator, &token_hash(&key), &granted_by],
    )
    .await?;
    tracing::info!(operator, granted_by, "cloud fallback right granted");
    Ok(key)
}

pub async fn revoke(db: &impl GenericClient, operator: &str) -> Result<(), Refusal> {
    let n = db
        .execute(
            "DELETE FROM agog_hub.fallback_operators WHERE operator = $1",
            &[&operator],
        )
        .await?;
    if n == 0 {
        return Err(Refusal::new(
            404,
            "unknown_operator",
            format!(
                "{operator} does not hold the cloud fallback right (see `hub fallback operators`)"
            ),
        ));
    }
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct Operator {
    pub operator: String,
    pub granted_by: String,
    pub granted_at: DateTime<Utc>,
}

pub async fn list(db: &impl GenericClient) -> Result<Vec<Operator>, tokio_postgres::Error> {
    Ok(db
        .query(
            "SELECT operator, granted_by, granted_at FROM agog_hub.fallback_operators ORDER BY operator",
            &[],
        )
        .await?
        .iter()
        .map(|r| Operator {
            operator: r.get(0),
            granted_by: r.get(1),
            granted_at: r.get(2),
        })
        .collect())
}

/// The operator must hold the right.
pub async fn require(db: &impl GenericClient, operator: &str) -> Result<(), Refusal> {
    let known = db
        .query_opt(
            "SELECT 1 FROM agog_hub.fallback_operators WHERE operator = $1",
            &[&operator],
        )
        .await?
        .is_some();
    if known {
        Ok(())
    } else {
        Err(Refusal::new(
            403,
            "not_permitted",
            format!(
                "operator {operator} may not activate or end a cloud fallback; an administrator grants the right with `hub fallback grant {operator}`"
            ),
        ))
    }
}

/// The operator an API key belongs to.
pub async fn by_key(db: &impl GenericClient, key: &str) -> Result<String, Refusal> {
    let unknown = || {
        Refusal::new(
            401,
            "unauthorized",
            "send `Authorization: Bearer <operator API key>` (made by `hub fallback grant <operator>`)",
        )
    };
    if !key.starts_with(KEY_PREFIX) || key.len() > 128 {
        return Err(unknown());
    }
    db.query_opt(
        "SELECT operator FROM agog_hub.fallback_operators WHERE key_sha256 = $1",
        &[&token_hash(key)],
    )
    .await?
    .map(|r| r.get(0))
    .ok_or_else(unknown)
}
