//! The provisioning pages: the design's self-service form (`/provision/new`), the requests and
//! each one's progress (`/provision`, `/provision/{facility}`), and, for the IT contact without
//! an account, the setup page and the image download behind the secret key of their email.

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Form;
use minijinja::context;

use super::pages::{cross_site, error_page, FragmentQuery};
use super::render::render;
use super::server::{PageOperator, WebState};
use crate::provision::form::ProvisionForm;
use crate::provision::{image, instructions, request};

type Page = Result<Response, Response>;

fn failed(e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "web: provisioning page failed");
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "The regional database could not answer this page; try again in a moment.",
    )
}

fn not_configured() -> Response {
    error_page(
        StatusCode::NOT_FOUND,
        "Provisioning is not set up on this hub ([provision] in hub.toml).",
    )
}

fn html(status: StatusCode, name: &str, ctx: minijinja::Value) -> Page {
    let body = render(name, ctx).map_err(|e| error_page(StatusCode::INTERNAL_SERVER_ERROR, &e))?;
    Ok((status, Html(body)).into_response())
}

pub(crate) async fn list(State(st): State<WebState>, PageOperator(op): PageOperator) -> Page {
    st.cfg.provision.as_ref().ok_or_else(not_configured)?;
    let db = st.db().await?;
    let rows = request::list(&**db, op.scope()).await.map_err(failed)?;
    html(
        StatusCode::OK,
        "provision_list.html",
        context! { region => st.cfg.region.as_str(), operator => op, nav => "provision", rows => rows },
    )
}

fn form_page(
    st: &WebState,
    op: &super::auth::Operator,
    form: &ProvisionForm,
    errors: &crate::provision::form::FieldErrors,
    status: StatusCode,
) -> Page {
    html(
        status,
        "provision_form.html",
        context! {
            region => st.cfg.region.as_str(), operator => op, nav => "provision",
            f => form, errors => errors, error_count => errors.len(),
        },
    )
}

pub(crate) async fn new_form(State(st): State<WebState>, PageOperator(op): PageOperator) -> Page {
    st.cfg.provision.as_ref().ok_or_else(not_configured)?;
    let form = ProvisionForm {
        network_mode: "dhcp".into(),
        netmask: "255.255.255.0".into(),
        vpn_type: "wireguard".into(),
        hardware_size: "medium".into(),
        tenant: op.tenant.clone().unwrap_or_default(),
        ..ProvisionForm::default()
    };
    form_page(&st, &op, &form, &Default::default(), StatusCode::OK)
}

pub(crate) async fn submit(
    State(st): State<WebState>,
    PageOperator(op): PageOperator,
    headers: HeaderMap,
    Form(form): Form<ProvisionForm>,
) -> Page {
    let cfg = st.cfg.provision.as_ref().ok_or_else(not_configured)?;
    if cross_site(&headers) {
        return Err(error_page(
            StatusCode::FORBIDDEN,
            "Submit the form from the dashboard's own page.",
        ));
    }
    let served = st.cfg.tunnel.as_ref().map(|t| t.kind.as_str());
    let checked = match (
        form.check(op.scope()),
        crate::provision::form::unserved_vpn(&form.vpn_type, served),
    ) {
        (Ok(r), None) => r,
        (result, vpn) => {
            let mut errors = result.err().unwrap_or_default();
            if let Some(msg) = vpn {
                errors.insert("vpn_type", msg);
            }
            return form_page(&st, &op, &form, &errors, StatusCode::UNPROCESSABLE_ENTITY);
        }
    };
    // Its own connection: the request is one transaction.
    let mut db = crate::db::connect_and_migrate(&st.cfg.database)
        .await
        .map_err(failed)?;
    let made = request::create(&st.cfg, cfg, &mut db, &checked, &op.name)
        .await
        .map_err(|e| {
            tracing::warn!(error = %format!("{e:#}"), "provisioning request failed");
            if let Some(full) = e.downcast_ref::<request::TunnelRangeFull>() {
                return error_page(StatusCode::CONFLICT, &format!("Nothing was made: {full}."));
            }
            error_page(
                StatusCode::SERVICE_UNAVAILABLE,
                "The request could not be recorded (nothing was made); try again in a moment.",
            )
        })?;
    Ok(Redirect::to(&format!("/provision/{}", made.facility_id)).into_response())
}

