//! What an alert says, independent of the channel that carries it.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

/// A facility as the people who get alerts know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facility {
    pub id: String,
    pub name: String,
    pub region: String,
}

/// What happened to the facility.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertEvent {
    Offline {
        since: DateTime<Utc>,
    },
    /// Still offline; `level` counts escalations (1 = first).
    Escalated {
        since: DateTime<Utc>,
        level: u32,
    },
    Recovered {
        outage: Duration,
    },
    /// Replication in one or both directions is behind its thresholds; `detail` says which.
    Lagging {
        detail: String,
    },
    /// Caught up again after `lasted`.
    LagCleared {
        lasted: Duration,
    },
    /// A provisioned box has not enrolled since its image was ready.
    NotEnrolled {
        image_ready_at: DateTime<Utc>,
    },
}

/// PagerDuty's four severities; the other channels map them to colours and words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Error,
    Warning,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
}

/// One outage of one facility. Its key is the dedup key of every alert about it, so the
/// trigger, the escalations and the resolve land on the same PagerDuty incident, and a
/// replica that re-sends the same alert does not open a second one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    pub facility: Facility,
    pub since: DateTime<Utc>,
    /// "offline" (an outage) or "lag" (replication behind): part of the key.
    pub kind: &'static str,
}

/// PagerDuty's limit on dedup_key.
pub const MAX_INCIDENT_KEY_LEN: usize = 255;

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("incident key {0:?} is longer than {MAX_INCIDENT_KEY_LEN} characters")]
    KeyTooLong(String),
    #[error("facility {field} must not be empty")]
    Empty { field: &'static str },
}

impl Incident {
    pub fn new(facility: Facility, since: DateTime<Utc>) -> Result<Self, AlertError> {
        for (field, v) in [
            ("id", &facility.id),
            ("name", &facility.name),
            ("region", &facility.region),
        ] {
            if v.trim().is_empty() {
                return Err(AlertError::Empty { field });
            }
        }
        let inc = Incident {
            facility,
            since,
            kind: "offline",
        };
        let key = inc.key();
        if key.chars().count() > MAX_INCIDENT_KEY_LEN {
            return Err(AlertError::KeyTooLong(key));
        }
        Ok(inc)
    }

    /// A lag episode instead of an outage (its own key, so it never resolves an outage).
    pub fn lag(facility: Facility, since: DateTime<Utc>) -> Result<Self, AlertError> {
        let mut inc = Incident::new(facility, since)?;
        inc.kind = "lag";
        Ok(inc)
    }

    /// A provisioned box that has not enrolled since its image was ready (`since`).
    pub fn not_enrolled(facility: Facility, since: DateTime<Utc>) -> Result<Self, AlertError> {
        let mut inc = Incident::new(facility, since)?;
        inc.kind = "not_enrolled";
        Ok(inc)
    }

    /// Stable across restarts and replicas: derived only from the facility, the kind and the
    /// start of the incident.
    pub fn key(&self) -> String {
        format!(
            "agog/{}/{}/{}/{}",
            self.facility.region,
            self.facility.id,
            self.kind,
            self.since.timestamp()
        )
    }

    pub fn lagging(&self, detail: &str, at: DateTime<Utc>) -> Alert {
        let f = &self.facility;
        self.alert(
            AlertEvent::Lagging {
                detail: detail.to_string(),
            },
            Severity::Warning,
            at,
            format!("{} ({}) replication is behind: {detail}", f.name, f.id),
            [
                "Check the edge's link quality and its /health (edge-agent status)",
                "Check the regional database's load and the subscription's errors (hub edges)",
                "If the edge keeps growing WAL, check its free disk space",
            ]
            .map(String::from)
            .to_vec(),
        )
    }

    pub fn lag_cleared(&self, at: DateTime<Utc>) -> Alert {
        let f = &self.facility;
        let lasted = outage(self.since, at);
        self.alert(
            AlertEvent::LagCleared { lasted },
            Severity::Info,
            at,
            format!(
                "{} ({}) replication caught up at {} after {} behind",
                f.name,
                f.id,
                rfc3339(at),
                human_duration(lasted)
            ),
            vec![],
        )
    }

