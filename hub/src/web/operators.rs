//! Managing operators and their tokens (`hub operator ...`). The CLI is the only way in: the
//! dashboard has no sign-up and no account pages.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sync_core::TenantId;
use tokio_postgres::Client;

use super::auth::{hash_password, random_secret, TOKEN_PREFIX};
use crate::enroll::token_hash;

/// Lower case letters, digits and `._@-`, starting with a letter or digit, at most 64.
pub fn valid_name(name: &str) -> Result<String, String> {
    let n = name.trim().to_ascii_lowercase();
    let ok = !n.is_empty()
        && n.len() <= 64
        && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._@-".contains(c));
    if ok {
        Ok(n)
    } else {
        Err(format!(
            "operator name {name:?}: 1 to 64 of a-z 0-9 . _ @ -, starting with a letter or digit"
        ))
    }
}

/// At least 12 characters: the dashboard is reachable from the network in production.
pub fn valid_password(p: &str) -> Result<(), String> {
    if p.chars().count() < 12 {
        return Err("the password needs at least 12 characters".into());
    }
    Ok(())
}

/// Add an operator. Without a password it signs in with tokens only.
pub async fn add(
    db: &Client,
    name: &str,
    tenant: Option<&TenantId>,
    password: Option<&str>,
) -> anyhow::Result<i64> {
    let name = valid_name(name).map_err(anyhow::Error::msg)?;
    let hash = match password {
        Some(p) => {
            valid_password(p).map_err(anyhow::Error::msg)?;
            Some(hash_password(p)?)
        }
        None => None,
    };
    let row = db
        .query_opt(
            "INSERT INTO agog_hub.operators (name, tenant_id, password_hash) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO NOTHING RETURNING id",
            &[&name, &tenant.map(|t| t.as_str()), &hash],
        )
        .await?;
    row.map(|r| r.get(0)).ok_or_else(|| {
        anyhow::anyhow!(
            "operator {name} exists already (hub operator password {name} sets a new password)"
        )
    })
}

/// Set a new password; ends the operator's sessions.
pub async fn set_password(db: &mut Client, name: &str, password: &str) -> anyhow::Result<()> {
    let name = valid_name(name).map_err(anyhow::Error::msg)?;
    valid_password(password).map_err(anyhow::Error::msg)?;
    let hash = hash_password(password)?;
    let tx = db.transaction().await?;
    let id: Option<i64> = tx
        .query_opt(
            "UPDATE agog_hub.operators SET password_hash = $2 WHERE name = $1 RETURNING id",
            &[&name, &hash],
        )
        .await?
        .map(|r| r.get(0));
    let id = id.ok_or_else(|| anyhow::anyhow!("no operator named {name}"))?;
    tx.execute(
        "DELETE FROM agog_hub.operator_sessions WHERE operator_id = $1",
        &[&id],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// A new bearer token for an operator: (id, token). The token is returned once, never stored.
pub async fn create_token(
    db: &Client,
    name: &str,
    label: &str,
    expires_at: DateTime<Utc>,
) -> anyhow::Result<(i64, String)> {
    let name = valid_name(name).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        label.len() <= 200 && !label.chars().any(|c| c.is_control()),
        "--label: at most 200 characters, no control characters"
    );
    let token = random_secret(TOKEN_PREFIX);
    let row = db
        .query_opt(
            "INSERT INTO agog_hub.operator_tokens (operator_id, token_sha256, label, expires_at)
             SELECT id, $2, $3, $4 FROM agog_hub.operators WHERE name = $1 AND disabled_at IS NULL
             RETURNING id",
            &[&name, &token_hash(&token), &label, &expires_at],
        )
        .await?;
    let id: i64 = row
        .map(|r| r.get(0))
        .ok_or_else(|| anyhow::anyhow!("no enabled operator named {name}"))?;
    Ok((id, token))
}

pub async fn revoke_token(db: &Client, id: i64) -> anyhow::Result<()> {
    let n = db
        .execute(
            "UPDATE agog_hub.operator_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
            &[&id],
        )
        .await?;
    anyhow::ensure!(n == 1, "no unrevoked operator token with id {id}");
    Ok(())
}

/// Remove an operator with its tokens and sessions.
pub async fn remove(db: &Client, name: &str) -> anyhow::Result<()> {
    let name = valid_name(name).map_err(anyhow::Error::msg)?;
    let n = db
        .execute("DELETE FROM agog_hub.operators WHERE name = $1", &[&name])
        .await?;
    anyhow::ensure!(n == 1, "no operator named {name}");
    Ok(())
}

#[derive(Debug, Serialize)]
pub struct OperatorInfo {
    pub name: String,
    pub tenant_id: Option<String>,
    pub password: bool,
    pub created_at: DateTime<Utc>,
    pub tokens: Vec<TokenInfo>,
    pub active_sessions: i64,
}

#[derive(Debug, Serialize)]
pub struct TokenInfo {
    pub id: i64,
    pub label: String,
    pub status: &'static str,
    pub expires_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

pub async fn list(db: &Client) -> anyhow::Result<Vec<OperatorInfo>> {
    let ops = db
        .query(
            "SELECT o.id, o.name, o.tenant_id, o.password_hash IS NOT NULL, o.created_at,
                    (SELECT count(*) FROM agog_hub.operator_sessions s
                      WHERE s.operator_id = o.id AND s.expires_at > now())
               FROM agog_hub.operators o ORDER BY o.name",
            &[],
        )
        .await?;
    let tokens = db
        .query(
            "SELECT operator_id, id, label, revoked_at IS NOT NULL, expires_at <= now(), expires_at, last_used_at
               FROM agog_hub.operator_tokens ORDER BY id",
            &[],
        )
        .await?;
    Ok(ops
        .iter()
        .map(|o| {
            let id: i64 = o.get(0);
            OperatorInfo {
                name: o.get(1),
                tenant_id: o.get(2),
                password: o.get(3),
                created_at: o.get(4),
                active_sessions: o.get(5),
                tokens: tokens
                    .iter()
                    .filter(|t| t.get::<_, i64>(0) == id)
                    .map(|t| TokenInfo {
                        id: t.get(1),
                        label: t.get(2),
                        status: if t.get(3) {
                            "revoked"
                        } else if t.get(4) {
                            "expired"
                        } else {
                            "active"
                        },
                        expires_at: t.get(5),
                        last_used_at: t.get(6),
                    })
                    .collect(),
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercased_and_checked() {
        assert_eq!(valid_name(" Ops@Foo ").unwrap(), "ops@foo");
        assert!(valid_name("").is_err());
        assert!(valid_name("-x").is_err());
        assert!(valid_name("a b").is_err());
        assert!(valid_password("short").is_err());
        assert!(valid_password("twelve chars").is_ok());
    }
}
