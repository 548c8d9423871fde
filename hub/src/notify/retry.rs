//! Bounded retries with exponential backoff and jitter (backon), honouring Retry-After.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use serde::Deserialize;

use super::{ConfigError, Delivery};

/// How hard a channel tries before it reports `Failed`. Defaults suit production; tests
/// shorten them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts in all, the first included.
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
    /// Budget for all attempts and waits together.
    pub max_total_ms: u64,
    /// Timeout of one request.
    pub request_timeout_ms: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: 5,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 30_000,
            max_total_ms: 120_000,
            request_timeout_ms: 10_000,
        }
    }
}

impl RetryConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(format!("retry: {m}")));
        if self.max_attempts == 0 {
            return bad("max_attempts must be at least 1");
        }
        if self.initial_backoff_ms == 0 || self.initial_backoff_ms > self.max_backoff_ms {
            return bad("need 0 < initial_backoff_ms <= max_backoff_ms");
        }
        if self.max_total_ms == 0 || self.request_timeout_ms == 0 {
            return bad("max_total_ms and request_timeout_ms must be positive");
        }
        Ok(())
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

/// Why one attempt did not deliver.
#[derive(Debug)]
pub enum AttemptError {
    /// Worth another try (429, 5xx, connection trouble, SMTP 4xx).
    Transient {
        reason: String,
        retry_after: Option<Duration>,
    },
    /// The provider refused the message; trying again would get the same answer.
    Rejected { status: u16, body: String },
}

/// Run `attempt` until it delivers, is rejected, or the attempts or time budget run out.
/// `what` names the channel in logs (never a secret).
pub async fn deliver_with_retry<F, Fut>(cfg: &RetryConfig, what: &str, attempt: F) -> Delivery
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<String, AttemptError>>,
{
    let started = Instant::now();
    let budget = Duration::from_millis(cfg.max_total_ms);
    let attempts = AtomicU32::new(0);
    let mut attempt = attempt;
    let counted = || {
        attempts.fetch_add(1, Ordering::Relaxed);
        attempt()
    };
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(cfg.initial_backoff_ms))
        .with_max_delay(Duration::from_millis(cfg.max_backoff_ms))
        .with_max_times(cfg.max_attempts.saturating_sub(1) as usize)
        .with_total_delay(Some(budget))
        .with_jitter();
    let run = counted
        .retry(backoff)
        .when(|e| matches!(e, AttemptError::Transient { .. }))
        .adjust(|e, planned| {
            // Out of attempts: stop. Otherwise wait at least what the server asked for, unless
            // that wait alone would overrun the budget (then report the failure now).
            let planned = planned?;
            let wait = match e {
                AttemptError::Transient {
                    retry_after: Some(ra),
                    ..
                } => (*ra).max(planned),
                _ => planned,
            };
            (started.elapsed() + wait < budget).then_some(wait)
        })
        .notify(|e, wait| {
            if let AttemptError::Transient { reason, .. } = e {
                tracing::warn!(channel = what, %reason, ?wait, "alert delivery failed, retrying");
            }
        });
    let outcome = match tokio::time::timeout(budget, run).await {
        Ok(r) => r,
        Err(_) => Err(AttemptError::Transient {
            reason: format!("gave up after {budget:?}"),
            retry_after: None,
        }),
    };
    let attempts = attempts.load(Ordering::Relaxed);
    match outcome {
        Ok(provider_id) => {
            tracing::info!(channel = what, %provider_id, attempts, "alert delivered");
            Delivery::Delivered { provider_id }
        }
        Err(AttemptError::Rejected { status, body }) => {
            tracing::error!(channel = what, status, %body, "alert rejected by provider");
            Delivery::Rejected { status, body }
        }
        Err(AttemptError::Transient { reason, .. }) => {
            tracing::error!(channel = what, %reason, attempts, "alert delivery failed");
            Delivery::Failed {
                attempts,
                last_error: reason,
            }
        }
    }
}
