//! The lab's alert sink: a Slack-compatible incoming webhook (the tests' Slack receiver, which
//! checks what Slack checks) run as a process of its own, so alerts of `lab fail` land
//! somewhere a person can read them: `GET /` (a page) and `GET /messages` (JSON).

use std::net::SocketAddr;
use std::sync::Arc;

use agog_tests::receivers::{slack, Recorder};
use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::Value;

pub use slack::WEBHOOK_PATH;

/// Serve on 127.0.0.1:`port` until killed.
pub async fn run(port: u16) -> anyhow::Result<()> {
    let recorder: Arc<Recorder<Value>> = Recorder::new();
    let app = Router::new()
        .route("/", get(page))
        .route("/messages", get(messages))
        .with_state(recorder.clone())
        .merge(slack::router(recorder));
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    eprintln!("lab sink: webhook on http://127.0.0.1:{port}{WEBHOOK_PATH}");
    axum::serve(listener, app).await?;
    Ok(())
}

async fn messages(State(rec): State<Arc<Recorder<Value>>>) -> Json<Vec<Value>> {
    Json(rec.accepted())
}

async fn page(State(rec): State<Arc<Recorder<Value>>>) -> Html<String> {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let items: String = rec
        .accepted()
        .iter()
        .rev()
        .map(|m| {
            format!(
                "<li>{}</li>",
                escape(m["text"].as_str().unwrap_or("(no text)"))
            )
        })
        .collect();
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Lab alert sink</title></head>\
         <body><h1>Alerts received by the lab's Slack-style sink</h1><ol reversed>{items}</ol></body></html>"
    ))
}
