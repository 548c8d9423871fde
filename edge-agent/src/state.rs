//! What the agent's tasks share: the cached health report, the last reconcile, the server state.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use sync_core::health::{HealthReport, ReconcileHealth, TunnelHealth};

use crate::config::EdgeConfig;
use crate::postgres::ServerState;

pub struct AgentState {
    pub config: EdgeConfig,
    pub started: Instant,
    pub server: Arc<ServerState>,
    /// The last probe's report; `/health` serves it without touching PostgreSQL.
    pub report: Mutex<Option<(Instant, HealthReport)>>,
    pub reconcile: Mutex<ReconcileHealth>,
    /// Apply/sync error counts per subscription at the last change, to tell a fresh error from
    /// an old one (the counters are cumulative).
    pub error_marks: Mutex<std::collections::HashMap<String, (i64, Instant)>>,
    /// The tunnel as its watcher last saw it (`None`: no tunnel configured).
    pub tunnel: Mutex<Option<TunnelHealth>>,
}

impl AgentState {
    pub fn new(config: EdgeConfig) -> Arc<Self> {
        Arc::new(AgentState {
            config,
            started: Instant::now(),
            server: Arc::new(ServerState::default()),
            report: Mutex::new(None),
            reconcile: Mutex::new(ReconcileHealth {
                last_run_at: None,
                ok: false,
                steps_applied: 0,
                blocked: vec![],
                error: Some("not run yet".into()),
            }),
            error_marks: Mutex::new(Default::default()),
            tunnel: Mutex::new(None),
        })
    }
}
