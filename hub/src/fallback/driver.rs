//! The driver: moves every open fallback through its phases. It runs under the regional lock
//! (`hub serve`'s reconcile pass, or a CLI/API request that took the lock), so one process at a
//! time drives; every phase's work is idempotent, so a pass cut off anywhere (a hub restart,
//! an edge rebooting halfway) is finished by the next one.

use anyhow::Context;
use sync_core::spec::subscription_name;
use sync_core::sql::ident;
use sync_core::{FacilityId, NodeName};
use tokio_postgres::Client;

use super::record::{self, Fallback, Phase};
use super::{checksum, notice, workspace, Refusal};
use crate::config::HubConfig;
use crate::notify::Delivery;
use crate::regional::{reconcile_locked, REGIONAL_LOCK_KEY};

/// The regional lock, held by a CLI or API request while it drives a fallback itself.
pub struct RegionalLock {
    _client: Client,
}

impl RegionalLock {
    /// Wait (up to a minute) for `hub serve`'s pass to finish, then hold the lock until dropped.
    pub async fn take(cfg: &HubConfig) -> Result<RegionalLock, Refusal> {
        let client = sync_core::connect(&cfg.database).await.map_err(|e| {
            Refusal::internal(format!(
                "connect to the regional database: {}",
                sync_core::apply::describe(&e)
            ))
        })?;
        client.batch_execute("SET lock_timeout = '60s'").await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&REGIONAL_LOCK_KEY])
            .await
            .map_err(|e| {
                Refusal::new(
                    503,
                    "busy",
                    format!(
                        "another hub process drives the regional side and did not let go within a minute ({}); the request is recorded and `hub serve` carries it on",
                        sync_core::apply::describe(&e)
                    ),
                )
            })?;
        Ok(RegionalLock { _client: client })
    }
}

/// Who the hub's own steps are logged as.
pub fn hub_actor(cfg: &HubConfig) -> String {
    format!("hub {}", cfg.replica_id())
}

/// One pass over every open fallback, by the holder of the regional lock. Returns what waits
/// (so the caller comes back soon), one line per fallback in progress.
pub async fn drive(cfg: &HubConfig, _lock: &Client) -> Vec<String> {
    let mut db = match sync_core::connect(&cfg.database).await {
        Ok(c) => c,
        Err(e) => {
            return vec![format!(
                "cloud fallback: cannot connect to the regional database: {}",
                sync_core::apply::describe(&e)
            )]
        }
    };
    let open = match record::all_open(&db).await {
        Ok(o) => o,
        // Before the hub schema has its fallback tables (a replica older than the schema).
        Err(e) => {
            return vec![format!(
                "cloud fallback: {}",
                sync_core::apply::describe(&e)
            )]
        }
    };
    let actor = hub_actor(cfg);
    let mut waiting = Vec::new();
    for mut fb in open {
        if let Err(e) = advance(cfg, &mut db, &mut fb, &actor, None).await {
            let msg = format!("{e:#}");
            tracing::warn!(facility = %fb.facility_id, phase = fb.phase.as_str(), error = %msg, "cloud fallback step failed");
            let _ = record::set_waiting(&db, &mut fb, Some(&msg)).await;
        }
        if fb.phase != Phase::Active && fb.phase != Phase::Restored {
            waiting.push(format!(
                "{}: cloud fallback {}: {}",
                fb.facility_id,
                fb.phase.as_str(),
                fb.waiting_for.as_deref().unwrap_or("in progress")
            ));
        }
    }
    waiting
}

