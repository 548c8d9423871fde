//! Alerts to people: one `Alert` model and one `Channel` per vendor (PagerDuty, Slack, Teams,
//! Twilio SMS and voice, email). Every channel retries what is worth retrying, never reports
//! a message as sent unless the provider accepted it, and never logs a secret.

pub mod alert;
pub mod email;
pub mod http;
pub mod pagerduty;
pub mod retry;
pub mod secret;
pub mod slack;
pub mod teams;
pub mod text;
pub mod twilio;

use serde::Deserialize;

pub use alert::{Alert, AlertEvent, Facility, Incident, Severity};
pub use retry::RetryConfig;
pub use secret::Secret;

/// What became of one alert on one channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Accepted; `provider_id` is the provider's handle (PagerDuty dedup_key, Twilio sid,
    /// Slack "ok", SMTP server answer).
    Delivered { provider_id: String },
    /// Refused for good (HTTP 4xx other than 429, an error body under 200, SMTP 5xx).
    Rejected { status: u16, body: String },
    /// Still failing when the attempts or the time budget ran out.
    Failed { attempts: u32, last_error: String },
}

impl Delivery {
    pub fn is_delivered(&self) -> bool {
        matches!(self, Delivery::Delivered { .. })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid alert channel config: {0}")]
    Invalid(String),
}

/// One configured channel, as it appears in the hub config (`kind = "slack"` etc.).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ChannelConfig {
    Pagerduty(pagerduty::PagerDutyConfig),
    Slack(slack::SlackConfig),
    Teams(teams::TeamsConfig),
    TwilioSms(twilio::TwilioSmsConfig),
    TwilioVoice(twilio::TwilioVoiceConfig),
    Email(email::EmailConfig),
}

impl ChannelConfig {
    /// The kind's name as in the config (`kind = "..."`).
    pub fn kind(&self) -> &'static str {
        match self {
            ChannelConfig::Pagerduty(_) => "pagerduty",
            ChannelConfig::Slack(_) => "slack",
            ChannelConfig::Teams(_) => "teams",
            ChannelConfig::TwilioSms(_) => "twilio_sms",
            ChannelConfig::TwilioVoice(_) => "twilio_voice",
            ChannelConfig::Email(_) => "email",
        }
    }
}

/// Whether `target` can be a facility's own route on a channel of `kind`: a webhook URL for
/// Slack and Teams, an integration key for PagerDuty. People (phones, emails) are contacts.
pub fn check_route(kind: &str, target: &str) -> Result<(), String> {
    match kind {
        "slack" | "teams" => http::parse_url(&format!("{kind} webhook"), target)
            .map(|_| ())
            .map_err(|e| e.to_string()),
        "pagerduty" => pagerduty::check_routing_key(target),
        other => Err(format!(
            "a {other} channel reaches the facility's contacts (hub contacts add), not a route"
        )),
    }
}

/// A ready channel (config validated, client built).
#[derive(Debug)]
pub enum Channel {
    PagerDuty(pagerduty::PagerDuty),
    Slack(slack::Slack),
    Teams(teams::Teams),
    TwilioSms(twilio::TwilioSms),
    TwilioVoice(twilio::TwilioVoice),
    Email(email::Email),
}

impl Channel {
    pub fn new(cfg: ChannelConfig) -> Result<Channel, ConfigError> {
        Ok(match cfg {
            ChannelConfig::Pagerduty(c) => Channel::PagerDuty(pagerduty::PagerDuty::new(c)?),
            ChannelConfig::Slack(c) => Channel::Slack(slack::Slack::new(c)?),
            ChannelConfig::Teams(c) => Channel::Teams(teams::Teams::new(c)?),
            ChannelConfig::TwilioSms(c) => Channel::TwilioSms(twilio::TwilioSms::new(c)?),
            ChannelConfig::TwilioVoice(c) => Channel::TwilioVoice(twilio::TwilioVoice::new(c)?),
            ChannelConfig::Email(c) => Channel::Email(email::Email::new(c)?),
        })
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Channel::PagerDuty(_) => "pagerduty",
            Channel::Slack(_) => "slack",
            Channel::Teams(_) => "teams",
            Channel::TwilioSms(_) => "twilio_sms",
            Channel::TwilioVoice(_) => "twilio_voice",
            Channel::Email(_) => "email",
        }
    }

    pub async fn send(&self, alert: &Alert) -> Delivery {
        self.send_to(alert, "").await
    }

    /// To one recipient: '' is the channel's own target from the config; otherwise a
    /// facility's webhook or routing key, or a contact's number or address.
    pub async fn send_to(&self, alert: &Alert, recipient: &str) -> Delivery {
        match self {
            Channel::PagerDuty(c) => c.send_to(alert, recipient).await,
            Channel::Slack(c) => c.send_to(alert, recipient).await,
            Channel::Teams(c) => c.send_to(alert, recipient).await,
            Channel::TwilioSms(c) => c.send_to(alert, recipient).await,
            Channel::TwilioVoice(c) => c.send_to(alert, recipient).await,
            Channel::Email(c) => c.send_to(alert, recipient).await,
        }
    }
}

/// Send one alert on every channel at once; one outcome per channel, in order.
pub async fn send_all(channels: &[Channel], alert: &Alert) -> Vec<Delivery> {
    futures_util::future::join_all(channels.iter().map(|c| c.send(alert))).await
}
