//! One health check: `GET <edge>/health` within the timeout; healthy means HTTP 200 and
//! `status == "healthy"`, exactly as the design says. The answer also carries what the edge
//! sees of replication (the regional's slot on it, its master-data subscription): the hub's
//! lag figures for the edge's side.

use std::time::{Duration, Instant};

use serde::Deserialize;

use sync_core::health::SlotHealth;

#[derive(Debug, Clone)]
pub struct CheckOutcome {
    pub healthy: bool,
    pub latency: Duration,
    /// Why it was not healthy (connection error, timeout, status, the edge's own reasons).
    pub error: Option<String>,
    /// What the edge reported about replication, when it answered with a readable body.
    pub report: Option<EdgeReport>,
    /// The whole /health body when it was JSON (healthy or not), kept for the dashboard.
    pub body: Option<serde_json::Value>,
}

/// The replication part of an edge's `/health` that the hub keeps.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EdgeReport {
    /// The regional's slot on the edge (operational data going up).
    pub up_slot: Option<SlotHealth>,
    /// Seconds since the edge's master-data subscription last heard from its publisher.
    pub down_age_seconds: Option<f64>,
}

/// Which names to pick out of the edge's report.
#[derive(Debug, Clone)]
pub struct Names {
    /// The regional's slot on the edge.
    pub up_slot: String,
    /// The edge's subscription to the master-data publisher.
    pub down_subscription: String,
}

/// Only the fields the hub reads; the rest of the payload is ignored.
#[derive(Deserialize)]
struct Body {
    status: Option<String>,
    #[serde(default)]
    reasons: Vec<String>,
    replication: Option<Replication>,
}

#[derive(Deserialize)]
struct Replication {
    #[serde(default)]
    slots: Vec<SlotHealth>,
    #[serde(default)]
    subscriptions: Vec<Subscription>,
}

#[derive(Deserialize)]
struct Subscription {
    name: String,
    last_message_age_seconds: Option<f64>,
}

pub async fn check(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    names: &Names,
) -> CheckOutcome {
    let started = Instant::now();
    let mut kept = None;
    let result = tokio::time::timeout(timeout, async {
        let resp = client
            .get(url)
            .send()
            .await
            .map_err(|e| (format!("no answer: {}", describe(&e)), None))?;
        let code = resp.status();
        let bytes = resp.bytes().await.map_err(|e| {
            (
                format!("HTTP {code}, unreadable body: {}", describe(&e)),
                None,
            )
        })?;
        // One parse: the whole document for the dashboard, the hub's fields read from it.
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| (format!("HTTP {code}, unreadable body: {e}"), None))?;
        let body = Body::deserialize(&value)
            .map_err(|e| (format!("HTTP {code}, unexpected body: {e}"), None))?;
        kept = Some(value);
        let report = body.replication.map(|r| EdgeReport {
            up_slot: r.slots.into_iter().find(|s| s.name == names.up_slot),
            down_age_seconds: r
                .subscriptions
                .into_iter()
                .find(|s| s.name == names.down_subscription)
                .and_then(|s| s.last_message_age_seconds),
        });
        let status = body.status.as_deref().unwrap_or("missing");
        if code.as_u16() == 200 && status == "healthy" {
            Ok(report)
        } else {
            let reasons = body
                .reasons
                .iter()
                .take(3)
                .map(String::as_str)
                .collect::<Vec<_>>()
                .join("; ");
            let why = if reasons.is_empty() {
                String::new()
            } else {
                format!(": {reasons}")
            };
            Err((
                format!("HTTP {}, status {status}{why}", code.as_u16()),
                report,
            ))
        }
    })
    .await;
    let latency = started.elapsed();
    match result {
        Ok(Ok(report)) => CheckOutcome {
            healthy: true,
            latency,
            error: None,
            report,
            body: kept,
        },
        Ok(Err((e, report))) => CheckOutcome {
            healthy: false,
            latency,
            error: Some(e),
            report,
            body: kept,
        },
        Err(_) => CheckOutcome {
            healthy: false,
            latency,
            error: Some(format!("no answer within {timeout:?}")),
            report: None,
            body: None,
        },
    }
}

/// The error with its causes ("connection refused" hides two levels down).
fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(&format!(": {inner}"));
        src = inner.source();
    }
    s
}