/// Do what the fallback's phase needs, and move on while steps complete. `password` is the
/// workspace password an activation request chose (shown to its operator).
pub async fn advance(
    cfg: &HubConfig,
    db: &mut Client,
    fb: &mut Fallback,
    actor: &str,
    password: Option<&str>,
) -> anyhow::Result<()> {
    let facility = FacilityId::parse(&fb.facility_id)?;
    loop {
        let done = match fb.phase {
            Phase::Activating => activating(cfg, db, fb, &facility, actor, password).await?,
            Phase::Restoring => restoring(cfg, db, fb, &facility, actor).await?,
            Phase::ReadOnly => read_only(cfg, db, fb, &facility, actor).await?,
            Phase::HandingOver => handing_over(cfg, db, fb, actor).await?,
            Phase::Closing => closing(cfg, db, fb, &facility, actor).await?,
            Phase::Active | Phase::Restored => None,
        };
        notify_workers(cfg, db, fb, actor).await?;
        match done {
            Some((next, detail)) => {
                record::set_phase(&*db, fb, next, actor, &detail).await?;
                if next == Phase::Restored {
                    // Normal flows again: the emptied restore publication and its slot go.
                    reconcile_locked(cfg, db).await?;
                    return Ok(());
                }
            }
            None => return Ok(()),
        }
    }
}

type Step = Option<(Phase, String)>;

async fn wait(db: &Client, fb: &mut Fallback, what: String) -> anyhow::Result<Step> {
    record::set_waiting(db, fb, Some(&what)).await?;
    Ok(None)
}

fn node(name: &str) -> anyhow::Result<NodeName> {
    NodeName::parse(name).with_context(|| format!("node name {name:?} in the fallback row"))
}

async fn subscription_exists(db: &Client, name: &str) -> anyhow::Result<bool> {
    Ok(db
        .query_opt(
            "SELECT 1 FROM pg_subscription WHERE subname = $1 AND subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[&name],
        )
        .await?
        .is_some())
}

/// The slot of the edge's restore subscription on the regional (a transient flow's `_tmp`).
fn restore_slot(edge: &NodeName, regional: &NodeName) -> String {
    format!("{}_tmp_slot", subscription_name(regional, edge))
}

async fn set_mode(cfg: &HubConfig, db: &Client, fb: &Fallback, mode: &str) -> anyhow::Result<()> {
    db.execute(
        "INSERT INTO public.facility_status (region, facility_id, tenant_id, online, mode, updated_at)
         VALUES ($1, $2, $3, false, $4, now())
         ON CONFLICT (region, facility_id) DO UPDATE SET mode = EXCLUDED.mode, updated_at = now()
          WHERE facility_status.mode IS DISTINCT FROM EXCLUDED.mode",
        &[&cfg.region.as_str(), &fb.facility_id, &fb.tenant_id, &mode],
    )
    .await
    .map_err(|e| anyhow::anyhow!("set facility_status.mode: {}", sync_core::apply::describe(&e)))?;
    Ok(())
}

