//! Telling a facility's workers (email, through the hub's email channel): where the workspace
//! is and how to work there, and later that the facility is back on its edge. The words follow
//! the design's; "all data is current as of" is the newest change from the edge the regional saw.

use chrono::{DateTime, Utc};
use lettre::message::Mailbox;

use super::record::Fallback;
use crate::config::HubConfig;
use crate::notify::email::Email;
use crate::notify::{ChannelConfig, Delivery};

/// `2026-03-01 14:45 UTC`.
pub fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// The configured channel that tells workers: `[fallback] email_channel`, or the first email
/// channel. `None` when there is none.
pub fn channel(cfg: &HubConfig) -> Result<Option<Email>, String> {
    let wanted = cfg.fallback.email_channel.as_deref();
    let found = cfg.alerts.channels.iter().find(|c| {
        matches!(c.channel, ChannelConfig::Email(_)) && wanted.is_none_or(|w| w == c.name)
    });
    match (found, wanted) {
        (Some(c), _) => match &c.channel {
            ChannelConfig::Email(e) => Email::new(e.clone()).map(Some).map_err(|e| e.to_string()),
            _ => unreachable!("filtered on email"),
        },
        (None, Some(w)) => Err(format!(
            "[fallback] email_channel = {w:?} names no email channel in [[alerts.channels]]"
        )),
        (None, None) => Ok(None),
    }
}

/// The workspace address workers use (`[fallback] workspace_address`, or the regional database).
pub fn workspace_address(cfg: &HubConfig, fb: &Fallback) -> String {
    match &cfg.fallback.workspace_address {
        Some(t) => t
            .replace("{role}", &fb.workspace_role)
            .replace("{facility}", &fb.facility_id),
        None => match super::config::address_of(&cfg.database) {
            Some((host, port, db)) => {
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host
                };
                format!("postgresql://{}@{host}:{port}/{db}", fb.workspace_role)
            }
            None => format!("the regional database, role {}", fb.workspace_role),
        },
    }
}

pub fn activated(cfg: &HubConfig, fb: &Fallback) -> (String, String) {
    let current = fb
        .last_data_at
        .map(when)
        .unwrap_or_else(|| "the facility's first day (nothing arrived from its edge)".into());
    let subject = format!(
        "{} ({}) is in cloud fallback: work from the cloud workspace",
        fb.display_name, fb.facility_id
    );
    let text = format!(
        "{name} ({facility}) is in disaster recovery mode. Access the system at: {address}\n\
         \n\
         Instructions:\n\
         1. Use the workspace credentials your facility manager gives you (role {role})\n\
         2. All data is current as of {current}\n\
         3. New orders will be saved to the cloud\n\
         4. When the facility is rebuilt, the data will sync back to its new edge\n\
         \n\
         Reason: {reason}\n\
         Expected duration: {expected}\n\
         Activated by {by} at {at}\n",
        name = fb.display_name,
        facility = fb.facility_id,
        address = workspace_address(cfg, fb),
        role = fb.workspace_role,
        reason = fb.reason,
        expected = fb.expected_duration,
        by = fb.activated_by,
        at = when(fb.activated_at),
    );
    (subject, text)
}

pub fn restored(fb: &Fallback) -> (String, String) {
    let subject = format!(
        "{} ({}) is restored: back on its edge",
        fb.display_name, fb.facility_id
    );
    let text = format!(
        "{name} ({facility}) is restored! Its new edge computer is online.\n\
         \n\
         1. Access the system at the facility's normal address (its edge)\n\
         2. All cloud workspace data has been synced to the new edge\n\
         3. Operations resume as normal; the cloud workspace is closed\n\
         \n\
         Fallback reason: {reason} (activated {at} by {by})\n",
        name = fb.display_name,
        facility = fb.facility_id,
        reason = fb.reason,
        at = when(fb.activated_at),
        by = fb.activated_by,
    );
    (subject, text)
}

/// Who is told: the addresses given at activation, else the facility's contacts with an email
/// address (`hub contacts`), else the email channel's own recipients (an empty list).
pub async fn recipients(
    db: &impl tokio_postgres::GenericClient,
    fb: &Fallback,
) -> Result<Vec<String>, tokio_postgres::Error> {
    if !fb.notify.is_empty() {
        return Ok(fb.notify.clone());
    }
    Ok(db
        .query(
            "SELECT email FROM agog_hub.contacts WHERE facility_id = $1 AND email IS NOT NULL ORDER BY name",
            &[&fb.facility_id],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect())
}

/// Send to `to` (or the channel's recipients when empty). `Ok(None)` when no email channel is
/// configured.
pub async fn send(
    cfg: &HubConfig,
    to: &[String],
    subject: &str,
    text: &str,
) -> Result<Option<Delivery>, String> {
    let Some(email) = channel(cfg)? else {
        return Ok(None);
    };
    let to = to
        .iter()
        .map(|a| a.parse::<Mailbox>().map_err(|e| format!("{a:?}: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(email.send_notice(&to, subject, text).await))
}
