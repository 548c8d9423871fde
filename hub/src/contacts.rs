//! Who hears about one facility: its contacts (SMS to those who opted in, the voice call to
//! the primary contact, email to everyone with an address) and its own routes on configured
//! channels (a Slack or Teams webhook, a PagerDuty integration key). Both in addition to each
//! channel's own target from hub.toml. Everything is validated before it is stored.

use serde::Serialize;
use tokio_postgres::GenericClient;

use crate::config::HubConfig;
use crate::notify::twilio::is_e164;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Contact {
    pub facility_id: String,
    pub name: String,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub sms_opt_in: bool,
    pub is_primary: bool,
}

impl Contact {
    /// Every rule, with a message that names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.trim().is_empty() || self.name.chars().count() > 200 {
            return Err("--name: 1 to 200 characters".into());
        }
        if self.name.chars().any(char::is_control) {
            return Err("--name: no control characters".into());
        }
        if let Some(p) = &self.phone {
            if !is_e164(p) {
                return Err(format!("--phone {p:?}: an E.164 number like +14155550100"));
            }
        }
        if let Some(e) = &self.email {
            e.parse::<lettre::Address>()
                .map_err(|err| format!("--email {e:?}: {err}"))?;
        }
        if self.sms_opt_in && self.phone.is_none() {
            return Err("--sms needs --phone".into());
        }
        if self.phone.is_none() && self.email.is_none() {
            return Err("a contact needs --phone or --email".into());
        }
        Ok(())
    }
}

