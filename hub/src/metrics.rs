//! `/metrics`: what one replica measured itself (its checks and their latency) and what the
//! shared database says of the whole region at scrape time (edges by state, lag per edge and
//! direction, alerts by channel and outcome), so any replica answers for the fleet.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tokio_postgres::Client;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LagLabel {
    facility: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AlertLabel {
    channel: String,
    status: String,
}

pub struct Metrics {
    registry: Registry,
    checks: Family<Outcome, Counter>,
    check_seconds: Family<Outcome, Histogram>,
    edges: Family<StateLabel, Gauge>,
    lag_seconds: Family<LagLabel, Gauge<f64, AtomicU64>>,
    lag_bytes: Family<LagLabel, Gauge>,
    retained_bytes: Family<LagLabel, Gauge>,
    alerts: Family<AlertLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("agog_hub");
        let checks = Family::<Outcome, Counter>::default();
        registry.register(
            "health_checks",
            "Health checks this replica ran, by outcome",
            checks.clone(),
        );
        let check_seconds = Family::<Outcome, Histogram>::new_with_constructor(|| {
            Histogram::new([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0])
        });
        registry.register(
            "health_check_seconds",
            "Time from request to answer (or timeout) of this replica's health checks",
            check_seconds.clone(),
        );
        let edges = Family::<StateLabel, Gauge>::default();
        registry.register("edges", "Edges of the region by state", edges.clone());
        let lag_seconds = Family::<LagLabel, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "lag_seconds",
            "Replication lag per edge: up = operational data to the regional, down = master data to the edge",
            lag_seconds.clone(),
        );
        let lag_bytes = Family::<LagLabel, Gauge>::default();
        registry.register(
            "lag_bytes",
            "WAL not yet confirmed by the subscriber, per edge and direction",
            lag_bytes.clone(),
        );
        let retained_bytes = Family::<LagLabel, Gauge>::default();
        registry.register(
            "retained_wal_bytes",
            "WAL a slot holds back: up = on the edge for the regional, down = on the master for the edge",
            retained_bytes.clone(),
        );
        let alerts = Family::<AlertLabel, Gauge>::default();
        registry.register(
            "alerts",
            "Alerts in the outbox and delivery log, by channel and status",
            alerts.clone(),
        );
        Metrics {
            registry,
            checks,
            check_seconds,
            edges,
            lag_seconds,
            lag_bytes,
            retained_bytes,
            alerts,
        }
    }

    pub fn observe_check(&self, healthy: bool, latency: Duration) {
        let label = Outcome {
            outcome: if healthy { "healthy" } else { "unhealthy" }.into(),
        };
        self.checks.get_or_create(&label).inc();
        self.check_seconds
            .get_or_create(&label)
            .observe(latency.as_secs_f64());
    }

    /// Refresh the fleet gauges from the database, then encode everything.
    pub async fn render(&self, db: &Client) -> anyhow::Result<String> {
        self.edges.clear();
        for s in ["unknown", "online", "offline", "escalated"] {
            self.edges
                .get_or_create(&StateLabel { state: s.into() })
                .set(0);
        }
        for r in db
            .query(
                "SELECT state, count(*) FROM agog_hub.edges GROUP BY state",
                &[],
            )
            .await?
        {
            self.edges
                .get_or_create(&StateLabel { state: r.get(0) })
                .set(r.get(1));
        }
        self.lag_seconds.clear();
        self.lag_bytes.clear();
        self.retained_bytes.clear();
        for r in db
            .query(
                "SELECT facility_id, lag_up_seconds, lag_down_seconds, lag_up_bytes, lag_down_bytes,
                        retained_wal_bytes, master_retained_bytes
                   FROM agog_hub.edges WHERE lag_sampled_at IS NOT NULL",
                &[],
            )
            .await?
        {
            let facility: String = r.get(0);
            for (i, direction) in [(0usize, "up"), (1, "down")] {
                let label = LagLabel {
                    facility: facility.clone(),
                    direction: direction.into(),
                };
                if let Some(v) = r.get::<_, Option<f64>>(1 + i) {
                    self.lag_seconds.get_or_create(&label).set(v);
                }
                if let Some(v) = r.get::<_, Option<i64>>(3 + i) {
                    self.lag_bytes.get_or_create(&label).set(v);
                }
                if let Some(v) = r.get::<_, Option<i64>>(5 + i) {
                    self.retained_bytes.get_or_create(&label).set(v);
                }
            }
        }
        self.alerts.clear();
        for r in db
            .query(
                "SELECT channel, status, count(*) FROM agog_hub.alerts GROUP BY 1, 2",
                &[],
            )
            .await?
        {
            self.alerts
                .get_or_create(&AlertLabel {
                    channel: r.get(0),
                    status: r.get(1),
                })
                .set(r.get(2));
        }
        let mut out = String::new();
        encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// The content type of `render`'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serve `GET /metrics` on `listen` (plain HTTP: scrapers sit on the operations network)
/// until `shutdown`.
pub async fn serve(
    listen: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    db: Client,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;
    let db = Arc::new(tokio::sync::Mutex::new(db));
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let (metrics, db) = (metrics.clone(), db.clone());
            async move {
                let db = db.lock().await;
                match metrics.render(&db).await {
                    Ok(body) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response(),
                    Err(e) => (
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("metrics unavailable: {e:#}\n"),
                    )
                        .into_response(),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("metrics listen on {listen}: {e}"))?;
    tracing::info!(%listen, "metrics served");
    Ok(tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = shutdown.changed().await;
            })
            .await;
    }))
}
