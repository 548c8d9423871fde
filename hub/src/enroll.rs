//! Enrollment: one-time bootstrap tokens (only their SHA-256 is stored), the check of an
//! enrollment request in one transaction, the edge's role on the master-data publisher, and
//! decommissioning.

use std::net::IpAddr;

use base64::Engine;
use chrono::{DateTime, Duration as ChronoDuration, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sync_core::api::{EnrollRequest, EnrollResponse, TOKEN_PREFIX};
use sync_core::sql::{conninfo_value, ident, literal};
use sync_core::{FacilityId, NodeName, TenantId};
use tokio_postgres::Client;

use crate::config::HubConfig;

/// A fresh token: the prefix and 32 random bytes, URL-safe base64.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// A random password: 32 bytes, URL-safe base64 (no quoting surprises anywhere).
pub fn new_password() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Lowercase hex SHA-256 of the whole token, as stored.
pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `--expires`: `90s`, `30m`, `24h`, `7d`, or an RFC 3339 / ISO 8601 time (`2026-12-01T12:00:00Z`,
/// or a date `2026-12-01`, meaning midnight UTC). Must be in the future.
pub fn parse_expiry(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    let relative = s
        .strip_suffix('s')
        .map(|n| (n, 1))
        .or_else(|| s.strip_suffix('m').map(|n| (n, 60)))
        .or_else(|| s.strip_suffix('h').map(|n| (n, 3600)))
        .or_else(|| s.strip_suffix('d').map(|n| (n, 86400)));
    let at = if let Some((n, unit)) = relative.filter(|(n, _)| n.parse::<i64>().is_ok()) {
        let n: i64 = n.parse().expect("checked");
        if n <= 0 || n > 366 * 86400 / unit {
            return Err(format!("--expires {s:?}: between 1 second and a year"));
        }
        now + ChronoDuration::seconds(n * unit)
    } else if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        t.with_timezone(&Utc)
    } else if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0).expect("midnight").and_utc()
    } else {
        return Err(format!(
            "--expires {s:?}: use a duration (90s, 30m, 24h, 7d) or a time (2026-12-01T12:00:00Z)"
        ));
    };
    if at <= now {
        return Err(format!("--expires {s:?} is in the past"));
    }
    Ok(at)
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenInfo {
    pub id: i64,
    pub facility_id: String,
    pub tenant_id: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// `active`, `used`, `expired` or `revoked`.
    pub status: String,
    pub used_at: Option<DateTime<Utc>>,
    pub used_by: Option<String>,
}

/// Store a new token's hash; returns its id and the token (shown once, never stored).
pub async fn create_token(
    db: &impl tokio_postgres::GenericClient,
    facility: &FacilityId,
    tenant: &TenantId,
    name: &str,
    expires_at: DateTime<Utc>,
) -> Result<(i64, String), tokio_postgres::Error> {
    let token = new_token();
    let id: i64 = db
        .query_one(
            "INSERT INTO agog_hub.bootstrap_tokens (token_sha256, facility_id, tenant_id, display_name, expires_at)
             VALUES ($1, $2, $3, $4, $5) RETURNING id",
            &[&token_hash(&token), &facility.as_str(), &tenant.as_str(), &name, &expires_at],
        )
        .await?
        .get(0);
    Ok((id, token))
}

pub async fn list_tokens(db: &Client) -> Result<Vec<TokenInfo>, tokio_postgres::Error> {
    let rows = db
        .query(
            "SELECT id, facility_id, tenant_id, display_name, created_at, expires_at, used_at, used_by,
                    CASE WHEN revoked_at IS NOT NULL THEN 'revoked'
                         WHEN used_at IS NOT NULL THEN 'used'
                         WHEN expires_at <= now() THEN 'expired'
                         ELSE 'active' END
               FROM agog_hub.bootstrap_tokens ORDER BY id",
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| TokenInfo {
            id: r.get(0),
            facility_id: r.get(1),
            tenant_id: r.get(2),
            name: r.get(3),
            created_at: r.get(4),
            expires_at: r.get(5),
            used_at: r.get(6),
            used_by: r.get(7),
            status: r.get(8),
        })
        .collect())
}