/// Add a contact, or update the one with the same name. Making one primary demotes the
/// previous primary in the same transaction.
pub async fn upsert_contact(db: &mut tokio_postgres::Client, c: &Contact) -> anyhow::Result<()> {
    c.validate().map_err(anyhow::Error::msg)?;
    let tx = db.transaction().await?;
    known_facility(&tx, &c.facility_id).await?;
    if c.is_primary {
        tx.execute(
            "UPDATE agog_hub.contacts SET is_primary = false WHERE facility_id = $1 AND name <> $2",
            &[&c.facility_id, &c.name],
        )
        .await?;
    }
    tx.execute(
        "INSERT INTO agog_hub.contacts (facility_id, name, phone, email, sms_opt_in, is_primary)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (facility_id, name) DO UPDATE
            SET phone = EXCLUDED.phone, email = EXCLUDED.email, sms_opt_in = EXCLUDED.sms_opt_in,
                is_primary = EXCLUDED.is_primary",
        &[
            &c.facility_id,
            &c.name,
            &c.phone,
            &c.email,
            &c.sms_opt_in,
            &c.is_primary,
        ],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn remove_contact(
    db: &impl GenericClient,
    facility: &str,
    name: &str,
) -> anyhow::Result<()> {
    let n = db
        .execute(
            "DELETE FROM agog_hub.contacts WHERE facility_id = $1 AND name = $2",
            &[&facility, &name],
        )
        .await?;
    anyhow::ensure!(n == 1, "{facility} has no contact named {name:?}");
    Ok(())
}

pub async fn list_contacts(
    db: &impl GenericClient,
    facility: Option<&str>,
) -> anyhow::Result<Vec<Contact>> {
    Ok(db
        .query(
            "SELECT facility_id, name, phone, email, sms_opt_in, is_primary FROM agog_hub.contacts
              WHERE $1::text IS NULL OR facility_id = $1 ORDER BY facility_id, NOT is_primary, name",
            &[&facility],
        )
        .await?
        .iter()
        .map(|r| Contact {
            facility_id: r.get(0),
            name: r.get(1),
            phone: r.get(2),
            email: r.get(3),
            sms_opt_in: r.get(4),
            is_primary: r.get(5),
        })
        .collect())
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Route {
    pub facility_id: String,
    pub channel: String,
    /// Webhook URLs and keys are credentials: shown redacted.
    pub target: String,
}

/// Route one facility's alerts on channel `channel` (a name from hub.toml) to `target` too.
pub async fn add_route(
    cfg: &HubConfig,
    db: &impl GenericClient,
    facility: &str,
    channel: &str,
    target: &str,
) -> anyhow::Result<()> {
    let Some(ch) = cfg.alerts.channels.iter().find(|c| c.name == channel) else {
        let names: Vec<_> = cfg
            .alerts
            .channels
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        anyhow::bail!(
            "--channel {channel:?} is not configured in [alerts] (configured: {names:?})"
        );
    };
    crate::notify::check_route(ch.channel.kind(), target).map_err(anyhow::Error::msg)?;
    known_facility(db, facility).await?;
    db.execute(
        "INSERT INTO agog_hub.facility_routes (facility_id, channel, target) VALUES ($1, $2, $3)
         ON CONFLICT DO NOTHING",
        &[&facility, &channel, &target],
    )
    .await?;
    Ok(())
}

pub async fn remove_route(
    db: &impl GenericClient,
    facility: &str,
    channel: &str,
) -> anyhow::Result<u64> {
    let n = db
        .execute(
            "DELETE FROM agog_hub.facility_routes WHERE facility_id = $1 AND channel = $2",
            &[&facility, &channel],
        )
        .await?;
    anyhow::ensure!(n > 0, "{facility} has no route on {channel}");
    Ok(n)
}

pub async fn list_routes(
    db: &impl GenericClient,
    facility: Option<&str>,
) -> anyhow::Result<Vec<Route>> {
    Ok(db
        .query(
            "SELECT facility_id, channel, target FROM agog_hub.facility_routes
              WHERE $1::text IS NULL OR facility_id = $1 ORDER BY 1, 2, 3",
            &[&facility],
        )
        .await?
        .iter()
        .map(|r| Route {
            facility_id: r.get(0),
            channel: r.get(1),
            target: redact(r.get(2)),
        })
        .collect())
}

/// Enough to recognise a target, not enough to use it.
fn redact(target: &str) -> String {
    match reqwest::Url::parse(target) {
        Ok(u) => format!(
            "{}://{}{}/***",
            u.scheme(),
            u.host_str().unwrap_or("?"),
            u.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        Err(_) => format!("{}***", target.chars().take(4).collect::<String>()),
    }
}

async fn known_facility(db: &impl GenericClient, facility: &str) -> anyhow::Result<()> {
    let known = db
        .query_opt(
            "SELECT 1 FROM agog_hub.edges WHERE facility_id = $1",
            &[&facility],
        )
        .await?
        .is_some();
    anyhow::ensure!(
        known,
        "{facility} is not an edge of this region (hub edges)"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c() -> Contact {
        Contact {
            facility_id: "facility-la-001".into(),
            name: "Maria Lopez".into(),
            phone: Some("+14155550100".into()),
            email: Some("maria@example.com".into()),
            sms_opt_in: true,
            is_primary: true,
        }
    }

    #[test]
    fn contacts_are_checked_field_by_field() {
        assert_eq!(c().validate(), Ok(()));
        let bad_phone = Contact {
            phone: Some("555-0100".into()),
            ..c()
        };
        assert!(bad_phone.validate().unwrap_err().starts_with("--phone"));
        let bad_mail = Contact {
            email: Some("maria at example".into()),
            ..c()
        };
        assert!(bad_mail.validate().unwrap_err().starts_with("--email"));
        let sms_without_phone = Contact { phone: None, ..c() };
        assert_eq!(
            sms_without_phone.validate().unwrap_err(),
            "--sms needs --phone"
        );
        let nothing = Contact {
            phone: None,
            email: None,
            sms_opt_in: false,
            ..c()
        };
        assert!(nothing.validate().is_err());
    }

    #[test]
    fn routes_are_shown_redacted() {
        assert_eq!(
            redact("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com/***"
        );
        assert_eq!(redact("R0AGOGTESTROUTINGKEY000000000001"), "R0AG***");
    }
}
