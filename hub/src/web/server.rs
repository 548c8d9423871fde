//! The listener, the router, the shared state, security headers and the two ways in
//! (session cookie for pages, bearer token for the API).

use std::sync::Arc;

use anyhow::Context;
use axum::extract::{FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio::sync::watch;

use super::auth::{self, Operator};
use super::config::WebConfig;
use super::{fallback, pages, provision};
use crate::config::HubConfig;

#[derive(Clone)]
pub(crate) struct WebState {
    pub cfg: Arc<HubConfig>,
    pub web: Arc<WebConfig>,
    pub pool: Pool,
}

impl WebState {
    pub async fn db(&self) -> Result<deadpool_postgres::Object, Response> {
        self.pool.get().await.map_err(|e| {
            tracing::warn!(error = %e, "web: no database connection");
            pages::error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "The regional database does not answer; this page will work again when it does.",
            )
        })
    }
}

fn pool(conninfo: &str) -> anyhow::Result<Pool> {
    let mut pg: tokio_postgres::Config = conninfo.parse().context("database")?;
    if pg.get_connect_timeout().is_none() {
        pg.connect_timeout(sync_core::connect::DEFAULT_CONNECT_TIMEOUT);
    }
    pg.application_name("agog-hub-web");
    let mgr = Manager::from_config(
        pg,
        tokio_postgres::NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Ok(Pool::builder(mgr)
        .max_size(8)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(std::time::Duration::from_secs(10)))
        .create_timeout(Some(std::time::Duration::from_secs(10)))
        .build()?)
}

pub(crate) fn router(state: WebState) -> Router {
    Router::new()
        .route("/", get(pages::fleet))
        .route("/login", get(pages::login_form).post(pages::login_password))
        .route("/login/token", post(pages::login_token))
        .route("/logout", post(pages::logout))
        .route("/inventory", get(pages::inventory_index))
        .route("/facilities/{id}", get(pages::edge))
        .route("/facilities/{id}/inventory", get(pages::inventory))
        .route(
            "/facilities/{id}/fallback",
            get(fallback::show).post(fallback::activate_facility),
        )
        .route("/alerts", get(pages::alerts))
        .route("/provision", get(provision::list))
        .route(
            "/provision/new",
            get(provision::new_form).post(provision::submit),
        )
        .route("/provision/{facility}", get(provision::status))
        .route("/setup/{key}", get(provision::setup))
        .route("/downloads/{key}/{file}", get(provision::download))
        .route("/static/style.css", get(pages::style))
        .route("/static/app.js", get(pages::script))
        .route("/api/v1/facilities", get(pages::api_facilities))
        .route(
            "/api/v1/facilities/{id}/inventory",
            get(pages::api_inventory),
        )
        .fallback(|| async { pages::error_page(StatusCode::NOT_FOUND, "There is no such page.") })
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// No framing, no foreign scripts or styles, no caching of fleet data, no referrer leaks.
async fn security_headers(req: Request, next: Next) -> Response {
    let is_static = req.uri().path().starts_with("/static/");
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !is_static {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// A page's operator, from the session cookie. Without one: to the sign-in page (a page) or
/// 401 (the live part a page fetches, which then goes to the sign-in page itself).
pub(crate) struct PageOperator(pub Operator);

impl FromRequestParts<WebState> for PageOperator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &WebState) -> Result<Self, Response> {
        if let Some(c) = auth::session_cookie(&parts.headers) {
            let db = st.db().await?;
            match auth::by_session(&**db, &c, st.web.session_idle_minutes).await {
                Ok(Some(op)) => return Ok(PageOperator(op)),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "web: session lookup failed");
                    return Err(pages::error_page(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "Sessions cannot be checked right now; try again in a moment.",
                    ));
                }
            }
        }
        let fragment = parts
            .uri
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "fragment=1"));
        if fragment {
            return Err(StatusCode::UNAUTHORIZED.into_response());
        }
        let next = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let target = format!(
            "/login?next={}",
            form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
        );
        Err(Redirect::to(&target).into_response())
    }
}

/// An API caller's operator, from `Authorization: Bearer agog_ot_...`.
pub(crate) struct ApiOperator(pub Operator);

impl FromRequestParts<WebState> for ApiOperator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &WebState) -> Result<Self, Response> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        let unauthorized = |message: &str| {
            let mut r = pages::api_error(StatusCode::UNAUTHORIZED, "unauthorized", message);
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"agog-hub\""),
            );
            r
        };
        let Some(token) = token else {
            return Err(unauthorized(
                "send Authorization: Bearer <token> (hub operator token <name> makes one)",
            ));
        };
        let db = st.db().await?;
        match auth::by_token(&**db, token).await {
            Ok(Some(op)) => Ok(ApiOperator(op)),
            Ok(None) => Err(unauthorized(
                "the token is unknown, expired or revoked, or its operator is disabled",
            )),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "web: token lookup failed");
                Err(pages::api_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "tokens cannot be checked right now",
                ))
            }
        }
    }
}

/// Serve the dashboard until `stop`; fails at once on a bad certificate or an address in use.
pub async fn serve(
    cfg: Arc<HubConfig>,
    web: WebConfig,
    mut stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let state = WebState {
        pool: pool(&cfg.database)?,
        cfg,
        web: Arc::new(web.clone()),
    };
    // Fail now on a broken template rather than on the first visitor.
    let _ = super::render::env();
    let listener = std::net::TcpListener::bind(web.listen)
        .with_context(|| format!("listen on {} for the dashboard", web.listen))?;
    listener.set_nonblocking(true)?;
    let app = router(state);
    match (&web.tls_cert, &web.tls_key) {
        (Some(cert), Some(key)) => {
            let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(
                crate::api::server_tls("web", cert, key)?,
            ));
            let handle = axum_server::Handle::new();
            let server = axum_server::from_tcp_rustls(listener, tls)
                .handle(handle.clone())
                .serve(app.into_make_service());
            tracing::info!(addr = %web.listen, "serving the dashboard (HTTPS)");
            Ok(tokio::spawn(async move {
                tokio::spawn(async move {
                    let _ = stop.changed().await;
                    handle.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
                });
                if let Err(e) = server.await {
                    tracing::error!(error = %e, "dashboard stopped");
                }
            }))
        }
        _ => {
            let listener = tokio::net::TcpListener::from_std(listener)?;
            tracing::info!(addr = %web.listen, "serving the dashboard (HTTP, loopback only)");
            Ok(tokio::spawn(async move {
                let shutdown = async move {
                    let _ = stop.changed().await;
                };
                if let Err(e) = axum::serve(listener, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                {
                    tracing::error!(error = %e, "dashboard stopped");
                }
            }))
        }
    }
}
