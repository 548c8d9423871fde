//! The handlers: HTML pages (each with a `?fragment=1` form that returns only its live part,
//! for the refresh script), sign-in and sign-out, and the JSON read API.

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Form, Json};
use minijinja::{context, Value};
use serde::Deserialize;
use sync_core::FacilityId;

use super::auth::{self, Operator};
use super::render::{self, render};
use super::server::{ApiOperator, PageOperator, WebState};
use super::{alerts as alert_log, edge as edge_detail, fleet as fleet_rows, freshness};

#[derive(Deserialize)]
pub(crate) struct FragmentQuery {
    #[serde(default)]
    fragment: Option<String>,
}

impl FragmentQuery {
    pub(crate) fn wanted(&self) -> bool {
        self.fragment.as_deref() == Some("1")
    }
}

pub(crate) fn error_page(status: StatusCode, message: &str) -> Response {
    let body = render(
        "error.html",
        context! { status => status.as_u16(), message => message },
    )
    .unwrap_or_else(|_| message.to_string());
    (status, Html(body)).into_response()
}

pub(crate) fn api_error(status: StatusCode, error: &str, message: &str) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": error, "message": message })),
    )
        .into_response()
}

fn db_failed(e: anyhow::Error) -> Response {
    tracing::warn!(error = %format!("{e:#}"), "web: query failed");
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "The regional database could not answer this page; it refreshes by itself.",
    )
}

/// Render a page, or only its live part for the refresh script.
fn page(
    st: &WebState,
    op: &Operator,
    q: &FragmentQuery,
    full: &str,
    live: &str,
    ctx: Value,
) -> Response {
    let ctx = context! {
        region => st.cfg.region.as_str(),
        operator => op,
        refresh_secs => st.web.refresh_secs,
        stale_after_secs => st.web.stale_after_secs,
        ..ctx
    };
    match render(if q.wanted() { live } else { full }, ctx) {
        Ok(html) => Html(html).into_response(),
        Err(e) => error_page(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

fn facility_id(id: &str) -> Option<FacilityId> {
    FacilityId::parse(id).ok()
}

type Page = Result<Response, Response>;

fn no_such_facility() -> Response {
    error_page(StatusCode::NOT_FOUND, "There is no such facility.")
}

pub(crate) async fn fleet(
    State(st): State<WebState>,
    PageOperator(op): PageOperator,
    Query(q): Query<FragmentQuery>,
) -> Page {
    let db = st.db().await?;
    let rows = fleet_rows::fleet(&**db, op.scope())
        .await
        .map_err(db_failed)?;
    let count = |s: &str| rows.iter().filter(|r| r.state == s).count();
    let counts = context! {
        online => count("online"), offline => count("offline"),
        escalated => count("escalated"), unknown => count("unknown"),
        fallback => rows.iter().filter(|r| r.mode == "cloud_fallback").count(),
    };
    let ctx =
        context! { nav => "fleet", rows => rows, counts => counts, now => chrono::Utc::now() };
    Ok(page(&st, &op, &q, "fleet.html", "fleet_live.html", ctx))
}

pub(crate) async fn inventory_index(
    State(st): State<WebState>,
    PageOperator(op): PageOperator,
    Query(q): Query<FragmentQuery>,
) -> Page {
    let db = st.db().await?;
    let rows = fleet_rows::fleet(&**db, op.scope())
        .await
        .map_err(db_failed)?;
    let ctx = context! { nav => "inventory", rows => rows };
    Ok(page(
        &st,
        &op,
        &q,
        "inventory_index.html",
        "inventory_index.html",
        ctx,
    ))
}

pub(crate) async fn edge(
    State(st): State<WebState>,
    PageOperator(op): PageOperator,
    Path(id): Path<String>,
    Query(q): Query<FragmentQuery>,
) -> Page {
    let id = facility_id(&id).ok_or_else(no_such_facility)?;
    let db = st.db().await?;
    let d = edge_detail::edge_detail(&**db, id.as_str(), op.scope(), &st.cfg.node_name())
        .await
        .map_err(db_failed)?
        .ok_or_else(no_such_facility)?;
    let ctx = context! { nav => "fleet", d => d, now => chrono::Utc::now() };
    Ok(page(&st, &op, &q, "edge.html", "edge_live.html", ctx))
}

pub(crate) async fn inventory(
    State(st): State<WebState>,
    PageOperator(op): PageOperator,
    Path(id): Path<String>,
    Query(q): Query<FragmentQuery>,
) -> Page {
    let id = facility_id(&id).ok_or_else(no_such_facility)?;
    let db = st.db().await?;
    let inv =
        freshness::facility_inventory(&**db, id.as_str(), op.scope(), st.web.stale_after_secs)
            .await
            .map_err(db_failed)?
            .ok_or_else(no_such_facility)?;
    let ctx = context! { nav => "inventory", inv => inv, now => chrono::Utc::now() };
    Ok(page(
        &st,
        &op,
        &q,
        "inventory.html",
        "inventory_live.html",
        ctx,
    ))
}

pub(crate) async fn alerts(
    State(st): State<WebState>,
    PageOperator(op): PageOperator,
    Query(q): Query<FragmentQuery>,
) -> Page {
    let db = st.db().await?;
    let rows = alert_log::alerts(&**db, op.scope(), None, 500)
        .await
        .map_err(db_failed)?;
    let ctx = context! { nav => "alerts", alerts => rows, now => chrono::Utc::now() };
    Ok(page(&st, &op, &q, "alerts.html", "alerts_live.html", ctx))
}

pub(crate) async fn style() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        render::STYLE_CSS,
    )
        .into_response()
}

pub(crate) async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        render::APP_JS,
    )
        .into_response()
}

