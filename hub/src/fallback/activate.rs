//! Activation: the facts the confirmation dialog shows, and the request itself (checked,
//! recorded, then driven to `active` at once under the regional lock).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sync_core::FacilityId;
use tokio_postgres::{Client, GenericClient};

use super::record::{self, Fallback, Phase};
use super::{driver, notice, operators, workspace, Refusal};
use crate::config::HubConfig;

/// What the operator asks for.
#[derive(Debug, Clone)]
pub struct Request {
    pub facility: FacilityId,
    pub reason: String,
    pub expected_duration: String,
    /// Workers' email addresses (none: the email channel's own recipients).
    pub notify: Vec<String>,
    pub operator: String,
}

fn check_text(what: &str, v: &str, max: usize) -> Result<String, Refusal> {
    let v = v.trim();
    if v.is_empty() || v.chars().count() > max || v.chars().any(|c| c.is_control()) {
        return Err(Refusal::invalid(format!(
            "{what}: 1 to {max} characters on one line"
        )));
    }
    Ok(v.to_owned())
}

impl Request {
    fn checked(mut self) -> Result<Request, Refusal> {
        self.reason = check_text("reason", &self.reason, 500)?;
        self.expected_duration = check_text("expected duration", &self.expected_duration, 200)?;
        for a in &self.notify {
            a.parse::<lettre::message::Mailbox>().map_err(|e| {
                Refusal::invalid(format!("notify {a:?} is not an email address: {e}"))
            })?;
        }
        if !operators::valid_name(&self.operator) {
            return Err(Refusal::invalid(
                "operator: 1 to 100 letters, digits and . _ @ + -",
            ));
        }
        Ok(self)
    }
}

/// The confirmation dialog's facts.
#[derive(Debug, Serialize)]
pub struct Preview {
    pub facility_id: String,
    pub display_name: String,
    pub tenant_id: String,
    pub node: String,
    /// The monitor's view of the edge: online, offline, escalated...
    pub state: String,
    pub offline_since: Option<DateTime<Utc>>,
    pub last_ok_at: Option<DateTime<Utc>>,
    /// The newest change from the edge seen in the regional: "all data is current as of".
    pub last_data_at: Option<DateTime<Utc>>,
    pub mode: &'static str,
    pub fallback: Option<Fallback>,
}

/// The newest heartbeat or row of the facility that arrived from its edge.
pub async fn last_data_at(
    db: &impl GenericClient,
    facility: &str,
) -> Result<Option<DateTime<Utc>>, tokio_postgres::Error> {
    Ok(db
        .query_one(
            "SELECT greatest(
                (SELECT max(beat_at) FROM public.edge_heartbeats WHERE facility_id = $1),
                (SELECT max(greatest(created_at, updated_at)) FROM public.orders WHERE facility_id = $1),
                (SELECT max(created_at) FROM public.inventory_transactions WHERE facility_id = $1),
                (SELECT max(coalesce(ended_at, started_at)) FROM public.production_logs WHERE facility_id = $1),
                (SELECT max(inspected_at) FROM public.quality_inspections WHERE facility_id = $1),
                (SELECT max(last_updated) FROM public.inventory_levels WHERE facility_id = $1))",
            &[&facility],
        )
        .await?
        .get(0))
}

fn unknown_facility(facility: &FacilityId) -> Refusal {
    Refusal::new(
        404,
        "unknown_facility",
        format!("no edge for facility {facility} in this region (see `hub edges`)"),
    )
}

pub async fn preview(db: &Client, facility: &FacilityId) -> Result<Preview, Refusal> {
    let row = db
        .query_opt(
            "SELECT display_name, tenant_id, node, state, offline_since, last_ok_at
               FROM agog_hub.edges WHERE facility_id = $1",
            &[&facility.as_str()],
        )
        .await?
        .ok_or_else(|| unknown_facility(facility))?;
    let fallback = record::open(db, facility.as_str()).await?;
    Ok(Preview {
        facility_id: facility.to_string(),
        display_name: row.get(0),
        tenant_id: row.get(1),
        node: row.get(2),
        state: row.get(3),
        offline_since: row.get(4),
        last_ok_at: row.get(5),
        last_data_at: last_data_at(db, facility.as_str()).await?,
        mode: fallback
            .as_ref()
            .map(|f| f.phase.mode())
            .unwrap_or("normal"),
        fallback,
    })
}

/// What the operator gets back: the workspace's password is shown here only.
#[derive(Debug, Serialize)]
pub struct Activated {
    pub fallback: Fallback,
    /// False when a step could not be done yet (`fallback.waiting_for` says which); `hub
    /// serve` finishes it.
    pub complete: bool,
    /// This request finished an activation that an earlier one had begun.
    pub resumed: bool,
    pub workspace_address: String,
    pub workspace_role: String,
    pub workspace_password: String,
}

