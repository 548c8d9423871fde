//! A `/health` endpoint whose answer a test sets: healthy, unhealthy (503), or hanging past
//! the hub's timeout. Used to put many edges in known states in front of the real hub; the
//! real agent's `/health` is tested on its own (tests/edge_agent.rs) and end to end.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use axum::Router;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    Healthy = 0,
    Unhealthy = 1,
    Hang = 2,
}

pub struct HealthEndpoint {
    pub addr: SocketAddr,
    facility: String,
    mode: Arc<AtomicU8>,
    task: tokio::task::JoinHandle<()>,
}

struct Shared {
    facility: String,
    mode: Arc<AtomicU8>,
}

async fn health(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    match s.mode.load(Ordering::SeqCst) {
        0 => (
            StatusCode::OK,
            Json(
                serde_json::json!({"status": "healthy", "facility_id": s.facility, "reasons": []}),
            ),
        ),
        1 => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                serde_json::json!({"status": "unhealthy", "facility_id": s.facility, "reasons": ["PostgreSQL is down"]}),
            ),
        ),
        _ => {
            tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
            (StatusCode::OK, Json(serde_json::json!({})))
        }
    }
}

impl HealthEndpoint {
    pub async fn start(facility: &str) -> HealthEndpoint {
        let mode = Arc::new(AtomicU8::new(Mode::Healthy as u8));
        let shared = Arc::new(Shared {
            facility: facility.to_string(),
            mode: mode.clone(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .route("/health", get(health))
            .with_state(shared);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        HealthEndpoint {
            addr,
            facility: facility.to_string(),
            mode,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/health", self.addr)
    }

    pub fn facility(&self) -> &str {
        &self.facility
    }

    pub fn set(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }
}

impl Drop for HealthEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}
