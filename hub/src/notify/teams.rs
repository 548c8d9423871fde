//! Microsoft Teams: a Workflows webhook with an Adaptive Card (default), or a legacy Office
//! 365 connector with a MessageCard (being retired; kept as an option for old channels).

use reqwest::Client;
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{client, parse_url, read_answer, redacted, transport_error};
use super::retry::{deliver_with_retry, AttemptError, RetryConfig};
use super::text::truncate_chars;
use super::{Alert, ConfigError, Delivery, Secret, Severity};

/// Teams drops messages near 28 KB; stay well under it.
pub const MAX_MESSAGE_BYTES: usize = 24 * 1024;
const MAX_ACTIONS: usize = 10;
const MAX_ACTION_CHARS: usize = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TeamsFormat {
    /// Workflows ("When a Teams webhook request is received").
    #[default]
    AdaptiveCard,
    /// Legacy Office 365 connector.
    MessageCard,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamsConfig {
    /// The full webhook URL (it is the credential, so it is a secret).
    pub webhook_url: Secret,
    #[serde(default)]
    pub format: TeamsFormat,
    #[serde(default)]
    pub retry: RetryConfig,
}

pub struct Teams {
    cfg: TeamsConfig,
    url: reqwest::Url,
    client: Client,
}

/// By hand: the webhook URL is the credential and must not reach a log.
impl std::fmt::Debug for Teams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Teams")
            .field("url", &redacted(&self.url))
            .finish_non_exhaustive()
    }
}

impl Teams {
    pub fn new(cfg: TeamsConfig) -> Result<Self, ConfigError> {
        cfg.retry.validate()?;
        let url = parse_url("teams.webhook_url", cfg.webhook_url.expose())?;
        let client = client(cfg.retry.request_timeout())?;
        Ok(Teams { cfg, url, client })
    }

    /// The message for this alert, its text shortened until it fits the size limit.
    pub fn message(&self, alert: &Alert) -> Value {
        let mut max_text = 8_000;
        loop {
            let msg = match self.cfg.format {
                TeamsFormat::AdaptiveCard => adaptive_card(alert, max_text),
                TeamsFormat::MessageCard => message_card(alert, max_text),
            };
            let size = serde_json::to_vec(&msg)
                .map(|v| v.len())
                .unwrap_or(usize::MAX);
            if size <= MAX_MESSAGE_BYTES || max_text < 200 {
                return msg;
            }
            max_text /= 2;
        }
    }

    pub async fn send(&self, alert: &Alert) -> Delivery {
        self.send_to(alert, "").await
    }

    /// To the facility's own webhook `recipient` ('' = the configured one).
    pub async fn send_to(&self, alert: &Alert, recipient: &str) -> Delivery {
        let url = match super::http::target_url(&self.url, "teams webhook", recipient) {
            Ok(u) => u,
            Err(d) => return d,
        };
        let body = self.message(alert);
        let legacy = self.cfg.format == TeamsFormat::MessageCard;
        deliver_with_retry(&self.cfg.retry, "teams", || async {
            let resp = self
                .client
                .post(url.clone())
                .json(&body)
                .send()
                .await
                .map_err(transport_error)?;
            let (status, text) = read_answer(resp).await?;
            if !legacy {
                // Workflows answers 202 (or 200) with no meaningful body.
                return Ok(format!("HTTP {}", status.as_u16()));
            }
            // Connectors answer "1"; throttling has come back as 200 with the error in the body.
            match text.trim() {
                "1" => Ok("1".to_string()),
                t if t.contains("429") => Err(AttemptError::Transient {
                    reason: format!("connector throttled: {}", truncate_chars(t, 200)),
                    retry_after: None,
                }),
                _ => Err(AttemptError::Rejected {
                    status: status.as_u16(),
                    body: text,
                }),
            }
        })
        .await
    }
}

fn actions(alert: &Alert) -> impl Iterator<Item = (usize, String)> + '_ {
    alert
        .actions
        .iter()
        .take(MAX_ACTIONS)
        .enumerate()
        .map(|(i, a)| (i + 1, truncate_chars(a, MAX_ACTION_CHARS)))
}

fn adaptive_card(alert: &Alert, max_text: usize) -> Value {
    let color = match alert.severity {
        Severity::Critical | Severity::Error => "Attention",
        Severity::Warning => "Warning",
        Severity::Info => "Good",
    };
    let facts: Vec<Value> = alert
        .facts()
        .into_iter()
        .map(|(k, v)| json!({"title": k, "value": v}))
        .collect();
    let mut body = vec![
        json!({"type": "TextBlock", "text": alert.headline(), "weight": "Bolder", "size": "Medium", "color": color, "wrap": true}),
        json!({"type": "TextBlock", "text": truncate_chars(&alert.message, max_text), "wrap": true}),
        json!({"type": "FactSet", "facts": facts}),
    ];
    if !alert.actions.is_empty() {
        body.push(json!({"type": "TextBlock", "text": "Recommended actions", "weight": "Bolder", "wrap": true}));
        let list = actions(alert)
            .map(|(i, a)| format!("{i}. {a}"))
            .collect::<Vec<_>>()
            .join("\r");
        body.push(json!({"type": "TextBlock", "text": list, "wrap": true}));
    }
    json!({
        "type": "message",
        "attachments": [{
            "contentType": "application/vnd.microsoft.card.adaptive",
            "contentUrl": null,
            "content": {
                "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                "type": "AdaptiveCard",
                "version": "1.2",
                "body": body,
            },
        }],
    })
}

fn message_card(alert: &Alert, max_text: usize) -> Value {
    let color = match alert.severity {
        Severity::Critical | Severity::Error => "FF0000",
        Severity::Warning => "FFA500",
        Severity::Info => "2EB886",
    };
    let mut facts: Vec<Value> = alert
        .facts()
        .into_iter()
        .map(|(k, v)| json!({"name": k, "value": v}))
        .collect();
    facts.extend(actions(alert).map(|(i, a)| json!({"name": format!("Action {i}"), "value": a})));
    json!({
        "@type": "MessageCard",
        "@context": "http://schema.org/extensions",
        "themeColor": color,
        "summary": alert.headline(),
        "title": alert.headline(),
        "text": truncate_chars(&alert.message, max_text),
        "sections": [{"activityTitle": "Details and recommended actions", "facts": facts}],
    })
}