/// The regional stops waiting for the dead edge, takes ownership, opens the workspace.
async fn activating(
    cfg: &HubConfig,
    db: &mut Client,
    fb: &mut Fallback,
    facility: &FacilityId,
    actor: &str,
    password: Option<&str>,
) -> anyhow::Result<Step> {
    // 1. Without the facility's flows, the reconcile disables the regional's subscription to the
    //    dead edge, detaches it from its slot there (which cannot be dropped: the edge is gone)
    //    and drops it; the master node drops the dead edge's master-data slot.
    let sub = subscription_name(&node(&fb.old_node)?, &cfg.node_name());
    let subscribed = subscription_exists(db, &sub).await?;
    let (_, blocked) = reconcile_locked(cfg, db).await?;
    if subscription_exists(db, &sub).await? {
        return wait(
            db,
            fb,
            format!(
                "the regional still subscribes to the dead edge ({sub}): {}",
                blocked.join("; ")
            ),
        )
        .await;
    }
    if subscribed {
        record::log(
            &*db,
            fb,
            actor,
            "regional subscription removed",
            &format!("{sub}: disabled, detached from its slot on the dead edge (which cannot be dropped there), dropped"),
        )
        .await?;
    }
    // 2. The dead box's credentials for master data are revoked (its disk may be anywhere).
    let role = crate::enroll::master_role(facility);
    let master = sync_core::connect(cfg.master_admin()).await.map_err(|e| {
        anyhow::anyhow!(
            "connect to the master-data publisher: {}",
            sync_core::apply::describe(&e)
        )
    })?;
    if crate::enroll::drop_master_role(&master, &role).await? {
        record::log(
            &*db,
            fb,
            actor,
            "dead edge's master-data role dropped",
            &role,
        )
        .await?;
    }
    // 3. The regional owns the facility's operational rows for the duration.
    let n = db
        .execute(
            "INSERT INTO agog_sync.ownership_overrides (facility_id, reason) VALUES ($1, $2)
             ON CONFLICT (facility_id) DO NOTHING",
            &[
                &fb.facility_id,
                &format!("cloud fallback #{}: {}", fb.id, fb.reason),
            ],
        )
        .await?;
    if n > 0 {
        record::log(
            &*db,
            fb,
            actor,
            "ownership moved to the regional",
            "agog_sync.ownership_overrides",
        )
        .await?;
    }
    // 4. The workspace: its role, grants and row-level security.
    let existed = workspace::exists(&*db, facility).await?;
    workspace::open(db, facility, &fb.tenant_id, password).await?;
    if !existed {
        record::log(
            &*db,
            fb,
            actor,
            "workspace opened",
            &format!(
                "role {} at {}",
                fb.workspace_role,
                notice::workspace_address(cfg, fb)
            ),
        )
        .await?;
    }
    // 5. Everyone sees the mode (facility_status is replicated to the other regions).
    set_mode(cfg, db, fb, "cloud_fallback").await?;
    let current = fb
        .last_data_at
        .map(notice::when)
        .unwrap_or_else(|| "-".into());
    Ok(Some((
        Phase::Active,
        format!("health alerts silenced; all data is current as of {current}"),
    )))
}

/// The rebuilt edge's conninfo (its replication role, as the regional subscribes with).
async fn edge_client(db: &Client, facility: &str) -> anyhow::Result<Result<Client, String>> {
    let conninfo: Option<String> = db
        .query_opt(
            "SELECT replication_conninfo FROM agog_hub.edges WHERE facility_id = $1",
            &[&facility],
        )
        .await?
        .and_then(|r| r.get(0));
    let Some(conninfo) = conninfo else {
        return Ok(Err("the rebuilt edge is not recorded".into()));
    };
    Ok(sync_core::connect(&conninfo)
        .await
        .map_err(|e| sync_core::apply::describe(&e)))
}

/// Rows of the facility that differ between the regional and the rebuilt edge (empty: none).
async fn differences(db: &Client, facility: &str) -> anyhow::Result<Vec<String>> {
    let edge = match edge_client(db, facility).await? {
        Ok(c) => c,
        Err(e) => return Ok(vec![format!("cannot reach the rebuilt edge: {e}")]),
    };
    let here = checksum::facility(db, facility).await?;
    let there = match checksum::facility(&edge, facility).await {
        Ok(t) => t,
        Err(e) => {
            return Ok(vec![format!(
                "cannot read the rebuilt edge: {}",
                sync_core::apply::describe(&e)
            )])
        }
    };
    Ok(checksum::differences(&here, &there))
}

/// The rebuilt edge copies every row while the workspace stays open.
async fn restoring(
    cfg: &HubConfig,
    db: &mut Client,
    fb: &mut Fallback,
    facility: &FacilityId,
    _actor: &str,
) -> anyhow::Result<Step> {
    // Idempotent: enrollment did it already; a box enrolled before a hub restart gets it again.
    workspace::grant_restore(db, facility, &crate::enroll::master_role(facility)).await?;
    let (_, blocked) = reconcile_locked(cfg, db).await?;
    let diff = differences(db, &fb.facility_id).await?;
    if diff.is_empty() {
        return Ok(Some((
            Phase::ReadOnly,
            "the rebuilt edge has every row (first copy); the workspace becomes read-only".into(),
        )));
    }
    let since = fb.restoring_since.unwrap_or(fb.updated_at);
    let waited = (chrono::Utc::now() - since).num_seconds();
    if waited >= cfg.fallback.copy_wait_secs as i64 {
        return Ok(Some((
            Phase::ReadOnly,
            format!("the workspace keeps changing after {waited} s ({}); read-only now so the copy can finish", diff.join(", ")),
        )));
    }
    let mut what = format!(
        "the rebuilt edge copies the facility's rows: {}",
        diff.join(", ")
    );
    if !blocked.is_empty() {
        what.push_str(&format!(" (regional: {})", blocked.join("; ")));
    }
    wait(db, fb, what).await
}