pub(crate) async fn status(
    State(st): State<WebState>,
    PageOperator(op): PageOperator,
    Path(facility): Path<String>,
    Query(q): Query<FragmentQuery>,
) -> Page {
    let cfg = st.cfg.provision.as_ref().ok_or_else(not_configured)?;
    let db = st.db().await?;
    let p = request::by_facility(&**db, &facility, op.scope())
        .await
        .map_err(failed)?
        .ok_or_else(|| {
            error_page(
                StatusCode::NOT_FOUND,
                "There is no such provisioning request.",
            )
        })?;
    let ctx = context! {
        region => st.cfg.region.as_str(), operator => op, nav => "provision", p => p,
        refresh_secs => st.web.refresh_secs,
        setup_url => instructions::setup_url(cfg, &p),
        download_url => instructions::download_url(cfg, &p),
    };
    let name = if q.wanted() {
        "provision_live.html"
    } else {
        "provision_status.html"
    };
    html(StatusCode::OK, name, ctx)
}

/// The IT contact's page: no account, the key from the email is the credential.
pub(crate) async fn setup(
    State(st): State<WebState>,
    Path(key): Path<String>,
    Query(q): Query<FragmentQuery>,
) -> Page {
    st.cfg.provision.as_ref().ok_or_else(not_configured)?;
    let db = st.db().await?;
    let p = request::by_setup_key(&**db, &key)
        .await
        .map_err(failed)?
        .ok_or_else(|| {
            error_page(
                StatusCode::NOT_FOUND,
                "This setup link is not known; use the link from your setup email.",
            )
        })?;
    let ctx =
        context! { region => st.cfg.region.as_str(), p => p, refresh_secs => st.web.refresh_secs };
    let name = if q.wanted() {
        "setup_live.html"
    } else {
        "setup.html"
    };
    html(StatusCode::OK, name, ctx)
}

pub(crate) async fn download(
    State(st): State<WebState>,
    Path((key, file)): Path<(String, String)>,
) -> Page {
    st.cfg.provision.as_ref().ok_or_else(not_configured)?;
    let db = st.db().await?;
    let unknown = || {
        error_page(
            StatusCode::NOT_FOUND,
            "This download link is not known; use the link from your setup email.",
        )
    };
    let p = request::by_setup_key(&**db, &key)
        .await
        .map_err(failed)?
        .ok_or_else(unknown)?;
    if file != image::file_name(&p.facility_id) {
        return Err(unknown());
    }
    let path = match (&p.image_status[..], &p.image_file) {
        ("ready", Some(f)) => std::path::PathBuf::from(f),
        _ => {
            return Err(error_page(
                StatusCode::CONFLICT,
                "The image is not ready yet; the setup email comes when it is.",
            ))
        }
    };
    let f = tokio::fs::File::open(&path).await.map_err(|e| {
        tracing::warn!(file = %path.display(), error = %e, "provisioned image missing");
        error_page(
            StatusCode::GONE,
            "The image is no longer on the hub; ask for a new one.",
        )
    })?;
    let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
    let stream = tokio_util::io::ReaderStream::new(f);
    let mut r = Body::from_stream(stream).into_response();
    let h = r.headers_mut();
    for (k, v) in [
        (header::CONTENT_TYPE, "application/x-xz".to_string()),
        (header::CONTENT_LENGTH, len.to_string()),
        (
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{file}\""),
        ),
        (
            header::HeaderName::from_static("x-checksum-sha256"),
            p.image_sha256.clone().unwrap_or_default(),
        ),
    ] {
        if let Ok(v) = v.parse() {
            h.insert(k, v);
        }
    }
    Ok(r)
}
