//! The dashboard's cloud-fallback dialog (`/facilities/{id}/fallback`): the design's "disaster
//! recovery activation" box. GET shows the facts an operator decides on (the facility, its
//! state, the time of the last data that arrived from its edge) and the form; POST activates
//! through the same `fallback::activate` as the CLI and the JSON API, under the signed-in
//! operator's name, so the fallback log says who did it.
//!
//! Who may: a dashboard operator whose name holds the cloud fallback right (`hub fallback grant
//! <name>`), the one list of that right for the CLI, the API keys and the dashboard. A
//! tenant-scoped operator reaches only its tenant's facilities here as everywhere else.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Form;
use minijinja::context;
use serde::Deserialize;
use sync_core::FacilityId;

use super::auth::Operator;
use super::pages::{cross_site, error_page};
use super::render::render;
use super::server::{PageOperator, WebState};
use crate::fallback::{activate, operators, record, Refusal};

type Page = Result<Response, Response>;

fn no_such_facility() -> Response {
    error_page(StatusCode::NOT_FOUND, "There is no such facility.")
}

fn failed(e: impl std::fmt::Display) -> Response {
    tracing::warn!(error = %e, "web: fallback page failed");
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "The regional database could not answer this page; try again in a moment.",
    )
}

/// What the operator typed, kept when the form comes back with an error.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ActivationForm {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    expected_duration: String,
    /// Workers' addresses, separated by commas, spaces or new lines.
    #[serde(default)]
    notify: String,
}