/// No write may fall between the workspace and the edge: the workspace reads only, then the
/// edge catches up with it.
async fn read_only(
    _cfg: &HubConfig,
    db: &mut Client,
    fb: &mut Fallback,
    facility: &FacilityId,
    actor: &str,
) -> anyhow::Result<Step> {
    if fb.read_only_at.is_none() {
        workspace::make_read_only(&*db, facility).await?;
        db.execute(
            "UPDATE agog_hub.fallbacks SET read_only_at = now() WHERE id = $1",
            &[&fb.id],
        )
        .await?;
        fb.read_only_at = Some(chrono::Utc::now());
        record::log(
            &*db,
            fb,
            actor,
            "workspace read-only",
            "write rights revoked, open sessions ended",
        )
        .await?;
    }
    let diff = differences(db, &fb.facility_id).await?;
    if diff.is_empty() {
        Ok(Some((
            Phase::HandingOver,
            "the rebuilt edge has every row, including the workspace's last writes".into(),
        )))
    } else {
        wait(
            db,
            fb,
            format!("the rebuilt edge catches up: {}", diff.join(", ")),
        )
        .await
    }
}

/// The regional subscribes to the edge without a copy, then hands ownership back by deleting
/// the override, which reaches the edge behind every row.
async fn handing_over(
    cfg: &HubConfig,
    db: &mut Client,
    fb: &mut Fallback,
    actor: &str,
) -> anyhow::Result<Step> {
    let edge = node(
        fb.restore_node
            .as_deref()
            .context("no rebuilt edge recorded")?,
    )?;
    let regional = cfg.node_name();
    let up = subscription_name(&edge, &regional);
    if !subscription_exists(db, &up).await? {
        let (_, blocked) = reconcile_locked(cfg, db).await?;
        if !subscription_exists(db, &up).await? {
            return wait(
                db,
                fb,
                format!(
                    "the regional does not subscribe to {edge} yet: {}",
                    blocked.join("; ")
                ),
            )
            .await;
        }
        record::log(
            &*db,
            fb,
            actor,
            "regional subscribes to the rebuilt edge",
            &format!("{up}, copy_data = false: the regional already has every row"),
        )
        .await?;
    }
    if fb.handover_lsn.is_none() {
        // The edge writes from the moment this deletion reaches it; the regional may not from
        // its commit: ownership moves, never shared.
        let n = db
            .execute(
                "DELETE FROM agog_sync.ownership_overrides WHERE facility_id = $1",
                &[&fb.facility_id],
            )
            .await?;
        let lsn: String = db
            .query_one(
                "UPDATE agog_hub.fallbacks SET handover_lsn = pg_current_wal_lsn(), updated_at = now()
                  WHERE id = $1 RETURNING handover_lsn::text",
                &[&fb.id],
            )
            .await?
            .get(0);
        fb.handover_lsn = Some(lsn.clone());
        record::log(
            &*db,
            fb,
            actor,
            "ownership handed back to the edge",
            &format!("override deleted ({n} row) at {lsn}"),
        )
        .await?;
    }
    let slot = restore_slot(&edge, &regional);
    let applied: Option<bool> = db
        .query_opt(
            "SELECT confirmed_flush_lsn >= $2::text::pg_lsn FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot, &fb.handover_lsn],
        )
        .await?
        .and_then(|r| r.get(0));
    if applied == Some(true) {
        Ok(Some((
            Phase::Closing,
            format!(
                "{edge} applied the handover: it owns {} again",
                fb.facility_id
            ),
        )))
    } else {
        wait(
            db,
            fb,
            format!(
                "waiting for {edge} to apply the handover (restore slot {slot} {})",
                if applied.is_none() {
                    "is missing"
                } else {
                    "is behind"
                }
            ),
        )
        .await
    }
}

