//! The fallback row (`agog_hub.fallbacks`), its phases and its log (`agog_hub.fallback_log`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::GenericClient;

/// Where a fallback is. Each phase's work is idempotent; the driver moves a fallback on when
/// its phase's work is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Requested: the regional's subscription to the dead edge, the override, the workspace.
    Activating,
    /// The workspace is open; waiting for a rebuilt edge (a restore token may be out).
    Active,
    /// The rebuilt edge enrolled and copies the facility's rows; the workspace is still open.
    Restoring,
    /// The workspace only reads; waiting until the edge has every row.
    ReadOnly,
    /// The regional subscribes to the edge (no copy), the override is deleted; waiting until
    /// the edge has applied that deletion (from then on it owns the facility).
    HandingOver,
    /// The facility is back on its edge: the workspace and the restore stream are removed.
    Closing,
    /// Done (kept as history).
    Restored,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Activating => "activating",
            Phase::Active => "active",
            Phase::Restoring => "restoring",
            Phase::ReadOnly => "read_only",
            Phase::HandingOver => "handing_over",
            Phase::Closing => "closing",
            Phase::Restored => "restored",
        }
    }

    pub fn parse(s: &str) -> Option<Phase> {
        Some(match s {
            "activating" => Phase::Activating,
            "active" => Phase::Active,
            "restoring" => Phase::Restoring,
            "read_only" => Phase::ReadOnly,
            "handing_over" => Phase::HandingOver,
            "closing" => Phase::Closing,
            "restored" => Phase::Restored,
            _ => return None,
        })
    }

    /// The facility's mode as `facility_status` and the dashboard show it.
    pub fn mode(self) -> &'static str {
        if self >= Phase::Closing {
            "normal"
        } else {
            "cloud_fallback"
        }
    }

    /// The facility's health alerts are silenced (it is known to be gone); its state still shows.
    pub fn alerts_silenced(self) -> bool {
        self < Phase::Closing
    }
}

/// Phases in which the monitor enqueues no alert for the facility (monitor::enqueue).
pub const SILENCED_PHASES: [&str; 5] = [
    "activating",
    "active",
    "restoring",
    "read_only",
    "handing_over",
];

#[derive(Debug, Clone, Serialize)]
pub struct Fallback {
    pub id: i64,
    pub facility_id: String,
    pub tenant_id: String,
    pub display_name: String,
    pub phase: Phase,
    pub mode: &'static str,
    pub alerts_silenced: bool,
    pub reason: String,
    pub expected_duration: String,
    pub notify: Vec<String>,
    pub activated_by: String,
    pub activated_at: DateTime<Utc>,
    pub last_data_at: Option<DateTime<Utc>>,
    pub workspace_role: String,
    pub old_node: String,
    pub restore_node: Option<String>,
    pub restore_requested_by: Option<String>,
    pub restore_requested_at: Option<DateTime<Utc>>,
    pub restoring_since: Option<DateTime<Utc>>,
    pub read_only_at: Option<DateTime<Utc>>,
    pub handover_lsn: Option<String>,
    pub restored_at: Option<DateTime<Utc>>,
    pub notified_active_at: Option<DateTime<Utc>>,
    pub notified_restored_at: Option<DateTime<Utc>>,
    pub waiting_for: Option<String>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, facility_id, tenant_id, display_name, phase, reason, expected_duration, notify,
    activated_by, activated_at, last_data_at, workspace_role, old_node, restore_node,
    restore_requested_by, restore_requested_at, restoring_since, read_only_at, handover_lsn::text,
    restored_at, notified_active_at, notified_restored_at, waiting_for, updated_at";

fn from_row(r: &tokio_postgres::Row) -> Fallback {
    let phase = Phase::parse(r.get(4)).unwrap_or(Phase::Activating);
    Fallback {
        id: r.get(0),
        facility_id: r.get(1),
        tenant_id: r.get(2),
        display_name: r.get(3),
        phase,
        mode: phase.mode(),
        alerts_silenced: phase.alerts_silenced(),
        reason: r.get(5),
        expected_duration: r.get(6),
        notify: r.get(7),
        activated_by: r.get(8),
        activated_at: r.get(9),
        last_data_at: r.get(10),
        workspace_role: r.get(11),
        old_node: r.get(12),
        restore_node: r.get(13),
        restore_requested_by: r.get(14),
        restore_requested_at: r.get(15),
        restoring_since: r.get(16),
        read_only_at: r.get(17),
        handover_lsn: r.get(18),
        restored_at: r.get(19),
        notified_active_at: r.get(20),
        notified_restored_at: r.get(21),
        waiting_for: r.get(22),
        updated_at: r.get(23),
    }
}

/// The facility's open fallback (any phase but `restored`), if any.
pub async fn open(
    db: &impl GenericClient,
    facility: &str,
) -> Result<Option<Fallback>, tokio_postgres::Error> {
    Ok(db
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM agog_hub.fallbacks WHERE facility_id = $1 AND phase <> 'restored'"
            ),
            &[&facility],
        )
        .await?
        .as_ref()
        .map(from_row))
}