impl ActivationForm {
    fn addresses(&self) -> Vec<String> {
        self.notify
            .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
            .filter(|a| !a.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// Errors next to their fields; the activation re-checks everything.
    fn field_errors(&self) -> Vec<(&'static str, String)> {
        let mut errors = Vec::new();
        let one_line = |v: &str, max: usize| {
            let v = v.trim();
            !v.is_empty() && v.chars().count() <= max && !v.chars().any(char::is_control)
        };
        if !one_line(&self.reason, 500) {
            errors.push((
                "reason",
                "Say why, in 1 to 500 characters on one line (for example \"Fire - building destroyed\").".into(),
            ));
        }
        if !one_line(&self.expected_duration, 200) {
            errors.push((
                "expected_duration",
                "Say how long, in 1 to 200 characters on one line (for example \"3-6 months rebuild\").".into(),
            ));
        }
        let bad: Vec<String> = self
            .addresses()
            .into_iter()
            .filter(|a| a.parse::<lettre::message::Mailbox>().is_err())
            .collect();
        if !bad.is_empty() {
            errors.push((
                "notify",
                format!("Not an email address: {}.", bad.join(", ")),
            ));
        }
        errors
    }
}

/// The facility, if this operator may see it.
async fn visible(
    db: &tokio_postgres::Client,
    op: &Operator,
    id: &FacilityId,
) -> Result<bool, tokio_postgres::Error> {
    Ok(db
        .query_opt(
            "SELECT 1 FROM agog_hub.edges WHERE facility_id = $1 AND ($2::text IS NULL OR tenant_id = $2)",
            &[&id.as_str(), &op.scope()],
        )
        .await?
        .is_some())
}

/// Render the dialog (or, with an open fallback, its state and log).
async fn dialog(
    st: &WebState,
    op: &Operator,
    id: &FacilityId,
    form: &ActivationForm,
    errors: &[(&'static str, String)],
    refusal: Option<&Refusal>,
) -> Page {
    let db = st.db().await?;
    if !visible(&db, op, id).await.map_err(failed)? {
        return Err(no_such_facility());
    }
    let preview = activate::preview(&db, id).await.map_err(|r| {
        if r.status == 404 {
            no_such_facility()
        } else {
            failed(r.message)
        }
    })?;
    let log = match &preview.fallback {
        Some(fb) => record::history(&**db, fb.id).await.map_err(failed)?,
        None => Vec::new(),
    };
    let may = operators::require(&**db, &op.name).await.is_ok();
    let last_data_age = preview
        .last_data_at
        .map(|t| (chrono::Utc::now() - t).num_milliseconds() as f64 / 1000.0);
    let errors: std::collections::BTreeMap<&str, &str> =
        errors.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let status = match (refusal, errors.is_empty(), may) {
        (Some(r), _, _) => StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST),
        (None, false, _) => StatusCode::UNPROCESSABLE_ENTITY,
        (None, true, false) => StatusCode::FORBIDDEN,
        _ => StatusCode::OK,
    };
    let html = render(
        "fallback.html",
        context! {
            region => st.cfg.region.as_str(),
            operator => op,
            nav => "fleet",
            p => preview,
            log => log,
            may => may,
            last_data_age => last_data_age,
            form => context! {
                reason => form.reason.trim(),
                expected_duration => form.expected_duration.trim(),
                notify => form.notify.trim(),
            },
            errors => errors,
            refusal => refusal.map(|r| r.message.clone()),
        },
    )
    .map_err(|e| error_page(StatusCode::INTERNAL_SERVER_ERROR, &e))?;
    Ok((status, Html(html)).into_response())
}

pub(crate) async fn show(
    State(st): State<WebState>,
    PageOperator(op): PageOperator,
    Path(id): Path<String>,
) -> Page {
    let id = FacilityId::parse(&id).map_err(|_| no_such_facility())?;
    dialog(&st, &op, &id, &ActivationForm::default(), &[], None).await
}

pub(crate) async fn activate_facility(
    State(st): State<WebState>,
    PageOperator(op): PageOperator,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<ActivationForm>,
) -> Page {
    if cross_site(&headers) {
        return Err(error_page(
            StatusCode::FORBIDDEN,
            "Activate from the dashboard's own page.",
        ));
    }
    let id = FacilityId::parse(&id).map_err(|_| no_such_facility())?;
    {
        let db = st.db().await?;
        if !visible(&db, &op, &id).await.map_err(failed)? {
            return Err(no_such_facility());
        }
    }
    let errors = form.field_errors();
    if !errors.is_empty() {
        return dialog(&st, &op, &id, &form, &errors, None).await;
    }
    let request = activate::Request {
        facility: id.clone(),
        reason: form.reason.clone(),
        expected_duration: form.expected_duration.clone(),
        notify: form.addresses(),
        operator: op.name.clone(),
    };
    match activate::activate(&st.cfg, request).await {
        Ok(done) => {
            tracing::info!(facility = %id, operator = %op.name, "cloud fallback activated from the dashboard");
            let html = render(
                "fallback_done.html",
                context! {
                    region => st.cfg.region.as_str(),
                    operator => op,
                    nav => "fleet",
                    a => done,
                },
            )
            .map_err(|e| error_page(StatusCode::INTERNAL_SERVER_ERROR, &e))?;
            Ok(Html(html).into_response())
        }
        Err(r) => dialog(&st, &op, &id, &form, &[], Some(&r)).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_names_each_wrong_field() {
        let f = ActivationForm {
            reason: "  ".into(),
            expected_duration: "3-6 months".into(),
            notify: "a@example.com, not-an-address\nb@example.com".into(),
        };
        let e = f.field_errors();
        let fields: Vec<&str> = e.iter().map(|(k, _)| *k).collect();
        assert_eq!(fields, ["reason", "notify"]);
        assert!(e[1].1.contains("not-an-address"), "{}", e[1].1);
        assert_eq!(
            f.addresses(),
            ["a@example.com", "not-an-address", "b@example.com"]
        );
        let ok = ActivationForm {
            reason: "Fire - building destroyed".into(),
            expected_duration: "3-6 months rebuild".into(),
            notify: String::new(),
        };
        assert!(ok.field_errors().is_empty());
        assert!(ok.addresses().is_empty());
    }
}