/// Revoke an unused token. A used token cannot be revoked: decommission the edge instead.
pub async fn revoke_token(db: &Client, id: i64) -> anyhow::Result<()> {
    let row = db
        .query_opt(
            "SELECT used_at IS NOT NULL, revoked_at IS NOT NULL FROM agog_hub.bootstrap_tokens WHERE id = $1",
            &[&id],
        )
        .await?;
    let Some(row) = row else {
        anyhow::bail!("no token with id {id} (see `hub token list`)");
    };
    if row.get::<_, bool>(1) {
        anyhow::bail!("token {id} is already revoked");
    }
    if row.get::<_, bool>(0) {
        anyhow::bail!(
            "token {id} was already used to enroll an edge; use `hub edges decommission <facility>` to remove the edge"
        );
    }
    db.execute(
        "UPDATE agog_hub.bootstrap_tokens SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL",
        &[&id],
    )
    .await?;
    Ok(())
}

/// Why an enrollment was refused: the HTTP status, a stable code and a sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: u16,
    pub error: &'static str,
    pub message: String,
}

impl Refusal {
    fn new(status: u16, error: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            status,
            error,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Refusal {
        Refusal::new(400, "invalid_request", message)
    }

    fn unavailable(message: impl Into<String>) -> Refusal {
        Refusal::new(503, "unavailable", message)
    }
}

fn db_unavailable(what: &str) -> impl Fn(tokio_postgres::Error) -> Refusal + '_ {
    move |e| {
        tracing::warn!(error = %sync_core::apply::describe(&e), "enrollment: {what}");
        Refusal::unavailable(format!("the hub cannot {what} right now; retry later"))
    }
}

/// The role an edge logs in with on the master-data publisher.
pub fn master_role(facility: &FacilityId) -> String {
    format!("agog_edge_{}", facility.ident_part())
}

/// Tables of the `master` group, which is all an edge's master role may read.
pub fn master_tables() -> Vec<String> {
    sync_core::spec::default_groups()
        .into_iter()
        .find(|g| g.name == sync_core::desired::MASTER_GROUP)
        .map(|g| g.tables)
        .unwrap_or_default()
}

fn sql_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A request whose every field was checked.
struct Valid {
    facility: FacilityId,
    node: NodeName,
    wireguard_public_key: String,
    ipsec_public_key: Option<String>,
    replication_conninfo: String,
    health_url: String,
    agent_version: String,
}

/// How the regional subscribes to the edge at `host`.
fn replication_conninfo(host: &str, req: &EnrollRequest) -> String {
    format!(
        "host={} port={} dbname={} user={} password={} connect_timeout=5",
        conninfo_value(host),
        req.replication_port,
        conninfo_value(&req.replication_dbname),
        conninfo_value(&req.replication_user),
        conninfo_value(&req.replication_password)
    )
}

