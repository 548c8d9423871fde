//! Slack incoming webhook: `text` as the notification fallback plus Block Kit blocks.
//! Slack answers 200 with body `ok`; anything else, even under 200, is not a delivery.

use reqwest::Client;
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{client, parse_url, read_answer, redacted, transport_error};
use super::retry::{deliver_with_retry, AttemptError, RetryConfig};
use super::text::{escape_slack, truncate_chars};
use super::{Alert, ConfigError, Delivery, Secret, Severity};

/// Block Kit limits: header text 150 chars, section text 3000 chars.
pub const MAX_HEADER_CHARS: usize = 150;
pub const MAX_SECTION_CHARS: usize = 3000;
/// Slack truncates top-level text past 40,000 chars; the fallback stays far shorter.
pub const MAX_FALLBACK_CHARS: usize = 3000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The full webhook URL (it is the credential, so it is a secret).
    pub webhook_url: Secret,
    #[serde(default)]
    pub retry: RetryConfig,
}

pub struct Slack {
    cfg: SlackConfig,
    url: reqwest::Url,
    client: Client,
}

/// By hand: the webhook URL is the credential and must not reach a log.
impl std::fmt::Debug for Slack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slack")
            .field("url", &redacted(&self.url))
            .finish_non_exhaustive()
    }
}

impl Slack {
    pub fn new(cfg: SlackConfig) -> Result<Self, ConfigError> {
        cfg.retry.validate()?;
        let url = parse_url("slack.webhook_url", cfg.webhook_url.expose())?;
        let client = client(cfg.retry.request_timeout())?;
        Ok(Slack { cfg, url, client })
    }

    pub fn message(&self, alert: &Alert) -> Value {
        let icon = match alert.severity {
            Severity::Critical | Severity::Error => "🔴",
            Severity::Warning => "🟠",
            Severity::Info => "✅",
        };
        let headline = format!("{icon} {}", alert.headline());
        let message = truncate_chars(&escape_slack(&alert.message), MAX_SECTION_CHARS);
        let actions = truncate_chars(
            &format!(
                "*Recommended actions:*\n{}",
                escape_slack(&alert.numbered_actions())
            ),
            MAX_SECTION_CHARS,
        );
        let context = alert
            .facts()
            .into_iter()
            .map(|(k, v)| format!("*{k}:* {}", escape_slack(&v)))
            .collect::<Vec<_>>()
            .join("  |  ");
        json!({
            "text": truncate_chars(&format!("{headline}: {}", alert.message), MAX_FALLBACK_CHARS),
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": truncate_chars(&headline, MAX_HEADER_CHARS), "emoji": true}},
                {"type": "section", "text": {"type": "mrkdwn", "text": message}},
                {"type": "section", "text": {"type": "mrkdwn", "text": actions}},
                {"type": "context", "elements": [{"type": "mrkdwn", "text": truncate_chars(&context, MAX_SECTION_CHARS)}]},
            ],
        })
    }

    pub async fn send(&self, alert: &Alert) -> Delivery {
        self.send_to(alert, "").await
    }

    /// To the facility's own webhook `recipient` ('' = the configured one).
    pub async fn send_to(&self, alert: &Alert, recipient: &str) -> Delivery {
        let url = match super::http::target_url(&self.url, "slack webhook", recipient) {
            Ok(u) => u,
            Err(d) => return d,
        };
        let body = self.message(alert);
        deliver_with_retry(&self.cfg.retry, "slack", || async {
            let resp = self
                .client
                .post(url.clone())
                .json(&body)
                .send()
                .await
                .map_err(transport_error)?;
            let (status, text) = read_answer(resp).await?;
            if text.trim() == "ok" {
                Ok("ok".to_string())
            } else {
                // e.g. 200 "invalid_payload": Slack did not post it.
                Err(AttemptError::Rejected {
                    status: status.as_u16(),
                    body: text,
                })
            }
        })
        .await
    }
}
