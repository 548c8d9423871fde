//! `GET /health` on port 4010: the cached probe result. HTTP 200 only when healthy (the hub's
//! check is "200 and status == healthy"), 503 otherwise, with the same JSON body.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use axum::Router;
use sync_core::health::Status;

use crate::state::AgentState;

async fn health(State(state): State<Arc<AgentState>>) -> impl IntoResponse {
    let stale_after = Duration::from_secs(state.config.health.probe_interval_secs * 3 + 5);
    let cached = state.report.lock().unwrap().clone();
    match cached {
        Some((at, mut report)) => {
            report.uptime_seconds = state.started.elapsed().as_secs();
            if at.elapsed() > stale_after {
                // The probe loop itself is stuck: say so rather than serve an old "healthy".
                report.status = Status::Unhealthy;
                report.reasons.insert(
                    0,
                    format!("probes have not completed for {} s", at.elapsed().as_secs()),
                );
            }
            let code = if report.status == Status::Healthy {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            (code, Json(serde_json::to_value(report).unwrap_or_default()))
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({
                "status": "unhealthy",
                "reasons": ["starting: the first probe has not completed"],
                "facility_id": state.config.facility.as_str(),
                "version": env!("CARGO_PKG_VERSION"),
                "uptime_seconds": state.started.elapsed().as_secs(),
            })),
        ),
    }
}

pub async fn serve(state: Arc<AgentState>, listener: tokio::net::TcpListener) {
    let app = Router::new()
        .route("/health", get(health))
        .with_state(state);
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "health server stopped");
    }
}