fn validate(cfg: &HubConfig, req: &EnrollRequest) -> Result<Valid, Refusal> {
    if !req.token.starts_with(TOKEN_PREFIX)
        || req.token.len() > 128
        || !req.token.chars().all(|c| c.is_ascii_graphic())
    {
        return Err(Refusal::new(
            401,
            "token_unknown",
            format!("that is not a bootstrap token (they start with {TOKEN_PREFIX}; create one with `hub token create`)"),
        ));
    }
    let facility =
        FacilityId::parse(&req.facility_id).map_err(|e| Refusal::invalid(e.to_string()))?;
    let node = match &req.node {
        Some(n) => NodeName::parse(n),
        None => NodeName::parse(facility.as_str()),
    }
    .map_err(|e| {
        Refusal::invalid(format!(
            "{e}{}",
            if req.node.is_none() {
                " (the facility id does not make a node name: send `node`)"
            } else {
                ""
            }
        ))
    })?;
    if node == cfg.node_name() || node == cfg.master_node() {
        return Err(Refusal::invalid(format!(
            "node name {node} is taken by the region's own database"
        )));
    }
    let key = base64::engine::general_purpose::STANDARD
        .decode(req.wireguard_public_key.trim())
        .map_err(|_| Refusal::invalid("wireguard_public_key is not base64"))?;
    if key.len() != 32 {
        return Err(Refusal::invalid(format!(
            "wireguard_public_key must be 32 bytes, got {}",
            key.len()
        )));
    }
    let pw = &req.replication_password;
    if pw.len() < 16 || pw.len() > 128 || !pw.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Refusal::invalid(
            "replication_password must be 16 to 128 printable ASCII characters without spaces",
        ));
    }
    for (what, v) in [
        ("replication_user", &req.replication_user),
        ("replication_dbname", &req.replication_dbname),
    ] {
        if !sql_name(v) {
            return Err(Refusal::invalid(format!(
                "{what} {v:?}: lowercase letters, digits and _, starting with a letter"
            )));
        }
    }
    let host = &req.replication_host;
    if host.is_empty()
        || host.len() > 253
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
    {
        return Err(Refusal::invalid(format!(
            "replication_host {:?}: a host name or an IP address",
            host.chars().take(80).collect::<String>()
        )));
    }
    if req.replication_port == 0 {
        return Err(Refusal::invalid("replication_port must not be 0"));
    }
    let url = reqwest::Url::parse(&req.health_url)
        .map_err(|e| Refusal::invalid(format!("health_url: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(Refusal::invalid(
            "health_url must be an http(s) URL with a host",
        ));
    }
    let v = &req.agent_version;
    if v.is_empty() || v.len() > 64 || !v.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Refusal::invalid(
            "agent_version must be 1 to 64 printable characters",
        ));
    }
    let replication_conninfo = replication_conninfo(host, req);
    if let Some(k) = &req.ipsec_public_key {
        if !sync_core::ipsec::is_public_key_pem(k) {
            return Err(Refusal::invalid(
                "ipsec_public_key must be one PEM PUBLIC KEY",
            ));
        }
    }
    Ok(Valid {
        ipsec_public_key: req
            .ipsec_public_key
            .as_ref()
            .map(|k| k.trim().to_string() + "\n"),
        facility,
        node,
        wireguard_public_key: base64::engine::general_purpose::STANDARD.encode(&key),
        replication_conninfo,
        health_url: url.to_string(),
        agent_version: v.clone(),
    })
}

/// Create or update the edge's LOGIN REPLICATION role on the master-data publisher: SELECT on
/// the master tables, nothing else.
pub async fn ensure_master_role(
    master: &Client,
    role: &str,
    password: &str,
) -> Result<(), tokio_postgres::Error> {
    let exists = master
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .await?
        .is_some();
    let verb = if exists { "ALTER" } else { "CREATE" };
    let tables: Vec<String> = master_tables()
        .iter()
        .map(|t| format!("public.{}", ident(t)))
        .collect();
    master
        .batch_execute(&format!(
            "{verb} ROLE {r} LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD {p};
             GRANT USAGE ON SCHEMA public TO {r};
             GRANT SELECT ON {tables} TO {r};",
            r = ident(role),
            p = literal(password),
            tables = tables.join(", ")
        ))
        .await
}

/// Drop the edge's role on the master-data publisher (ending its sessions first), if it exists.
pub async fn drop_master_role(master: &Client, role: &str) -> Result<bool, tokio_postgres::Error> {
    let exists = master
        .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
        .await?
        .is_some();
    if !exists {
        return Ok(false);
    }
    master
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
            &[&role],
        )
        .await?;
    master
        .batch_execute(&format!(
            "DROP OWNED BY {r}; DROP ROLE {r};",
            r = ident(role)
        ))
        .await?;
    Ok(true)
}

