//! The way back: a restore token for the facility, the rebuilt box's enrollment with it (the
//! normal first boot), and the restore access its role gets on the regional.

use chrono::{DateTime, Utc};
use sync_core::sql::conninfo_value;
use sync_core::FacilityId;
use tokio_postgres::{Client, GenericClient, Transaction};

use super::record::{self, Fallback, Phase};
use super::{operators, workspace, Refusal};
use crate::config::HubConfig;

/// Purposes of `agog_hub.bootstrap_tokens`.
pub const PURPOSE_ENROLL: &str = "enroll";
pub const PURPOSE_RESTORE: &str = "restore";

/// Phases in which a rebuilt edge may enroll (again: a box that died during its restore is
/// replaced by another).
fn accepts_a_box(p: Phase) -> bool {
    matches!(p, Phase::Active | Phase::Restoring)
}

fn not_in_fallback(facility: &str) -> Refusal {
    Refusal::new(
        409,
        "not_in_fallback",
        format!(
            "facility {facility} is not in cloud fallback: a restore token only brings a rebuilt edge back from a cloud workspace; to enroll a new edge use `hub token create`"
        ),
    )
}

fn past_accepting(fb: &Fallback) -> Refusal {
    Refusal::new(
        409,
        "restore_in_progress",
        format!(
            "facility {} is already being handed back to its rebuilt edge {} (phase {}); see `hub fallback status {}`",
            fb.facility_id,
            fb.restore_node.as_deref().unwrap_or("?"),
            fb.phase.as_str(),
            fb.facility_id
        ),
    )
}

#[derive(Debug, serde::Serialize)]
pub struct RestoreToken {
    pub id: i64,
    pub token: String,
    pub facility_id: String,
    pub expires_at: DateTime<Utc>,
}

