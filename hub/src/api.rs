//! The hub's HTTPS API: rustls with the ring provider (TLS 1.2 and 1.3), certificate and key
//! from PEM files, axum on axum-server. `POST /api/v1/enroll`, and the cloud fallback's
//! endpoints under `/api/v1/fallback` (`fallback::api`).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sync_core::api::{ApiError, EnrollRequest, ENROLL_PATH};
use tokio::sync::{watch, Notify};

use crate::config::{ApiConfig, HubConfig};

#[derive(Clone)]
struct ApiState {
    cfg: Arc<HubConfig>,
    /// Wakes the regional reconcile after an enrollment.
    reconcile: Arc<Notify>,
    /// Wakes the tunnel task (the new edge's peer) after an enrollment.
    tunnel: Arc<Notify>,
}

/// The TLS server config: ring, TLS 1.2 and 1.3, HTTP/1.1.
pub fn tls_config(api: &ApiConfig) -> anyhow::Result<rustls::ServerConfig> {
    server_tls("api", &api.tls_cert, &api.tls_key)
}

/// A TLS server config from PEM files; `section` names the config keys in errors.
pub fn server_tls(
    section: &str,
    cert: &std::path::Path,
    key: &std::path::Path,
) -> anyhow::Result<rustls::ServerConfig> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("read {section}.tls_cert {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parse {section}.tls_cert {}", cert.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{section}.tls_cert {} holds no certificate",
        cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("read {section}.tls_key {}", key.display()))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .with_context(|| {
        format!("{section}.tls_cert and {section}.tls_key do not make a usable certificate")
    })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

pub fn router(cfg: Arc<HubConfig>, reconcile: Arc<Notify>, tunnel: Arc<Notify>) -> Router {
    Router::new()
        .route(ENROLL_PATH, post(enroll))
        .with_state(ApiState {
            cfg: cfg.clone(),
            reconcile,
            tunnel,
        })
        .merge(crate::fallback::api::router(cfg))
}

/// Serve until `stop`; fails at once on a bad certificate or an address in use.
pub async fn serve(
    cfg: Arc<HubConfig>,
    api: ApiConfig,
    reconcile: Arc<Notify>,
    tunnel: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(tls_config(&api)?));
    let listener = std::net::TcpListener::bind(api.listen)
        .with_context(|| format!("listen on {} for the API", api.listen))?;
    listener.set_nonblocking(true)?;
    let handle = axum_server::Handle::new();
    let app = router(cfg, reconcile, tunnel);
    let server = axum_server::from_tcp_rustls(listener, tls)
        .handle(handle.clone())
        .serve(app.into_make_service_with_connect_info::<SocketAddr>());
    tracing::info!(addr = %api.listen, "serving the API (HTTPS)");
    Ok(tokio::spawn(async move {
        tokio::spawn(async move {
            let _ = stop.changed().await;
            handle.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
        });
        if let Err(e) = server.await {
            tracing::error!(error = %e, "API server stopped");
        }
    }))
}

fn refuse(status: u16, error: &str, message: String) -> (StatusCode, Json<serde_json::Value>) {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST),
        Json(
            serde_json::to_value(ApiError {
                error: error.into(),
                message,
            })
            .expect("serializable"),
        ),
    )
}

async fn enroll(
    State(st): State<ApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Bytes,
) -> (StatusCode, Json<serde_json::Value>) {
    // Parsed here, not by an extractor, so a bad body gets the same JSON refusal as the rest.
    let req: EnrollRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return refuse(
                400,
                "invalid_request",
                format!("the body is not an enrollment request: {e}"),
            )
        }
    };
    match crate::enroll::enroll(&st.cfg, &req, Some(peer.ip())).await {
        Ok(resp) => {
            st.reconcile.notify_one();
            st.tunnel.notify_one();
            (
                StatusCode::OK,
                Json(serde_json::to_value(resp).expect("serializable")),
            )
        }
        Err(r) => {
            tracing::warn!(peer = %peer, facility = %req.facility_id.chars().take(64).collect::<String>(), error = r.error, message = %r.message, "enrollment refused");
            refuse(r.status, r.error, r.message)
        }
    }
}