/// Check and record one enrollment. The token is checked and marked used in one transaction
/// on the regional database; any refusal leaves everything as it was.
pub async fn enroll(
    cfg: &HubConfig,
    req: &EnrollRequest,
    peer: Option<IpAddr>,
) -> Result<EnrollResponse, Refusal> {
    let mut v = validate(cfg, req)?;
    let regional_address = cfg
        .regional_address
        .clone()
        .ok_or_else(|| Refusal::unavailable("the hub has no regional_address configured"))?;
    let mut db = sync_core::connect(&cfg.database)
        .await
        .map_err(db_unavailable("reach its database"))?;
    let tx = db
        .transaction()
        .await
        .map_err(db_unavailable("start a transaction"))?;
    let row = tx
        .query_opt(
            "SELECT id, facility_id, tenant_id, expires_at <= now(), used_at, used_by, revoked_at IS NOT NULL, purpose
               FROM agog_hub.bootstrap_tokens WHERE token_sha256 = $1 FOR UPDATE",
            &[&token_hash(&req.token)],
        )
        .await
        .map_err(db_unavailable("read its tokens"))?;
    let Some(row) = row else {
        return Err(Refusal::new(
            401,
            "token_unknown",
            "this bootstrap token is not known to this hub (mistyped, or created on another region's hub)",
        ));
    };
    let token_id: i64 = row.get(0);
    let token_facility: String = row.get(1);
    let tenant: String = row.get(2);
    if row.get::<_, bool>(6) {
        return Err(Refusal::new(
            403,
            "token_revoked",
            format!(
                "bootstrap token {token_id} was revoked; create a new one with `hub token create`"
            ),
        ));
    }
    if let Some(at) = row.get::<_, Option<DateTime<Utc>>>(4) {
        return Err(Refusal::new(
            409,
            "token_used",
            format!(
                "bootstrap token {token_id} was already used at {} by {}; a token enrolls one edge once",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                row.get::<_, Option<String>>(5).unwrap_or_default()
            ),
        ));
    }
    if row.get::<_, bool>(3) {
        return Err(Refusal::new(
            410,
            "token_expired",
            format!(
                "bootstrap token {token_id} has expired; create a new one with `hub token create`"
            ),
        ));
    }
    let purpose: String = row.get(7);
    if token_facility != v.facility.as_str() {
        return Err(Refusal::new(
            403,
            "facility_mismatch",
            if purpose == crate::fallback::restore::PURPOSE_RESTORE {
                format!(
                    "restore token {token_id} restores {token_facility}, not {}: a restore token only enrolls the rebuilt edge of the facility it was made for (is the box configured with the wrong facility?)",
                    v.facility
                )
            } else {
                format!(
                    "bootstrap token {token_id} is for another facility, not {}",
                    v.facility
                )
            },
        ));
    }
    // Cloud fallback: a restore token needs the facility in fallback, a bootstrap token
    // must not enroll one that is.
    let restoring =
        crate::fallback::restore::check_enrollment(&tx, &purpose, token_id, v.facility.as_str())
            .await
            .map_err(|r| Refusal::new(r.status, r.error, r.message))?;
    let tenant = TenantId::parse(&tenant)
        .map_err(|e| Refusal::unavailable(format!("the token's tenant is invalid: {e}")))?;
    let taken = tx
        .query_opt(
            "SELECT facility_id FROM agog_hub.edges WHERE node = $1 AND facility_id <> $2",
            &[&v.node.as_str(), &v.facility.as_str()],
        )
        .await
        .map_err(db_unavailable("read its edges"))?;
    if let Some(r) = taken {
        return Err(Refusal::new(
            409,
            "node_taken",
            format!(
                "node name {} is already used by facility {}",
                v.node,
                r.get::<_, String>(0)
            ),
        ));
    }

    // The edge's own role on the master-data publisher. Created before the commit: if the
    // commit fails the token stays unused and a retry sets the role's password again.
    let role = master_role(&v.facility);
    let role_password = new_password();
    let master = sync_core::connect(cfg.master_admin())
        .await
        .map_err(db_unavailable("reach the master-data publisher"))?;
    ensure_master_role(&master, &role, &role_password)
        .await
        .map_err(db_unavailable(
            "create the edge's role on the master-data publisher (is its schema installed yet?)",
        ))?;
    if restoring.is_some() {
        // The rebuilt edge reads its facility's rows on the regional with the same role.
        let mut regional = sync_core::connect(&cfg.database)
            .await
            .map_err(db_unavailable("reach its database"))?;
        crate::fallback::restore::grant_access(
            cfg,
            &mut regional,
            &v.facility,
            &role,
            &role_password,
        )
        .await
        .map_err(db_unavailable(
            "give the rebuilt edge read access to its facility's rows",
        ))?;
    }

    // With a tunnel, the edge's address in it; the hub reaches the edge there (its /health,
    // its PostgreSQL), whatever host the edge advertised.
    let tunnel = match &cfg.tunnel {
        Some(t) => {
            let a = crate::tunnel::assign_address(&tx, t, v.facility.as_str())
                .await
                .map_err(db_unavailable("assign a tunnel address"))?
                .ok_or_else(|| {
                    Refusal::new(
                        503,
                        "tunnel_range_full",
                        format!(
                            "every address of tunnel.range {} is taken: widen the range or decommission edges",
                            t.range
                        ),
                    )
                })?;
            let settings = t
                .settings_for(a)
                .map_err(|e| Refusal::unavailable(format!("the hub's WireGuard key: {e:#}")))?;
            let mut url = reqwest::Url::parse(&v.health_url)
                .map_err(|e| Refusal::invalid(format!("health_url: {e}")))?;
            url.set_host(Some(&a.to_string()))
                .map_err(|e| Refusal::invalid(format!("health_url: {e}")))?;
            v.health_url = url.to_string();
            v.replication_conninfo = replication_conninfo(&a.to_string(), req);
            Some((a, settings))
        }
        None => None,
    };
    let tunnel_address = tunnel.as_ref().map(|(a, _)| a.to_string());

    let name = tx
        .query_one(
            "SELECT display_name FROM agog_hub.bootstrap_tokens WHERE id = $1",
            &[&token_id],
        )
        .await
        .map_err(db_unavailable("read its tokens"))?
        .get::<_, String>(0);
    crate::monitor::upsert_edge(
        &tx,
        v.facility.as_str(),
        v.node.as_str(),
        tenant.as_str(),
        cfg.region.as_str(),
        &name,
        &v.health_url,
    )
    .await
    .map_err(db_unavailable("record the edge"))?;
    let peer = peer.map(|p| p.to_string());
    tx.execute(
        "UPDATE agog_hub.edges
            SET replication_conninfo = $2, wireguard_public_key = $3, agent_version = $4,
                enrolled_address = $5, master_role = $6, token_id = $7, enrolled_at = now(),
                tunnel_address = $8::text::inet, ipsec_public_key = $9
          WHERE facility_id = $1",
        &[
            &v.facility.as_str(),
            &v.replication_conninfo,
            &v.wireguard_public_key,
            &v.agent_version,
            &peer,
            &role,
            &token_id,
            &tunnel_address,
            &v.ipsec_public_key,
        ],
    )
    .await
    .map_err(db_unavailable("record the edge"))?;
    let used_by = format!(
        "node {} from {}",
        v.node,
        peer.as_deref().unwrap_or("unknown address")
    );
    tx.execute(
        "UPDATE agog_hub.bootstrap_tokens SET used_at = now(), used_by = $2 WHERE id = $1",
        &[&token_id, &used_by],
    )
    .await
    .map_err(db_unavailable("mark the token used"))?;
    tx.execute(
        "INSERT INTO agog_hub.enrollments (facility_id, node, token_id, enrolled_address, agent_version)
         VALUES ($1, $2, $3, $4, $5)",
        &[&v.facility.as_str(), &v.node.as_str(), &token_id, &peer, &v.agent_version],
    )
    .await
    .map_err(db_unavailable("record the enrollment"))?;
    if let Some(fb) = &restoring {
        crate::fallback::restore::mark_restoring(&tx, fb, v.node.as_str(), &used_by)
            .await
            .map_err(db_unavailable("record the restore"))?;
    }
    tx.commit()
        .await
        .map_err(db_unavailable("commit the enrollment"))?;
    tracing::info!(facility = %v.facility, node = %v.node, token_id, peer = ?peer, restore = restoring.is_some(), tunnel_address = ?tunnel_address, "edge enrolled");
    let master_conninfo = format!(
        "{} user={} password={}",
        cfg.master_replication(),
        conninfo_value(&role),
        conninfo_value(&role_password)
    );
    Ok(EnrollResponse {
        facility_id: v.facility,
        tenant_id: tenant,
        region: cfg.region.clone(),
        node: v.node,
        regional_node: cfg.node_name(),
        master_node: cfg.master_node(),
        restore_conninfo: restoring.as_ref().map(|_| {
            crate::fallback::restore::restore_conninfo(cfg, &master_conninfo, &role, &role_password)
        }),
        master_conninfo,
        regional_address,
        tunnel: tunnel.map(|(_, s)| s),
        hub_time: Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
}

/// Remove an edge: its role on the master-data publisher first (so a failure leaves the row to
/// retry with), then its row. The hub's next reconcile drops the regional's subscription and
/// the edge's slot on the master.
pub async fn decommission(
    cfg: &HubConfig,
    db: &mut Client,
    facility: &FacilityId,
) -> anyhow::Result<()> {
    let row = db
        .query_opt(
            "SELECT node, master_role FROM agog_hub.edges WHERE facility_id = $1",
            &[&facility.as_str()],
        )
        .await?;
    let Some(row) = row else {
        anyhow::bail!("no edge for facility {facility} (see `hub edges`)");
    };
    if let Some(fb) = crate::fallback::record::open(&*db, facility.as_str()).await? {
        anyhow::bail!(
            "facility {facility} is in cloud fallback (phase {}): its workspace and its restore need the edge's record; restore it onto a rebuilt edge first (`hub fallback status {facility}`)",
            fb.phase.as_str()
        );
    }
    let node: String = row.get(0);
    if let Some(role) = row.get::<_, Option<String>>(1) {
        let master = sync_core::connect(cfg.master_admin()).await.map_err(|e| {
            anyhow::anyhow!(
                "connect to the master-data publisher: {}",
                sync_core::apply::describe(&e)
            )
        })?;
        drop_master_role(&master, &role).await.map_err(|e| {
            anyhow::anyhow!(
                "drop role {role} on the master-data publisher: {}",
                sync_core::apply::describe(&e)
            )
        })?;
        if cfg.separate_master() {
            // A restored edge also has the role on the regional (its restore access).
            drop_master_role(db, &role).await.map_err(|e| {
                anyhow::anyhow!(
                    "drop role {role} on the regional: {}",
                    sync_core::apply::describe(&e)
                )
            })?;
        }
    }
    let tx = db.transaction().await?;
    tx.execute(
        "UPDATE agog_hub.enrollments SET decommissioned_at = now()
          WHERE facility_id = $1 AND decommissioned_at IS NULL",
        &[&facility.as_str()],
    )
    .await?;
    tx.execute(
        "DELETE FROM agog_hub.edges WHERE facility_id = $1",
        &[&facility.as_str()],
    )
    .await?;
    // Its tunnel address is free again.
    tx.execute(
        "UPDATE agog_hub.provisioning_requests SET tunnel_address = NULL WHERE facility_id = $1",
        &[&facility.as_str()],
    )
    .await?;
    tx.commit().await?;
    tracing::info!(facility = %facility, node, "edge decommissioned");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_hashed() {
        let a = new_token();
        let b = new_token();
        assert!(a.starts_with("agog_bt_"));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
        assert_ne!(a, b);
        let h = token_hash(&a);
        assert_eq!(h.len(), 64);
        assert!(!h.contains(&a[TOKEN_PREFIX.len()..]));
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn expiry_forms() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            parse_expiry("24h", now).unwrap().to_rfc3339(),
            "2026-01-02T00:00:00+00:00"
        );
        assert_eq!(
            parse_expiry("7d", now).unwrap().to_rfc3339(),
            "2026-01-08T00:00:00+00:00"
        );
        assert_eq!(
            parse_expiry("2026-03-01T12:00:00Z", now)
                .unwrap()
                .to_rfc3339(),
            "2026-03-01T12:00:00+00:00"
        );
        assert!(parse_expiry("2026-02-01", now).is_ok());
        assert!(parse_expiry("2025-01-01T00:00:00Z", now)
            .unwrap_err()
            .contains("in the past"));
        assert!(parse_expiry("soon", now).unwrap_err().contains("duration"));
        assert!(parse_expiry("0h", now).is_err());
    }
}
