//! Slack incoming webhook: `POST /services/T…/B…/…`, JSON `{text, blocks}`; answers 200 `ok`,
//! 400 `invalid_payload` / `no_text` / `invalid_blocks`, 404 `no_service` for another path.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::Value;

use super::{media_type, HttpReceiver, Recorder};

/// The webhook path this receiver serves (the part of the URL that is the secret).
pub const WEBHOOK_PATH: &str = "/services/T0AGOG000/B0ALERTS0/xoxAGOGtestsecret0000000";

pub type SlackReceiver = HttpReceiver<Value>;

pub async fn start() -> SlackReceiver {
    let recorder = Recorder::new();
    HttpReceiver::serve(router(recorder.clone()), recorder).await
}

/// The webhook's routes over `recorder`, for a server of one's own (the lab's alert sink).
pub fn router(recorder: Arc<Recorder<Value>>) -> Router {
    Router::new()
        .route(WEBHOOK_PATH, post(webhook))
        .fallback(|| async { (StatusCode::NOT_FOUND, "no_service") })
        .with_state(recorder)
}

impl SlackReceiver {
    pub fn webhook_url(&self) -> String {
        format!("{}{WEBHOOK_PATH}", self.base_url())
    }
}

async fn webhook(
    State(rec): State<Arc<Recorder<Value>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(f) = rec.hit() {
        return f.into_response();
    }
    let bad = |word: &'static str| (StatusCode::BAD_REQUEST, word).into_response();
    if media_type(&headers) != "application/json" {
        return bad("invalid_payload");
    }
    let Ok(msg) = serde_json::from_slice::<Value>(&body) else {
        return bad("invalid_payload");
    };
    let text = msg["text"].as_str().filter(|t| !t.trim().is_empty());
    let blocks = msg.get("blocks");
    if text.is_none() && blocks.is_none() {
        return bad("no_text");
    }
    if let Some(blocks) = blocks {
        if !blocks_are_valid(blocks) {
            return bad("invalid_blocks");
        }
    }
    rec.accept(msg);
    (StatusCode::OK, "ok").into_response()
}

/// The Block Kit rules our messages touch: at most 50 blocks; header plain_text up to 150
/// chars; section text up to 3000 chars; context with 1 to 10 text elements.
fn blocks_are_valid(blocks: &Value) -> bool {
    let Some(blocks) = blocks.as_array() else {
        return false;
    };
    let text_ok = |t: &Value, kinds: &[&str], max: usize| {
        kinds.contains(&t["type"].as_str().unwrap_or_default())
            && t["text"]
                .as_str()
                .is_some_and(|s| !s.is_empty() && s.chars().count() <= max)
    };
    blocks.len() <= 50
        && blocks.iter().all(|b| match b["type"].as_str() {
            Some("header") => text_ok(&b["text"], &["plain_text"], 150),
            Some("section") => text_ok(&b["text"], &["mrkdwn", "plain_text"], 3000),
            Some("context") => b["elements"].as_array().is_some_and(|els| {
                (1..=10).contains(&els.len())
                    && els
                        .iter()
                        .all(|e| text_ok(e, &["mrkdwn", "plain_text"], 3000))
            }),
            Some("divider") => true,
            _ => false,
        })
}
