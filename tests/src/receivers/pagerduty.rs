//! PagerDuty Events API v2: `POST /v2/enqueue`, JSON, answers 202 `{status, message,
//! dedup_key}` or 400 `{status, message, errors}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::{media_type, HttpReceiver, Recorder};

const MAX_BODY_BYTES: usize = 512 * 1024;
const SEVERITIES: [&str; 4] = ["critical", "error", "warning", "info"];

pub type PagerDutyReceiver = HttpReceiver<Value>;

pub async fn start() -> PagerDutyReceiver {
    let recorder = Recorder::new();
    let router = Router::new()
        .route("/v2/enqueue", post(enqueue))
        .with_state(recorder.clone());
    HttpReceiver::serve(router, recorder).await
}

/// The 400 body PagerDuty sends for an invalid event.
pub fn invalid_event(errors: &[&str]) -> String {
    json!({"status": "invalid event", "message": "Event object is invalid", "errors": errors})
        .to_string()
}

/// Incidents still open: dedup keys whose last accepted event was a trigger.
pub fn open_incidents(r: &PagerDutyReceiver) -> Vec<String> {
    let mut open: Vec<String> = Vec::new();
    for e in r.accepted() {
        let key = e["dedup_key"].as_str().unwrap_or_default().to_string();
        match e["event_action"].as_str() {
            Some("trigger") if !open.contains(&key) => open.push(key),
            Some("resolve") => open.retain(|k| k != &key),
            _ => {}
        }
    }
    open
}

async fn enqueue(
    State(rec): State<Arc<Recorder<Value>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(f) = rec.hit() {
        return f.into_response();
    }
    if body.len() > MAX_BODY_BYTES {
        return (
            StatusCode::PAYLOAD_TOO_LARGE,
            invalid_event(&["Payload exceeds 512 KB"]),
        )
            .into_response();
    }
    if media_type(&headers) != "application/json" {
        return bad(vec!["Content-Type must be application/json".into()]);
    }
    let Ok(event) = serde_json::from_slice::<Value>(&body) else {
        return bad(vec!["Event object is not valid JSON".into()]);
    };
    let errors = check(&event);
    if !errors.is_empty() {
        return bad(errors);
    }
    // PagerDuty makes a key when a trigger has none.
    let dedup_key = event["dedup_key"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| format!("pd-{}", uuid::Uuid::new_v4().simple()));
    let mut recorded = event.clone();
    recorded["dedup_key"] = json!(dedup_key);
    rec.accept(recorded);
    (
        StatusCode::ACCEPTED,
        Json(json!({"status": "success", "message": "Event processed", "dedup_key": dedup_key})),
    )
        .into_response()
}

fn bad(errors: Vec<String>) -> Response {
    let errs: Vec<&str> = errors.iter().map(String::as_str).collect();
    (
        StatusCode::BAD_REQUEST,
        [("content-type", "application/json")],
        invalid_event(&errs),
    )
        .into_response()
}

fn check(e: &Value) -> Vec<String> {
    let mut errors = Vec::new();
    let mut err = |m: &str| errors.push(m.to_string());
    match e["routing_key"].as_str() {
        Some(k) if k.len() == 32 => {}
        _ => err("'routing_key' is missing or not a 32-character integration key"),
    }
    if let Some(k) = e.get("dedup_key") {
        match k.as_str() {
            Some(k) if !k.is_empty() && k.chars().count() <= 255 => {}
            _ => err("'dedup_key' must be a string of 1 to 255 characters"),
        }
    }
    match e["event_action"].as_str() {
        Some("trigger") => check_payload(&e["payload"], &mut err),
        Some("acknowledge" | "resolve") => {
            if e.get("dedup_key").is_none() {
                err("'dedup_key' is required for acknowledge and resolve");
            }
        }
        _ => err("'event_action' must be trigger, acknowledge or resolve"),
    }
    errors
}

fn check_payload(p: &Value, err: &mut impl FnMut(&str)) {
    if !p.is_object() {
        return err("'payload' is required for trigger");
    }
    match p["summary"].as_str() {
        Some(s) if !s.is_empty() && s.chars().count() <= 1024 => {}
        Some(s) if !s.is_empty() => err("'payload.summary' is longer than 1024 characters"),
        _ => err("'payload.summary' is required"),
    }
    if p["source"].as_str().is_none_or(str::is_empty) {
        err("'payload.source' is required");
    }
    if !p["severity"]
        .as_str()
        .is_some_and(|s| SEVERITIES.contains(&s))
    {
        err("'payload.severity' must be critical, error, warning or info");
    }
    if let Some(t) = p.get("timestamp") {
        if t.as_str()
            .is_none_or(|t| chrono::DateTime::parse_from_rfc3339(t).is_err())
        {
            err("'payload.timestamp' must be an ISO 8601 timestamp");
        }
    }
    if let Some(d) = p.get("custom_details") {
        if !d.is_object() {
            err("'payload.custom_details' must be an object");
        }
    }
}
