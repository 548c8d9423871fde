//! PagerDuty Events API v2: `trigger` for offline and escalation, `resolve` on recovery,
//! both with the incident key as dedup_key and the same routing key.

use chrono::SecondsFormat;
use reqwest::Client;
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{client, parse_url, read_answer, transport_error};
use super::retry::{deliver_with_retry, AttemptError, RetryConfig};
use super::text::truncate_chars;
use super::{Alert, AlertEvent, ConfigError, Delivery, Secret};

pub const MAX_SUMMARY_CHARS: usize = 1024;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyConfig {
    /// The 32-character integration key of the service.
    pub routing_key: Secret,
    #[serde(default = "default_base_url")]
    pub base_url: String,
    #[serde(default)]
    pub retry: RetryConfig,
}

fn default_base_url() -> String {
    "https://events.pagerduty.com".into()
}

#[derive(Debug)]
pub struct PagerDuty {
    cfg: PagerDutyConfig,
    enqueue_url: reqwest::Url,
    client: Client,
}

impl PagerDuty {
    pub fn new(cfg: PagerDutyConfig) -> Result<Self, ConfigError> {
        check_routing_key(cfg.routing_key.expose()).map_err(ConfigError::Invalid)?;
        cfg.retry.validate()?;
        let enqueue_url = parse_url("pagerduty.base_url", &cfg.base_url)?
            .join("/v2/enqueue")
            .map_err(|e| ConfigError::Invalid(format!("pagerduty.base_url: {e}")))?;
        let client = client(cfg.retry.request_timeout())?;
        Ok(PagerDuty {
            cfg,
            enqueue_url,
            client,
        })
    }

    /// The event PagerDuty gets for this alert.
    pub fn event(&self, alert: &Alert) -> Value {
        self.event_for(alert, self.cfg.routing_key.expose())
    }

    fn event_for(&self, alert: &Alert, routing_key: &str) -> Value {
        if alert.is_recovery() {
            return json!({
                "routing_key": routing_key,
                "event_action": "resolve",
                "dedup_key": alert.incident_key,
            });
        }
        let f = &alert.facility;
        let mut details = json!({
            "facility_id": f.id,
            "facility_name": f.name,
            "region": f.region,
            "state": alert.state(),
            "message": alert.message,
            "recommended_actions": alert.actions,
        });
        if let AlertEvent::Offline { since } | AlertEvent::Escalated { since, .. } = &alert.event {
            details["offline_since"] = json!(super::alert::rfc3339(*since));
        }
        if let AlertEvent::Escalated { level, .. } = &alert.event {
            details["escalation_level"] = json!(level);
        }
        json!({
            "routing_key": routing_key,
            "event_action": "trigger",
            "dedup_key": alert.incident_key,
            "client": "AGOG hub",
            "payload": {
                "summary": truncate_chars(&format!("{} - {}", alert.headline(), alert.message), MAX_SUMMARY_CHARS),
                "source": format!("{}/{}", f.region, f.id),
                "severity": alert.severity.as_str(),
                "timestamp": alert.at.to_rfc3339_opts(SecondsFormat::Millis, true),
                "component": "edge-box",
                "group": f.region,
                "class": match alert.event {
                    AlertEvent::Lagging { .. } => "replication_lag",
                    AlertEvent::NotEnrolled { .. } => "edge_not_enrolled",
                    _ => "facility_offline",
                },
                "custom_details": details,
            },
        })
    }

    pub async fn send(&self, alert: &Alert) -> Delivery {
        self.send_to(alert, "").await
    }

    /// With the facility's own routing key `recipient` ('' = the configured one).
    pub async fn send_to(&self, alert: &Alert, recipient: &str) -> Delivery {
        let key = if recipient.is_empty() {
            self.cfg.routing_key.expose()
        } else if let Err(e) = check_routing_key(recipient) {
            return Delivery::Rejected { status: 0, body: e };
        } else {
            recipient
        };
        let event = self.event_for(alert, key);
        deliver_with_retry(&self.cfg.retry, "pagerduty", || async {
            let resp = self
                .client
                .post(self.enqueue_url.clone())
                .json(&event)
                .send()
                .await
                .map_err(transport_error)?;
            let (status, body) = read_answer(resp).await?;
            accepted_dedup_key(status.as_u16(), &body)
        })
        .await
    }
}

/// An Events API v2 integration key: 32 letters and digits.
pub fn check_routing_key(key: &str) -> Result<(), String> {
    if key.len() != 32 || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err("pagerduty.routing_key must be the 32-character integration key".into());
    }
    Ok(())
}

/// A 2xx only counts with `{"status":"success","dedup_key":...}`.
fn accepted_dedup_key(status: u16, body: &str) -> Result<String, AttemptError> {
    #[derive(Deserialize)]
    struct Answer {
        status: String,
        dedup_key: Option<String>,
    }
    match serde_json::from_str::<Answer>(body) {
        Ok(Answer {
            status: s,
            dedup_key: Some(k),
        }) if s == "success" => Ok(k),
        _ => Err(AttemptError::Rejected {
            status,
            body: body.to_string(),
        }),
    }
}