/// A one-time token that enrolls the facility's rebuilt edge.
pub async fn issue_token(
    cfg: &HubConfig,
    facility: &FacilityId,
    expires_at: DateTime<Utc>,
    operator: &str,
) -> Result<RestoreToken, Refusal> {
    let db = crate::db::connect_and_migrate(&cfg.database).await?;
    operators::require(&db, operator).await?;
    let fb = record::open(&db, facility.as_str())
        .await?
        .ok_or_else(|| not_in_fallback(facility.as_str()))?;
    if fb.phase == Phase::Activating {
        return Err(Refusal::new(
            409,
            "not_in_fallback",
            format!("the cloud fallback of {facility} is not active yet (its activation did not finish: {}); run `hub fallback activate` again", fb.waiting_for.as_deref().unwrap_or("see `hub fallback status`")),
        ));
    }
    if !accepts_a_box(fb.phase) {
        return Err(past_accepting(&fb));
    }
    let token = crate::enroll::new_token();
    let id: i64 = db
        .query_one(
            "INSERT INTO agog_hub.bootstrap_tokens (token_sha256, facility_id, tenant_id, display_name, expires_at, purpose)
             VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            &[
                &crate::enroll::token_hash(&token),
                &facility.as_str(),
                &fb.tenant_id,
                &fb.display_name,
                &expires_at,
                &PURPOSE_RESTORE,
            ],
        )
        .await?
        .get(0);
    db.execute(
        "UPDATE agog_hub.fallbacks SET restore_requested_by = $2, restore_requested_at = now(), updated_at = now() WHERE id = $1",
        &[&fb.id, &operator],
    )
    .await?;
    record::log(
        &db,
        &fb,
        operator,
        "restore token issued",
        &format!(
            "token {id}, valid until {}",
            expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
    )
    .await?;
    Ok(RestoreToken {
        id,
        token,
        facility_id: facility.to_string(),
        expires_at,
    })
}

/// Checked during an enrollment, in its transaction, once the token is known to be valid and
/// for this facility: a restore token needs the facility in fallback; a bootstrap token must
/// not enroll a facility in fallback. Returns the fallback a restore token restores.
pub async fn check_enrollment(
    tx: &Transaction<'_>,
    purpose: &str,
    token_id: i64,
    facility: &str,
) -> Result<Option<Fallback>, Refusal> {
    let fb = record::open_for_update(tx, facility).await?;
    match (purpose, fb) {
        (PURPOSE_RESTORE, None) => Err(Refusal::new(
            409,
            "not_in_fallback",
            format!(
                "restore token {token_id} is for facility {facility}, which is not in cloud fallback any more; enroll with a bootstrap token (`hub token create`)"
            ),
        )),
        (PURPOSE_RESTORE, Some(fb)) if !accepts_a_box(fb.phase) => Err(past_accepting(&fb)),
        (PURPOSE_RESTORE, Some(fb)) => Ok(Some(fb)),
        (_, Some(fb)) => Err(Refusal::new(
            409,
            "facility_in_fallback",
            format!(
                "facility {facility} is in cloud fallback (since {}): enroll its rebuilt edge with a restore token (`hub fallback restore-token {facility}`), which brings the workspace's rows down to it",
                super::notice::when(fb.activated_at)
            ),
        )),
        (_, None) => Ok(None),
    }
}

/// The enrollment of the rebuilt box is recorded: the fallback restores onto it now.
pub async fn mark_restoring(
    tx: &Transaction<'_>,
    fb: &Fallback,
    node: &str,
    enrolled_by: &str,
) -> Result<(), tokio_postgres::Error> {
    tx.execute(
        "UPDATE agog_hub.fallbacks
            SET phase = 'restoring', restore_node = $2, restoring_since = now(), waiting_for = NULL, updated_at = now()
          WHERE id = $1",
        &[&fb.id, &node],
    )
    .await?;
    record::log(
        tx,
        fb,
        enrolled_by,
        "restoring",
        &format!("rebuilt edge {node} enrolled with a restore token"),
    )
    .await
}

/// How the rebuilt edge reaches the regional for its restore: in the shared layout its
/// master-data conninfo (same database, same role); otherwise the regional's address
/// (`[fallback] regional_replication`) with the same role and password, created there.
pub fn restore_conninfo(
    cfg: &HubConfig,
    master_conninfo: &str,
    role: &str,
    password: &str,
) -> String {
    if !cfg.separate_master() {
        return master_conninfo.to_owned();
    }
    let base = match &cfg.fallback.regional_replication {
        Some(r) => r.clone(),
        None => match super::config::address_of(&cfg.database) {
            Some((host, port, db)) => format!(
                "host={} port={port} dbname={}",
                conninfo_value(&host),
                conninfo_value(&db)
            ),
            None => String::new(),
        },
    };
    format!(
        "{base} user={} password={}",
        conninfo_value(role),
        conninfo_value(password)
    )
}

/// Give the rebuilt edge's role read access to its facility's rows on the regional (creating
/// the role there first when master data lives elsewhere). Before the enrollment answers, so
/// the agent's first subscription attempt succeeds.
pub async fn grant_access(
    cfg: &HubConfig,
    regional: &mut Client,
    facility: &FacilityId,
    role: &str,
    password: &str,
) -> Result<(), tokio_postgres::Error> {
    if cfg.separate_master() {
        let exists = regional
            .query_opt("SELECT 1 FROM pg_roles WHERE rolname = $1", &[&role])
            .await?
            .is_some();
        let verb = if exists { "ALTER" } else { "CREATE" };
        regional
            .batch_execute(&format!(
                "{verb} ROLE {} LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT PASSWORD {}",
                sync_core::sql::ident(role),
                sync_core::sql::literal(password)
            ))
            .await?;
    }
    workspace::grant_restore(regional, facility, role).await
}

/// The facility's open fallback as the enrollment path reads it (`None`: normal).
pub async fn open(
    db: &impl GenericClient,
    facility: &str,
) -> Result<Option<Fallback>, tokio_postgres::Error> {
    record::open(db, facility).await
}
