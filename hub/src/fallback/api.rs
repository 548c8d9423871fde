//! The JSON API behind the dashboard's confirmation dialog (and scripts), on the hub's HTTPS
//! API. Every call names its operator with `Authorization: Bearer <operator API key>`.
//!
//! - `GET  /api/v1/fallback` — every fallback, open and past.
//! - `GET  /api/v1/fallback/{facility}` — the dialog's facts (facility, state, the time of the
//!   last data from its edge, mode) and the open fallback with its log.
//! - `POST /api/v1/fallback/{facility}/activate` `{"reason", "expected_duration", "notify": []}`
//! - `POST /api/v1/fallback/{facility}/restore-token` `{"expires": "7d"}`

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sync_core::FacilityId;

use super::{activate, operators, record, restore, Refusal};
use crate::config::HubConfig;

pub const PATH: &str = "/api/v1/fallback";

type Answer = (StatusCode, Json<Value>);

pub fn router(cfg: Arc<HubConfig>) -> Router {
    Router::new()
        .route(PATH, get(list))
        .route(&format!("{PATH}/{{facility}}"), get(show))
        .route(
            &format!("{PATH}/{{facility}}/activate"),
            post(activate_facility),
        )
        .route(
            &format!("{PATH}/{{facility}}/restore-token"),
            post(restore_token),
        )
        .with_state(cfg)
}

fn refused(r: Refusal) -> Answer {
    (
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST),
        Json(json!({ "error": r.error, "message": r.message })),
    )
}

fn ok(v: impl serde::Serialize) -> Answer {
    (
        StatusCode::OK,
        Json(serde_json::to_value(v).unwrap_or(Value::Null)),
    )
}

/// The operator behind the request, and a connection for the answer.
async fn operator(
    cfg: &HubConfig,
    headers: &HeaderMap,
) -> Result<(String, tokio_postgres::Client), Refusal> {
    let key = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .trim()
        .to_owned();
    let db = crate::db::connect_and_migrate(&cfg.database).await?;
    let who = operators::by_key(&db, &key).await?;
    Ok((who, db))
}

fn facility(raw: &str) -> Result<FacilityId, Refusal> {
    FacilityId::parse(raw).map_err(|e| Refusal::invalid(e.to_string()))
}

async fn list(State(cfg): State<Arc<HubConfig>>, headers: HeaderMap) -> Answer {
    let r = async {
        let (_, db) = operator(&cfg, &headers).await?;
        Ok::<_, Refusal>(json!({ "fallbacks": record::list(&db, None).await? }))
    };
    r.await.map(ok).unwrap_or_else(refused)
}

async fn show(
    State(cfg): State<Arc<HubConfig>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Answer {
    let r = async {
        let (_, db) = operator(&cfg, &headers).await?;
        let f = facility(&raw)?;
        let preview = activate::preview(&db, &f).await?;
        let log = match &preview.fallback {
            Some(fb) => record::history(&db, fb.id).await?,
            None => Vec::new(),
        };
        Ok::<_, Refusal>(json!({ "preview": preview, "log": log }))
    };
    r.await.map(ok).unwrap_or_else(refused)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ActivateBody {
    reason: String,
    expected_duration: String,
    #[serde(default)]
    notify: Vec<String>,
}

async fn activate_facility(
    State(cfg): State<Arc<HubConfig>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: Bytes,
) -> Answer {
    let r = async {
        let (who, _) = operator(&cfg, &headers).await?;
        let f = facility(&raw)?;
        let b: ActivateBody = serde_json::from_slice(&body)
            .map_err(|e| Refusal::invalid(format!("the body is not an activation: {e}")))?;
        activate::activate(
            &cfg,
            activate::Request {
                facility: f,
                reason: b.reason,
                expected_duration: b.expected_duration,
                notify: b.notify,
                operator: who,
            },
        )
        .await
    };
    r.await.map(ok).unwrap_or_else(refused)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    #[serde(default = "default_expiry")]
    expires: String,
}

fn default_expiry() -> String {
    "7d".into()
}

async fn restore_token(
    State(cfg): State<Arc<HubConfig>>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    body: Bytes,
) -> Answer {
    let r = async {
        let (who, _) = operator(&cfg, &headers).await?;
        let f = facility(&raw)?;
        let b: TokenBody = if body.is_empty() {
            TokenBody {
                expires: default_expiry(),
            }
        } else {
            serde_json::from_slice(&body)
                .map_err(|e| Refusal::invalid(format!("the body is not a token request: {e}")))?
        };
        let expires_at = crate::enroll::parse_expiry(&b.expires, chrono::Utc::now())
            .map_err(Refusal::invalid)?;
        restore::issue_token(&cfg, &f, expires_at, &who).await
    };
    r.await.map(ok).unwrap_or_else(refused)
}