/// Back to normal: the workspace and the restore access go; the restore publication is emptied,
/// and once the edge has left it, it goes with its slot.
async fn closing(
    cfg: &HubConfig,
    db: &mut Client,
    fb: &mut Fallback,
    facility: &FacilityId,
    actor: &str,
) -> anyhow::Result<Step> {
    set_mode(cfg, db, fb, "normal").await?;
    if workspace::exists(&*db, facility).await? {
        workspace::close(db, facility).await?;
        record::log(
            &*db,
            fb,
            actor,
            "workspace closed",
            &format!("role {} dropped", fb.workspace_role),
        )
        .await?;
    }
    workspace::revoke_restore(db, facility, &crate::enroll::master_role(facility)).await?;
    reconcile_locked(cfg, db).await?;
    let edge = node(
        fb.restore_node
            .as_deref()
            .context("no rebuilt edge recorded")?,
    )?;
    let slot = restore_slot(&edge, &cfg.node_name());
    let active: Option<bool> = db
        .query_opt(
            "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
            &[&slot],
        )
        .await?
        .map(|r| r.get(0));
    if active == Some(true) {
        return wait(
            db,
            fb,
            format!("waiting for {edge} to leave the emptied restore publication (its agent drops the subscription on its next reconcile)"),
        )
        .await;
    }
    Ok(Some((
        Phase::Restored,
        format!(
            "{} is back on {edge}; workspace closed, restore stream ended",
            fb.facility_id
        ),
    )))
}

/// Tell the workers, once per event: the workspace while the fallback is on, the return after.
async fn notify_workers(
    cfg: &HubConfig,
    db: &mut Client,
    fb: &mut Fallback,
    actor: &str,
) -> anyhow::Result<()> {
    let (column, (subject, text)) = if fb.phase >= Phase::Closing {
        if fb.notified_restored_at.is_some() {
            return Ok(());
        }
        ("notified_restored_at", notice::restored(fb))
    } else if fb.phase >= Phase::Active && fb.notified_active_at.is_none() {
        ("notified_active_at", notice::activated(cfg, fb))
    } else {
        return Ok(());
    };
    let to = notice::recipients(&*db, fb).await?;
    let outcome = notice::send(cfg, &to, &subject, &text).await;
    let detail = match &outcome {
        Ok(None) => {
            "no email channel is configured ([fallback] email_channel): nobody was told".to_string()
        }
        Ok(Some(Delivery::Delivered { provider_id })) => format!(
            "email to {}: {provider_id}",
            if to.is_empty() {
                "the channel's recipients".into()
            } else {
                to.join(", ")
            }
        ),
        Ok(Some(Delivery::Rejected { status, body })) => {
            format!("email refused for good ({status}): {body}")
        }
        Ok(Some(Delivery::Failed { last_error, .. })) => {
            // Tried again on the next pass.
            tracing::warn!(facility = %fb.facility_id, error = %last_error, "workers not notified yet");
            return Ok(());
        }
        Err(e) => format!("not sent: {e}"),
    };
    db.execute(
        &format!(
            "UPDATE agog_hub.fallbacks SET {} = now() WHERE id = $1",
            ident(column)
        ),
        &[&fb.id],
    )
    .await?;
    let now = Some(chrono::Utc::now());
    if column == "notified_active_at" {
        fb.notified_active_at = now;
    } else {
        fb.notified_restored_at = now;
    }
    record::log(&*db, fb, actor, "workers notified", &detail).await?;
    Ok(())
}
