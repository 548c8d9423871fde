//! The HTTP side shared by the webhook and REST channels: one rustls (ring) client, and the
//! mapping from an HTTP answer to "delivered", "retry" or "rejected".

use std::sync::Once;
use std::time::{Duration, SystemTime};

use reqwest::header::RETRY_AFTER;
use reqwest::{Client, Response, StatusCode};

use super::retry::AttemptError;
use super::ConfigError;

/// A client for one channel. reqwest is built without a default crypto provider (so neither
/// aws-lc nor OpenSSL is linked); ring is installed as the process default here.
pub fn client(timeout: Duration) -> Result<Client, ConfigError> {
    static RING: Once = Once::new();
    RING.call_once(|| {
        // Err means another provider was installed first; that one is then used.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("agog-hub/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ConfigError::Invalid(format!("HTTP client: {e}")))
}

/// A validated absolute http(s) URL from config; `what` names the field in errors.
pub fn parse_url(what: &str, s: &str) -> Result<reqwest::Url, ConfigError> {
    let url = reqwest::Url::parse(s)
        .map_err(|e| ConfigError::Invalid(format!("{what}: not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(ConfigError::Invalid(format!(
            "{what}: must be an http(s) URL with a host"
        )));
    }
    Ok(url)
}

/// The URL to post to: the configured one for '', else the facility's own webhook.
/// A bad one is rejected (not retried): it will not get better.
pub fn target_url(
    configured: &reqwest::Url,
    what: &str,
    recipient: &str,
) -> Result<reqwest::Url, super::Delivery> {
    if recipient.is_empty() {
        return Ok(configured.clone());
    }
    parse_url(what, recipient).map_err(|e| super::Delivery::Rejected {
        status: 0,
        body: e.to_string(),
    })
}

/// A webhook URL fit for logs and Debug: scheme, host and port; the path is the secret.
pub fn redacted(url: &reqwest::Url) -> String {
    format!("{}://{}/***", url.scheme(), url.host_str().unwrap_or("?"))
        + &url
            .port()
            .map(|p| format!(" (port {p})"))
            .unwrap_or_default()
}

/// Send failures: anything before an answer is transient (DNS, connect, timeout, reset).
/// The reqwest error is printed without its URL: webhook URLs carry their secret.
pub fn transport_error(e: reqwest::Error) -> AttemptError {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let e = e.without_url();
    AttemptError::Transient {
        reason: format!("{kind}: {e}"),
        retry_after: None,
    }
}

/// Read the answer: a 2xx gives `(status, body)`; 429, 408 and 5xx are transient (with the
/// server's Retry-After); any other status is a rejection.
pub async fn read_answer(resp: Response) -> Result<(StatusCode, String), AttemptError> {
    let status = resp.status();
    let retry_after = retry_after(&resp);
    let body = resp.text().await.map_err(transport_error)?;
    if status.is_success() {
        Ok((status, body))
    } else if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        Err(AttemptError::Transient {
            reason: format!("HTTP {status}: {}", short(&body)),
            retry_after,
        })
    } else {
        Err(AttemptError::Rejected {
            status: status.as_u16(),
            body,
        })
    }
}

/// Retry-After is either delay-seconds or an HTTP date.
fn retry_after(resp: &Response) -> Option<Duration> {
    let v = resp.headers().get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(SystemTime::now()).unwrap_or_default())
}

fn short(body: &str) -> String {
    super::text::truncate_chars(body.trim(), 200)
}