    pub fn offline(&self) -> Alert {
        let f = &self.facility;
        self.alert(
            AlertEvent::Offline { since: self.since },
            Severity::Critical,
            self.since,
            format!(
                "{} ({}) is OFFLINE since {}",
                f.name,
                f.id,
                rfc3339(self.since)
            ),
            offline_actions(),
        )
    }

    pub fn escalated(&self, level: u32, at: DateTime<Utc>) -> Alert {
        let f = &self.facility;
        let mut actions = offline_actions();
        actions.push("Escalate to the facility IT manager and AGOG on-call".to_string());
        self.alert(
            AlertEvent::Escalated {
                since: self.since,
                level,
            },
            Severity::Critical,
            at,
            format!(
                "{} ({}) is still OFFLINE since {} ({} down), escalation level {level}",
                f.name,
                f.id,
                rfc3339(self.since),
                human_duration(outage(self.since, at))
            ),
            actions,
        )
    }

    pub fn recovered(&self, at: DateTime<Utc>) -> Alert {
        let f = &self.facility;
        let outage = outage(self.since, at);
        self.alert(
            AlertEvent::Recovered { outage },
            Severity::Info,
            at,
            format!(
                "{} ({}) is back ONLINE at {} after {} offline",
                f.name,
                f.id,
                rfc3339(at),
                human_duration(outage)
            ),
            vec!["Check that the edge box caught up with replication".to_string()],
        )
    }

    /// `contact`: who set the box up (the provisioning form's IT contact).
    pub fn never_enrolled(&self, at: DateTime<Utc>, contact: &str) -> Alert {
        let f = &self.facility;
        self.alert(
            AlertEvent::NotEnrolled {
                image_ready_at: self.since,
            },
            Severity::Warning,
            at,
            format!(
                "{} ({}) has not connected yet: its image was ready {} ({} ago)",
                f.name,
                f.id,
                rfc3339(self.since),
                human_duration(outage(self.since, at))
            ),
            vec![
                format!("Call the facility's IT contact, {contact}: was the image flashed and the box plugged in?"),
                "Open the request's setup page: it shows whether the box ever connected".to_string(),
                "If the one-time key expired, provision the facility again".to_string(),
            ],
        )
    }

    fn alert(
        &self,
        event: AlertEvent,
        severity: Severity,
        at: DateTime<Utc>,
        message: String,
        actions: Vec<String>,
    ) -> Alert {
        Alert {
            facility: self.facility.clone(),
            event,
            severity,
            at,
            message,
            actions,
            incident_key: self.key(),
        }
    }
}

/// One notification about one incident.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub facility: Facility,
    pub event: AlertEvent,
    pub severity: Severity,
    /// When the event was observed.
    pub at: DateTime<Utc>,
    pub message: String,
    pub actions: Vec<String>,
    /// Dedup key: the same for every alert of one incident.
    pub incident_key: String,
}

impl Alert {
    /// The state word that subjects and titles carry.
    pub fn state(&self) -> &'static str {
        match self.event {
            AlertEvent::Offline { .. } => "OFFLINE",
            AlertEvent::Escalated { .. } => "ESCALATED",
            AlertEvent::Recovered { .. } => "RECOVERED",
            AlertEvent::Lagging { .. } => "LAGGING",
            AlertEvent::LagCleared { .. } => "CAUGHT UP",
            AlertEvent::NotEnrolled { .. } => "NOT ENROLLED",
        }
    }

    pub fn is_recovery(&self) -> bool {
        matches!(
            self.event,
            AlertEvent::Recovered { .. } | AlertEvent::LagCleared { .. }
        )
    }

    /// One line for titles, subjects and notification fallbacks.
    pub fn headline(&self) -> String {
        format!(
            "{}: {} ({}) in {}",
            self.state(),
            self.facility.name,
            self.facility.id,
            self.facility.region
        )
    }

    /// Actions numbered one per line.
    pub fn numbered_actions(&self) -> String {
        self.actions
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}. {a}", i + 1))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Label/value pairs every channel shows (Teams facts, Slack context, email table).
    pub fn facts(&self) -> Vec<(&'static str, String)> {
        let mut facts = vec![
            (
                "Facility",
                format!("{} ({})", self.facility.name, self.facility.id),
            ),
            ("Region", self.facility.region.clone()),
            ("State", self.state().to_string()),
        ];
        match &self.event {
            AlertEvent::Offline { since } => facts.push(("Offline since", rfc3339(*since))),
            AlertEvent::Escalated { since, level } => {
                facts.push(("Offline since", rfc3339(*since)));
                facts.push(("Escalation level", level.to_string()));
            }
            AlertEvent::Recovered { outage } => facts.push(("Outage", human_duration(*outage))),
            AlertEvent::Lagging { detail } => facts.push(("Lag", detail.clone())),
            AlertEvent::LagCleared { lasted } => {
                facts.push(("Behind for", human_duration(*lasted)))
            }
            AlertEvent::NotEnrolled { image_ready_at } => {
                facts.push(("Image ready", rfc3339(*image_ready_at)))
            }
        }
        facts.push(("Incident", self.incident_key.clone()));
        facts
    }
}

