//! Microsoft Teams webhooks: a Workflows URL (`/workflows/…`) taking an Adaptive Card message
//! and answering 202, and a legacy connector URL (`/webhookb2/…`) taking a MessageCard and
//! answering 200 `1`. Both refuse messages over about 28 KB with 413.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::Value;

use super::{media_type, HttpReceiver, Recorder};

pub const WORKFLOWS_PATH: &str = "/workflows/agog0000aaaabbbbcccc/triggers/manual/paths/invoke";
pub const CONNECTOR_PATH: &str = "/webhookb2/agog-0000@tenant/IncomingWebhook/abcdef/guid";
pub const MAX_MESSAGE_BYTES: usize = 28 * 1024;

pub type TeamsReceiver = HttpReceiver<Value>;

pub async fn start() -> TeamsReceiver {
    let recorder = Recorder::new();
    let router = Router::new()
        .route(WORKFLOWS_PATH, post(workflows))
        .route(CONNECTOR_PATH, post(connector))
        .with_state(recorder.clone());
    HttpReceiver::serve(router, recorder).await
}

impl TeamsReceiver {
    pub fn workflows_url(&self) -> String {
        format!("{}{WORKFLOWS_PATH}", self.base_url())
    }
    pub fn connector_url(&self) -> String {
        format!("{}{CONNECTOR_PATH}", self.base_url())
    }
}

fn read(rec: &Recorder<Value>, headers: &HeaderMap, body: &Bytes) -> Result<Value, Response> {
    if let Some(f) = rec.hit() {
        return Err(f.into_response());
    }
    if body.len() > MAX_MESSAGE_BYTES {
        return Err((StatusCode::PAYLOAD_TOO_LARGE, "Payload too large").into_response());
    }
    if media_type(headers) != "application/json" {
        return Err((
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        )
            .into_response());
    }
    serde_json::from_slice(body)
        .map_err(|_| (StatusCode::BAD_REQUEST, "Invalid JSON").into_response())
}

async fn workflows(
    State(rec): State<Arc<Recorder<Value>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let msg = match read(&rec, &headers, &body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    if let Err(why) = adaptive_message_is_valid(&msg) {
        return (StatusCode::BAD_REQUEST, why).into_response();
    }
    rec.accept(msg);
    StatusCode::ACCEPTED.into_response()
}

async fn connector(
    State(rec): State<Arc<Recorder<Value>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let msg = match read(&rec, &headers, &body) {
        Ok(m) => m,
        Err(r) => return r,
    };
    if msg["@type"] != "MessageCard" || msg["@context"] != "http://schema.org/extensions" {
        return (StatusCode::BAD_REQUEST, "Invalid MessageCard").into_response();
    }
    let has = |k: &str| msg[k].as_str().is_some_and(|s| !s.is_empty());
    if !has("summary") && !has("text") {
        return (StatusCode::BAD_REQUEST, "Summary or Text is required.").into_response();
    }
    rec.accept(msg);
    (StatusCode::OK, "1").into_response()
}

fn adaptive_message_is_valid(m: &Value) -> Result<(), String> {
    if m["type"] != "message" {
        return Err("'type' must be 'message'".into());
    }
    let atts = m["attachments"]
        .as_array()
        .filter(|a| !a.is_empty())
        .ok_or("'attachments' is required")?;
    for a in atts {
        if a["contentType"] != "application/vnd.microsoft.card.adaptive" {
            return Err(
                "attachment contentType must be application/vnd.microsoft.card.adaptive".into(),
            );
        }
        let c = &a["content"];
        if c["type"] != "AdaptiveCard" || !c["version"].is_string() {
            return Err("content must be an AdaptiveCard with a version".into());
        }
        let body = c["body"]
            .as_array()
            .filter(|b| !b.is_empty())
            .ok_or("card body is empty")?;
        for el in body {
            match el["type"].as_str() {
                Some("TextBlock") if el["text"].as_str().is_some_and(|t| !t.is_empty()) => {}
                Some("FactSet")
                    if el["facts"].as_array().is_some_and(|f| {
                        f.iter()
                            .all(|x| x["title"].is_string() && x["value"].is_string())
                    }) => {}
                _ => return Err(format!("unsupported or incomplete card element {el}")),
            }
        }
    }
    Ok(())
}