// ---------------------------------------------------------------- sign-in

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    failed: Option<String>,
}

/// Only a path on this site (no `//host`, no scheme): no open redirect.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.into(),
        _ => "/".into(),
    }
}

/// A POST from another site (a browser says so in Origin / Sec-Fetch-Site) is refused: the
/// session cookie is SameSite=Strict as well, this also covers the sign-in form.
pub(crate) fn cross_site(headers: &HeaderMap) -> bool {
    if headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site")
    {
        return true;
    }
    match (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) {
        (Some(origin), Some(host)) if origin != "null" => {
            let origin_host = origin.split_once("://").map(|(_, h)| h).unwrap_or(origin);
            origin_host != host
        }
        _ => false,
    }
}

pub(crate) async fn login_form(
    State(st): State<WebState>,
    Query(q): Query<LoginQuery>,
) -> Response {
    let body = render(
        "login.html",
        context! {
            region => st.cfg.region.as_str(),
            next => safe_next(q.next.as_deref()),
            failed => q.failed.as_deref(),
        },
    );
    match body {
        Ok(html) => Html(html).into_response(),
        Err(e) => error_page(StatusCode::INTERNAL_SERVER_ERROR, &e),
    }
}

#[derive(Deserialize)]
pub(crate) struct PasswordLogin {
    name: String,
    password: String,
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize)]
pub(crate) struct TokenLogin {
    token: String,
    #[serde(default)]
    next: Option<String>,
}

/// Refuse a cross-site POST, then a connection for the sign-in.
async fn sign_in_db(
    st: &WebState,
    headers: &HeaderMap,
) -> Result<deadpool_postgres::Object, Response> {
    if cross_site(headers) {
        return Err(error_page(
            StatusCode::FORBIDDEN,
            "Sign in from the dashboard's own page.",
        ));
    }
    st.db().await
}

pub(crate) async fn login_password(
    State(st): State<WebState>,
    headers: HeaderMap,
    Form(f): Form<PasswordLogin>,
) -> Page {
    let db = sign_in_db(&st, &headers).await?;
    let op = auth::by_password(&**db, &f.name, &f.password).await;
    Ok(signed_in(&st, &db, op, f.next.as_deref(), "password").await)
}

