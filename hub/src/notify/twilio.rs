//! Twilio: SMS (Messages.json) and voice calls (Calls.json), form-encoded with HTTP Basic
//! auth `AccountSid:AuthToken`; Twilio answers 201 with the new resource's `sid`.

use reqwest::Client;
use serde::Deserialize;

use super::http::{client, parse_url, read_answer, transport_error};
use super::retry::{deliver_with_retry, AttemptError, RetryConfig};
use super::text::{escape_markup, truncate_chars};
use super::{Alert, ConfigError, Delivery, Secret};

pub const MAX_SMS_CHARS: usize = 1600;
pub const MAX_TWIML_CHARS: usize = 4000;

fn default_base_url() -> String {
    "https://api.twilio.com".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioSmsConfig {
    pub account_sid: String,
    pub auth_token: Secret,
    /// Sender number, E.164.
    pub from: String,
    /// Recipient number, E.164.
    pub to: String,
    #[serde(default = "default_base_url")]
    pub base_url: String,
    #[serde(default)]
    pub retry: RetryConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwilioVoiceConfig {
    pub account_sid: String,
    pub auth_token: Secret,
    pub from: String,
    pub to: String,
    /// A TwiML document to fetch instead of the inline `<Say>` of the alert.
    #[serde(default)]
    pub twiml_url: Option<String>,
    #[serde(default = "default_base_url")]
    pub base_url: String,
    #[serde(default)]
    pub retry: RetryConfig,
}

/// `+` then 2 to 15 digits, the first not 0 (ITU-T E.164 as Twilio takes it).
pub fn is_e164(n: &str) -> bool {
    let Some(digits) = n.strip_prefix('+') else {
        return false;
    };
    (2..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// What both Twilio channels share: the account, the numbers, the client.
#[derive(Debug)]
struct Account {
    sid: String,
    token: Secret,
    from: String,
    to: String,
    base: reqwest::Url,
    retry: RetryConfig,
    client: Client,
}

impl Account {
    fn new(
        what: &str,
        sid: String,
        token: Secret,
        from: String,
        to: String,
        base_url: &str,
        retry: RetryConfig,
    ) -> Result<Self, ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(format!("{what}.{m}")));
        let hex = sid.len() == 34
            && sid.starts_with("AC")
            && sid[2..].bytes().all(|b| b.is_ascii_hexdigit());
        if !hex {
            return bad(format!(
                "account_sid {sid:?} is not AC followed by 32 hex digits"
            ));
        }
        if token.expose().is_empty() {
            return bad("auth_token is empty".into());
        }
        for (field, n) in [("from", &from), ("to", &to)] {
            if !is_e164(n) {
                return bad(format!(
                    "{field} {n:?} is not an E.164 number like +14155550100"
                ));
            }
        }
        retry.validate()?;
        let base = parse_url(&format!("{what}.base_url"), base_url)?;
        let client = client(retry.request_timeout())?;
        Ok(Account {
            sid,
            token,
            from,
            to,
            base,
            retry,
            client,
        })
    }

    /// The number to call or text: the contact's, or the configured one for ''.
    fn to<'a>(&'a self, recipient: &'a str) -> Result<&'a str, Delivery> {
        if recipient.is_empty() {
            Ok(&self.to)
        } else if is_e164(recipient) {
            Ok(recipient)
        } else {
            Err(Delivery::Rejected {
                status: 0,
                body: format!("{recipient:?} is not an E.164 number like +14155550100"),
            })
        }
    }

    /// POST the form to `/2010-04-01/Accounts/{sid}/{resource}`; the created `sid` on 201.
    async fn create(&self, what: &str, resource: &str, form: &[(&str, &str)]) -> Delivery {
        let url = match self
            .base
            .join(&format!("/2010-04-01/Accounts/{}/{resource}", self.sid))
        {
            Ok(u) => u,
            Err(e) => {
                return Delivery::Failed {
                    attempts: 0,
                    last_error: format!("bad URL: {e}"),
                }
            }
        };
        deliver_with_retry(&self.retry, what, || async {
            let resp = self
                .client
                .post(url.clone())
                .basic_auth(&self.sid, Some(self.token.expose()))
                .form(form)
                .send()
                .await
                .map_err(transport_error)?;
            let (status, body) = read_answer(resp).await?;
            #[derive(Deserialize)]
            struct Created {
                sid: String,
            }
            serde_json::from_str::<Created>(&body)
                .map(|c| c.sid)
                .map_err(|_| AttemptError::Rejected {
                    status: status.as_u16(),
                    body,
                })
        })
        .await
    }
}

#[derive(Debug)]
pub struct TwilioSms {
    account: Account,
}

impl TwilioSms {
    pub fn new(c: TwilioSmsConfig) -> Result<Self, ConfigError> {
        let account = Account::new(
            "twilio_sms",
            c.account_sid,
            c.auth_token,
            c.from,
            c.to,
            &c.base_url,
            c.retry,
        )?;
        Ok(TwilioSms { account })
    }

    /// The SMS text, at most 1600 characters.
    pub fn body(alert: &Alert) -> String {
        let text = format!(
            "AGOG {}\n{}\nActions:\n{}\nIncident: {}",
            alert.headline(),
            alert.message,
            alert.numbered_actions(),
            alert.incident_key
        );
        truncate_chars(&text, MAX_SMS_CHARS)
    }

    pub async fn send(&self, alert: &Alert) -> Delivery {
        self.send_to(alert, "").await
    }

    /// To the facility contact's number `recipient` ('' = the configured one).
    pub async fn send_to(&self, alert: &Alert, recipient: &str) -> Delivery {
        let body = Self::body(alert);
        let a = &self.account;
        let to = match a.to(recipient) {
            Ok(t) => t,
            Err(d) => return d,
        };
        a.create(
            "twilio_sms",
            "Messages.json",
            &[("To", to), ("From", &a.from), ("Body", &body)],
        )
        .await
    }
}

#[derive(Debug)]
pub struct TwilioVoice {
    account: Account,
    twiml_url: Option<reqwest::Url>,
}

impl TwilioVoice {
    pub fn new(c: TwilioVoiceConfig) -> Result<Self, ConfigError> {
        let twiml_url = c
            .twiml_url
            .as_deref()
            .map(|u| parse_url("twilio_voice.twiml_url", u))
            .transpose()?;
        let account = Account::new(
            "twilio_voice",
            c.account_sid,
            c.auth_token,
            c.from,
            c.to,
            &c.base_url,
            c.retry,
        )?;
        Ok(TwilioVoice { account, twiml_url })
    }

    /// Inline TwiML that reads the alert twice; the spoken text is XML-escaped and cut so the
    /// whole document stays within 4000 characters.
    pub fn twiml(alert: &Alert) -> String {
        const OPEN: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Say loop="2">"#;
        const CLOSE: &str = "</Say></Response>";
        let budget = MAX_TWIML_CHARS - OPEN.len() - CLOSE.len();
        let spoken = format!("This is an AGOG alert. {}", alert.message);
        let fits = |keep: usize| {
            escape_markup(&truncate_chars(&spoken, keep))
                .chars()
                .count()
                <= budget
        };
        // Escaping lengthens the text unevenly: find the longest cut that fits.
        let (mut lo, mut hi) = (0, spoken.chars().count());
        while lo < hi {
            let mid = (lo + hi).div_ceil(2);
            if fits(mid) {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        format!(
            "{OPEN}{}{CLOSE}",
            escape_markup(&truncate_chars(&spoken, lo))
        )
    }

    pub async fn send(&self, alert: &Alert) -> Delivery {
        self.send_to(alert, "").await
    }

    /// To the facility's primary contact `recipient` ('' = the configured number).
    pub async fn send_to(&self, alert: &Alert, recipient: &str) -> Delivery {
        let a = &self.account;
        let to = match a.to(recipient) {
            Ok(t) => t,
            Err(d) => return d,
        };
        // Exactly one of Url or Twiml.
        let (field, value) = match &self.twiml_url {
            Some(url) => ("Url", url.to_string()),
            None => ("Twiml", Self::twiml(alert)),
        };
        a.create(
            "twilio_voice",
            "Calls.json",
            &[("To", to), ("From", &a.from), (field, &value)],
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::is_e164;

    #[test]
    fn e164_numbers() {
        for ok in ["+14155550100", "+442071838750", "+12"] {
            assert!(is_e164(ok), "{ok}");
        }
        for bad in [
            "14155550100",
            "+0155550100",
            "+1 415 555 0100",
            "+1234567890123456",
            "+",
            "+1",
        ] {
            assert!(!is_e164(bad), "{bad}");
        }
    }
}