/// The same, locked for the caller's transaction.
pub async fn open_for_update(
    db: &impl GenericClient,
    facility: &str,
) -> Result<Option<Fallback>, tokio_postgres::Error> {
    Ok(db
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM agog_hub.fallbacks WHERE facility_id = $1 AND phase <> 'restored' FOR UPDATE"
            ),
            &[&facility],
        )
        .await?
        .as_ref()
        .map(from_row))
}

pub async fn by_id(
    db: &impl GenericClient,
    id: i64,
) -> Result<Option<Fallback>, tokio_postgres::Error> {
    Ok(db
        .query_opt(
            &format!("SELECT {COLUMNS} FROM agog_hub.fallbacks WHERE id = $1"),
            &[&id],
        )
        .await?
        .as_ref()
        .map(from_row))
}

/// Every open fallback, oldest first.
pub async fn all_open(db: &impl GenericClient) -> Result<Vec<Fallback>, tokio_postgres::Error> {
    Ok(db
        .query(
            &format!(
                "SELECT {COLUMNS} FROM agog_hub.fallbacks WHERE phase <> 'restored' ORDER BY id"
            ),
            &[],
        )
        .await?
        .iter()
        .map(from_row)
        .collect())
}

/// Every fallback (open and past), newest first; of one facility when given.
pub async fn list(
    db: &impl GenericClient,
    facility: Option<&str>,
) -> Result<Vec<Fallback>, tokio_postgres::Error> {
    Ok(db
        .query(
            &format!(
                "SELECT {COLUMNS} FROM agog_hub.fallbacks WHERE $1::text IS NULL OR facility_id = $1 ORDER BY id DESC"
            ),
            &[&facility],
        )
        .await?
        .iter()
        .map(from_row)
        .collect())
}

#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    pub at: DateTime<Utc>,
    pub actor: String,
    pub step: String,
    pub detail: String,
}

/// One step, with who did it (an operator, a rebuilt edge, or a hub replica) and when.
pub async fn log(
    db: &impl GenericClient,
    fb: &Fallback,
    actor: &str,
    step: &str,
    detail: &str,
) -> Result<(), tokio_postgres::Error> {
    tracing::info!(facility = %fb.facility_id, fallback = fb.id, actor, step, detail, "cloud fallback");
    db.execute(
        "INSERT INTO agog_hub.fallback_log (fallback_id, facility_id, actor, step, detail) VALUES ($1, $2, $3, $4, $5)",
        &[&fb.id, &fb.facility_id, &actor, &step, &detail],
    )
    .await?;
    Ok(())
}

pub async fn history(
    db: &impl GenericClient,
    fallback_id: i64,
) -> Result<Vec<LogEntry>, tokio_postgres::Error> {
    Ok(db
        .query(
            "SELECT at, actor, step, detail FROM agog_hub.fallback_log WHERE fallback_id = $1 ORDER BY id",
            &[&fallback_id],
        )
        .await?
        .iter()
        .map(|r| LogEntry {
            at: r.get(0),
            actor: r.get(1),
            step: r.get(2),
            detail: r.get(3),
        })
        .collect())
}

/// Move to `phase` and log it, in one statement (a reader never sees one without the other).
pub async fn set_phase(
    db: &impl GenericClient,
    fb: &mut Fallback,
    phase: Phase,
    actor: &str,
    detail: &str,
) -> Result<(), tokio_postgres::Error> {
    tracing::info!(facility = %fb.facility_id, fallback = fb.id, actor, phase = phase.as_str(), detail, "cloud fallback");
    db.execute(
        "WITH moved AS (
             UPDATE agog_hub.fallbacks
                SET phase = $2, waiting_for = NULL, updated_at = now(),
                    restored_at = CASE WHEN $2 = 'restored' THEN now() ELSE restored_at END
              WHERE id = $1 RETURNING id, facility_id)
         INSERT INTO agog_hub.fallback_log (fallback_id, facility_id, actor, step, detail)
         SELECT id, facility_id, $3, $2, $4 FROM moved",
        &[&fb.id, &phase.as_str(), &actor, &detail],
    )
    .await?;
    fb.phase = phase;
    fb.mode = phase.mode();
    fb.alerts_silenced = phase.alerts_silenced();
    fb.waiting_for = None;
    Ok(())
}

/// What the driver waits for now (None: nothing).
pub async fn set_waiting(
    db: &impl GenericClient,
    fb: &mut Fallback,
    waiting: Option<&str>,
) -> Result<(), tokio_postgres::Error> {
    if fb.waiting_for.as_deref() == waiting {
        return Ok(());
    }
    db.execute(
        "UPDATE agog_hub.fallbacks SET waiting_for = $2, updated_at = now() WHERE id = $1",
        &[&fb.id, &waiting],
    )
    .await?;
    fb.waiting_for = waiting.map(str::to_owned);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_round_trip_and_say_the_mode() {
        for p in [
            Phase::Activating,
            Phase::Active,
            Phase::Restoring,
            Phase::ReadOnly,
            Phase::HandingOver,
            Phase::Closing,
            Phase::Restored,
        ] {
            assert_eq!(Phase::parse(p.as_str()), Some(p));
            assert_eq!(
                SILENCED_PHASES.contains(&p.as_str()),
                p.alerts_silenced(),
                "{p:?}"
            );
        }
        assert_eq!(Phase::ReadOnly.mode(), "cloud_fallback");
        assert_eq!(Phase::Closing.mode(), "normal");
    }
}