/// Activate cloud fallback for a facility, or finish an activation that was cut off.
pub async fn activate(cfg: &HubConfig, req: Request) -> Result<Activated, Refusal> {
    let req = req.checked()?;
    let mut db = crate::db::connect_and_migrate(&cfg.database).await?;
    operators::require(&db, &req.operator).await?;
    let facility = req.facility.clone();
    let edge = db
        .query_opt(
            "SELECT tenant_id, display_name, node FROM agog_hub.edges WHERE facility_id = $1",
            &[&facility.as_str()],
        )
        .await?
        .ok_or_else(|| unknown_facility(&facility))?;
    // Under the regional lock from here: `hub serve`'s driver must not take up the new row
    // between its insert and this request's own steps.
    let lock = driver::RegionalLock::take(cfg).await?;
    let (resumed, mut fb) = match record::open(&db, facility.as_str()).await? {
        Some(fb) if fb.phase == Phase::Activating => (true, fb),
        Some(fb) => return Err(already(&fb)),
        None => {
            let last = last_data_at(&db, facility.as_str()).await?;
            let tenant: String = edge.get(0);
            let name: String = edge.get(1);
            let node: String = edge.get(2);
            let inserted = db
                .query_one(
                    "INSERT INTO agog_hub.fallbacks (facility_id, tenant_id, display_name, phase, reason,
                         expected_duration, notify, activated_by, last_data_at, workspace_role, old_node)
                     VALUES ($1, $2, $3, 'activating', $4, $5, $6, $7, $8, $9, $10) RETURNING id",
                    &[
                        &facility.as_str(),
                        &tenant,
                        &name,
                        &req.reason,
                        &req.expected_duration,
                        &req.notify,
                        &req.operator,
                        &last,
                        &workspace::role(&facility),
                        &node,
                    ],
                )
                .await;
            let id: i64 = match inserted {
                Ok(r) => r.get(0),
                // Another request got there first (the one-open-fallback index).
                Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION) => {
                    let fb = record::open(&db, facility.as_str()).await?;
                    return Err(fb
                        .map(|f| already(&f))
                        .unwrap_or_else(|| Refusal::internal(e)));
                }
                Err(e) => return Err(e.into()),
            };
            let fb = record::by_id(&db, id)
                .await?
                .ok_or_else(|| Refusal::internal("the fallback row vanished"))?;
            let current = fb
                .last_data_at
                .map(notice::when)
                .unwrap_or_else(|| "-".into());
            record::log(
                &db,
                &fb,
                &req.operator,
                "activation requested",
                &format!(
                    "reason: {}; expected duration: {}; all data is current as of {current}",
                    fb.reason, fb.expected_duration
                ),
            )
            .await?;
            (false, fb)
        }
    };
    if resumed {
        record::log(&db, &fb, &req.operator, "activation resumed", "").await?;
    }
    // The workspace password is made here and shown once; the workspace gets it whether it is
    // created now or was created by the interrupted attempt.
    let password = crate::enroll::new_password();
    let r = driver::advance(cfg, &mut db, &mut fb, &req.operator, Some(&password)).await;
    drop(lock);
    if let Err(e) = r {
        let msg = format!("{e:#}");
        record::set_waiting(&db, &mut fb, Some(&msg)).await?;
    }
    let fb = record::by_id(&db, fb.id).await?.unwrap_or(fb);
    Ok(Activated {
        complete: fb.phase >= Phase::Active,
        resumed,
        workspace_address: notice::workspace_address(cfg, &fb),
        workspace_role: fb.workspace_role.clone(),
        workspace_password: password,
        fallback: fb,
    })
}

fn already(fb: &Fallback) -> Refusal {
    Refusal::new(
        409,
        "already_in_fallback",
        format!(
            "facility {} is already in cloud fallback (phase {}) since {}, activated by {}: {}; to bring it back, enroll a rebuilt edge with `hub fallback restore-token {}`",
            fb.facility_id,
            fb.phase.as_str(),
            notice::when(fb.activated_at),
            fb.activated_by,
            fb.reason,
            fb.facility_id
        ),
    )
}

/// A new workspace password (the old one is lost, or was given to someone who left).
pub async fn reset_password(
    cfg: &HubConfig,
    facility: &FacilityId,
    operator: &str,
) -> Result<(String, String), Refusal> {
    let db = crate::db::connect_and_migrate(&cfg.database).await?;
    operators::require(&db, operator).await?;
    let fb = record::open(&db, facility.as_str())
        .await?
        .filter(|f| workspace_open(f.phase))
        .ok_or_else(|| {
            Refusal::new(
                409,
                "not_in_fallback",
                format!("facility {facility} has no open cloud workspace"),
            )
        })?;
    if !workspace::exists(&db, facility).await? {
        return Err(Refusal::new(
            409,
            "not_in_fallback",
            format!("the workspace of {facility} is not created yet (phase {}); see `hub fallback status {facility}`", fb.phase.as_str()),
        ));
    }
    let password = crate::enroll::new_password();
    workspace::set_password(&db, &fb.workspace_role, &password).await?;
    record::log(&db, &fb, operator, "workspace password reset", "").await?;
    Ok((fb.workspace_role.clone(), password))
}

fn workspace_open(p: Phase) -> bool {
    p < Phase::Closing
}