fn offline_actions() -> Vec<String> {
    [
        "Check internet connectivity",
        "Verify edge computer powered on",
        "Check VPN tunnel status",
        "Contact AgogSaaS support if issue persists",
    ]
    .map(String::from)
    .to_vec()
}

fn outage(since: DateTime<Utc>, at: DateTime<Utc>) -> Duration {
    (at - since).to_std().unwrap_or_default()
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// "2h 5min", "47min", "30s": what a person reads in an SMS.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m) = (s / 3600, (s % 3600) / 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}min"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h {m}min"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn incident() -> Incident {
        let f = Facility {
            id: "la-01".into(),
            name: "LA Plant".into(),
            region: "us-west".into(),
        };
        Incident::new(f, Utc.with_ymd_and_hms(2026, 3, 1, 14, 45, 0).unwrap()).unwrap()
    }

    #[test]
    fn every_alert_of_an_incident_shares_one_key() {
        let inc = incident();
        let at = inc.since + chrono::Duration::minutes(75);
        let keys = [inc.offline(), inc.escalated(1, at), inc.recovered(at)].map(|a| a.incident_key);
        assert_eq!(keys[0], "agog/us-west/la-01/offline/1772376300");
        assert!(keys.iter().all(|k| k == &keys[0]));
    }

    #[test]
    fn a_lag_episode_has_its_own_key_and_resolves_as_a_recovery() {
        let f = incident().facility;
        let lag = Incident::lag(f, Utc.with_ymd_and_hms(2026, 3, 1, 15, 0, 0).unwrap()).unwrap();
        assert_eq!(lag.key(), "agog/us-west/la-01/lag/1772377200");
        let a = lag.lagging("operational data 7min behind", lag.since);
        assert_eq!(a.headline(), "LAGGING: LA Plant (la-01) in us-west");
        assert!(!a.is_recovery());
        let c = lag.lag_cleared(lag.since + chrono::Duration::minutes(12));
        assert!(
            c.is_recovery() && c.message.contains("after 12min behind"),
            "{}",
            c.message
        );
    }

    #[test]
    fn recovery_carries_the_outage_and_info_severity() {
        let inc = incident();
        let a = inc.recovered(inc.since + chrono::Duration::minutes(125));
        assert_eq!(
            a.event,
            AlertEvent::Recovered {
                outage: Duration::from_secs(125 * 60)
            }
        );
        assert_eq!(a.severity, Severity::Info);
        assert!(a.message.contains("after 2h 5min offline"), "{}", a.message);
        assert_eq!(a.headline(), "RECOVERED: LA Plant (la-01) in us-west");
    }

    #[test]
    fn incident_keys_over_the_pagerduty_limit_are_refused() {
        let f = Facility {
            id: "x".repeat(300),
            name: "n".into(),
            region: "r".into(),
        };
        assert!(matches!(
            Incident::new(f, Utc::now()),
            Err(AlertError::KeyTooLong(_))
        ));
        let f = Facility {
            id: "a".into(),
            name: " ".into(),
            region: "r".into(),
        };
        assert!(matches!(
            Incident::new(f, Utc::now()),
            Err(AlertError::Empty { field: "name" })
        ));
    }
}