pub(crate) async fn login_token(
    State(st): State<WebState>,
    headers: HeaderMap,
    Form(f): Form<TokenLogin>,
) -> Page {
    let db = sign_in_db(&st, &headers).await?;
    let op = auth::by_token(&**db, f.token.trim()).await;
    Ok(signed_in(&st, &db, op, f.next.as_deref(), "token").await)
}

async fn signed_in(
    st: &WebState,
    db: &tokio_postgres::Client,
    op: anyhow::Result<Option<Operator>>,
    next: Option<&str>,
    how: &str,
) -> Response {
    let next = safe_next(next);
    let op = match op {
        Ok(Some(op)) => op,
        Ok(None) => {
            tracing::info!(how, "dashboard sign-in refused");
            let to = format!(
                "/login?failed={how}&next={}",
                form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
            );
            return Redirect::to(&to).into_response();
        }
        Err(e) => return db_failed(e),
    };
    let id = match auth::open_session(db, &op, st.web.session_max_minutes).await {
        Ok(id) => id,
        Err(e) => return db_failed(e),
    };
    tracing::info!(operator = %op.name, how, "dashboard sign-in");
    let cookie = format!(
        "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        auth::SESSION_COOKIE,
        st.web.session_max_minutes * 60,
        if st.web.tls() { "; Secure" } else { "" }
    );
    let mut r = Redirect::to(&next).into_response();
    if let Ok(v) = cookie.parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub(crate) async fn logout(State(st): State<WebState>, headers: HeaderMap) -> Response {
    if cross_site(&headers) {
        return error_page(
            StatusCode::FORBIDDEN,
            "Sign out from the dashboard's own page.",
        );
    }
    if let Some(c) = auth::session_cookie(&headers) {
        if let Ok(db) = st.db().await {
            if let Err(e) = auth::close_session(&**db, &c).await {
                tracing::warn!(error = %format!("{e:#}"), "web: sign-out not recorded");
            }
        }
    }
    let mut r = Redirect::to("/login").into_response();
    if let Ok(v) = format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0",
        auth::SESSION_COOKIE
    )
    .parse()
    {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

// ---------------------------------------------------------------- the read API

fn api_failed(e: anyhow::Error) -> Response {
    tracing::warn!(error = %format!("{e:#}"), "web: query failed");
    api_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "unavailable",
        "the regional database did not answer",
    )
}

pub(crate) async fn api_facilities(
    State(st): State<WebState>,
    ApiOperator(op): ApiOperator,
) -> Page {
    let db = st.db().await?;
    let rows = fleet_rows::fleet(&**db, op.scope())
        .await
        .map_err(api_failed)?;
    Ok(Json(serde_json::json!({ "facilities": rows })).into_response())
}

pub(crate) async fn api_inventory(
    State(st): State<WebState>,
    ApiOperator(op): ApiOperator,
    Path(id): Path<String>,
) -> Page {
    let not_found = || {
        api_error(
            StatusCode::NOT_FOUND,
            "facility_unknown",
            "no facility with this id is visible to this token",
        )
    };
    let id = facility_id(&id).ok_or_else(not_found)?;
    let db = st.db().await?;
    let inv =
        freshness::facility_inventory(&**db, id.as_str(), op.scope(), st.web.stale_after_secs)
            .await
            .map_err(api_failed)?
            .ok_or_else(not_found)?;
    Ok(Json(inv).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/facilities/x")), "/facilities/x");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil.example")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn cross_site_posts_are_recognised() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "127.0.0.1:8444".parse().unwrap());
        assert!(!cross_site(&h));
        h.insert(header::ORIGIN, "http://127.0.0.1:8444".parse().unwrap());
        assert!(!cross_site(&h));
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(cross_site(&h));
        let mut h = HeaderMap::new();
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert!(cross_site(&h));
    }
}
