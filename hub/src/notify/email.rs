//! Email over SMTP (lettre, rustls with ring): plain text plus an HTML alternative, the
//! subject carrying facility and state.

use std::net::IpAddr;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;

use super::retry::{deliver_with_retry, AttemptError, RetryConfig};
use super::text::escape_markup;
use super::{Alert, ConfigError, Delivery, Secret};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Implicit,
    /// No encryption: accepted only for a loopback host (tests, a local relay).
    None,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub host: String,
    /// Default: 587 for STARTTLS, 465 for implicit TLS, 25 for none.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub tls: SmtpTls,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// `AGOG Alerts <alerts@example.com>` or a bare address.
    pub from: String,
    pub to: Vec<String>,
    #[serde(default)]
    pub retry: RetryConfig,
}

#[derive(Debug)]
pub struct Email {
    from: Mailbox,
    to: Vec<Mailbox>,
    retry: RetryConfig,
    transport: AsyncSmtpTransport<Tokio1Executor>,
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl Email {
    pub fn new(cfg: EmailConfig) -> Result<Self, ConfigError> {
        let bad = |m: String| ConfigError::Invalid(format!("email.{m}"));
        cfg.retry.validate()?;
        if cfg.host.trim().is_empty() {
            return Err(bad("host is empty".into()));
        }
        if cfg.tls == SmtpTls::None && !is_loopback(&cfg.host) {
            return Err(bad(format!(
                "tls = \"none\" is only allowed for a loopback host, not {:?}; use starttls or implicit",
                cfg.host
            )));
        }
        let from: Mailbox = cfg
            .from
            .parse()
            .map_err(|e| bad(format!("from {:?}: {e}", cfg.from)))?;
        if cfg.to.is_empty() {
            return Err(bad("to needs at least one address".into()));
        }
        let to = cfg
            .to
            .iter()
            .map(|t| {
                t.parse::<Mailbox>()
                    .map_err(|e| bad(format!("to {t:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let tls = match cfg.tls {
            SmtpTls::None => Tls::None,
            mode => {
                let params =
                    TlsParameters::new(cfg.host.clone()).map_err(|e| bad(format!("tls: {e}")))?;
                if mode == SmtpTls::Implicit {
                    Tls::Wrapper(params)
                } else {
                    Tls::Required(params)
                }
            }
        };
        let port = cfg.port.unwrap_or(match cfg.tls {
            SmtpTls::Starttls => 587,
            SmtpTls::Implicit => 465,
            SmtpTls::None => 25,
        });
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&cfg.host)
            .port(port)
            .tls(tls)
            .timeout(Some(Duration::from_millis(cfg.retry.request_timeout_ms)));
        match (cfg.username, cfg.password) {
            (Some(u), Some(p)) => {
                builder = builder.credentials(Credentials::new(u, p.expose().to_string()))
            }
            (None, None) => {}
            _ => return Err(bad("username and password go together".into())),
        }
        Ok(Email {
            from,
            to,
            retry: cfg.retry,
            transport: builder.build(),
        })
    }

    pub fn subject(alert: &Alert) -> String {
        format!("[AGOG] {}", alert.headline())
    }

    pub fn text_body(alert: &Alert) -> String {
        let facts = alert
            .facts()
            .into_iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("\n");
        format!(
            "{}\n\n{facts}\n\nRecommended actions:\n{}\n",
            alert.message,
            alert.numbered_actions()
        )
    }

    pub fn html_body(alert: &Alert) -> String {
        let color = if alert.is_recovery() {
            "#2eb886"
        } else {
            "#d00000"
        };
        let rows: String = alert
            .facts()
            .into_iter()
            .map(|(k, v)| {
                format!(
                    "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
                    escape_markup(k),
                    escape_markup(&v)
                )
            })
            .collect();
        let actions: String = alert
            .actions
            .iter()
            .map(|a| format!("<li>{}</li>", escape_markup(a)))
            .collect();
        format!(
            "<!DOCTYPE html><html><body><h2 style=\"color:{color}\">{}</h2><p>{}</p><table>{rows}</table><h3>Recommended actions</h3><ol>{actions}</ol></body></html>",
            escape_markup(&alert.headline()),
            escape_markup(&alert.message),
        )
    }

    pub fn message(&self, alert: &Alert) -> Result<Message, String> {
        self.message_to(alert, "")
    }

    /// To the facility contact `recipient` alone ('' = the configured recipients).
    pub fn message_to(&self, alert: &Alert, recipient: &str) -> Result<Message, String> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(Self::subject(alert));
        if recipient.is_empty() {
            for to in &self.to {
                b = b.to(to.clone());
            }
        } else {
            let to: Mailbox = recipient
                .parse()
                .map_err(|e| format!("recipient {recipient:?}: {e}"))?;
            b = b.to(to);
        }
        b.multipart(MultiPart::alternative_plain_html(
            Self::text_body(alert),
            Self::html_body(alert),
        ))
        .map_err(|e| e.to_string())
    }

    /// A plain-text message that is not an alert (cloud fallback notices to a facility's
    /// workers): this channel's server and sender; `to`, or the channel's own recipients when
    /// empty. Retried like an alert.
    pub async fn send_notice(&self, to: &[Mailbox], subject: &str, text: &str) -> Delivery {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(format!("[AGOG] {subject}"));
        for m in if to.is_empty() { &self.to[..] } else { to } {
            b = b.to(m.clone());
        }
        let message = match b
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(text.to_string())
        {
            Ok(m) => m,
            Err(e) => {
                return Delivery::Failed {
                    attempts: 0,
                    last_error: format!("could not build the email: {e}"),
                }
            }
        };
        self.deliver(message).await
    }

    pub async fn send(&self, alert: &Alert) -> Delivery {
        self.send_to(alert, "").await
    }

    pub async fn send_to(&self, alert: &Alert, recipient: &str) -> Delivery {
        let message = match self.message_to(alert, recipient) {
            Ok(m) => m,
            Err(e) => {
                return Delivery::Failed {
                    attempts: 0,
                    last_error: format!("could not build the email: {e}"),
                }
            }
        };
        self.deliver(message).await
    }

    async fn deliver(&self, message: Message) -> Delivery {
        deliver_with_retry(&self.retry, "email", || async {
            match self.transport.send(message.clone()).await {
                Ok(resp) => Ok(format!(
                    "{} {}",
                    u16::from(resp.code()),
                    resp.message().collect::<Vec<_>>().join(" ")
                )),
                // 5xx: the server refused for good; 4xx and connection trouble: try again.
                Err(e) if e.is_permanent() => Err(AttemptError::Rejected {
                    status: e.status().map(u16::from).unwrap_or(500),
                    body: e.to_string(),
                }),
                Err(e) => Err(AttemptError::Transient {
                    reason: e.to_string(),
                    retry_after: None,
                }),
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn loopback_hosts() {
        for h in ["localhost", "127.0.0.1", "127.3.0.9", "::1", "[::1]"] {
            assert!(super::is_loopback(h), "{h}");
        }
        for h in ["smtp.example.com", "10.0.0.1", "0.0.0.0"] {
            assert!(!super::is_loopback(h), "{h}");
        }
    }
}
