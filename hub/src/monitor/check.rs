//! One health check: `GET <edge>/health` within the timeout; healthy means HTTP 200 and
//! `status == "healthy"`, exactly as the design says.

use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
pub struct CheckOutcome {
    pub healthy: bool,
    pub latency: Duration,
    /// Why it was not healthy (connection error, timeout, status, the edge's own reasons).
    pub error: Option<String>,
}

pub async fn check(client: &reqwest::Client, url: &str, timeout: Duration) -> CheckOutcome {
    let started = Instant::now();
    let result = tokio::time::timeout(timeout, async {
        let resp = client
            .get(url)
            .send()
            .await
            .map_err(|e| format!("no answer: {}", describe(&e)))?;
        let code = resp.status();
        let body: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| format!("HTTP {code}, unreadable body: {}", describe(&e)))?;
        let status = body["status"].as_str().unwrap_or("missing");
        if code.as_u16() == 200 && status == "healthy" {
            Ok(())
        } else {
            let reasons = body["reasons"].as_array().map(|r| {
                r.iter()
                    .filter_map(|v| v.as_str())
                    .take(3)
                    .collect::<Vec<_>>()
                    .join("; ")
            });
            Err(format!(
                "HTTP {}, status {status}{}",
                code.as_u16(),
                reasons
                    .filter(|r| !r.is_empty())
                    .map(|r| format!(": {r}"))
                    .unwrap_or_default()
            ))
        }
    })
    .await;
    let latency = started.elapsed();
    match result {
        Ok(Ok(())) => CheckOutcome {
            healthy: true,
            latency,
            error: None,
        },
        Ok(Err(e)) => CheckOutcome {
            healthy: false,
            latency,
            error: Some(e),
        },
        Err(_) => CheckOutcome {
            healthy: false,
            latency,
            error: Some(format!("no answer within {timeout:?}")),
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
