//! Twilio REST API: `POST /2010-04-01/Accounts/{AccountSid}/Messages.json` and `Calls.json`,
//! form-encoded, HTTP Basic auth `AccountSid:AuthToken`; answers 201 with a `sid`, 400 with
//! Twilio's error `code`, 401 code 20003 for bad credentials.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine;
use serde_json::{json, Value};

use super::{media_type, HttpReceiver, Recorder};

pub const ACCOUNT_SID: &str = "AC0123456789abcdef0123456789abcdef";
pub const AUTH_TOKEN: &str = "agogtesttoken0123456789abcdef00";

/// One accepted request: which resource (`Messages` or `Calls`) and its form fields.
#[derive(Debug, Clone)]
pub struct TwilioRequest {
    pub resource: String,
    pub form: BTreeMap<String, String>,
    pub sid: String,
}

pub type TwilioReceiver = HttpReceiver<TwilioRequest>;

pub async fn start() -> TwilioReceiver {
    let recorder = Recorder::new();
    let router = Router::new()
        .route("/2010-04-01/Accounts/{sid}/{resource}", post(create))
        .with_state(recorder.clone());
    HttpReceiver::serve(router, recorder).await
}

/// Twilio's error body.
pub fn error_body(status: u16, code: u32, message: &str) -> String {
    json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status,
    })
    .to_string()
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        error_body(status.as_u16(), code, message),
    )
        .into_response()
}

fn authorized(headers: &HeaderMap) -> bool {
    let expected =
        base64::engine::general_purpose::STANDARD.encode(format!("{ACCOUNT_SID}:{AUTH_TOKEN}"));
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Basic {expected}"))
}

pub fn is_e164(n: &str) -> bool {
    n.strip_prefix('+').is_some_and(|d| {
        (2..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()) && !d.starts_with('0')
    })
}

async fn create(
    State(rec): State<Arc<Recorder<TwilioRequest>>>,
    Path((sid, resource)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(f) = rec.hit() {
        return f.into_response();
    }
    if !authorized(&headers) {
        return error(StatusCode::UNAUTHORIZED, 20003, "Authenticate");
    }
    let resource = match resource.as_str() {
        "Messages.json" => "Messages",
        "Calls.json" => "Calls",
        _ => {
            return error(
                StatusCode::NOT_FOUND,
                20404,
                "The requested resource was not found",
            )
        }
    };
    if sid != ACCOUNT_SID {
        return error(
            StatusCode::NOT_FOUND,
            20404,
            "The requested resource was not found",
        );
    }
    if media_type(&headers) != "application/x-www-form-urlencoded" {
        return error(
            StatusCode::BAD_REQUEST,
            20001,
            "Content-Type must be application/x-www-form-urlencoded",
        );
    }
    let mut form = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(&body) {
        if form.insert(k.to_string(), v.to_string()).is_some() {
            return error(
                StatusCode::BAD_REQUEST,
                21201,
                &format!("Parameter {k} given twice"),
            );
        }
    }
    let checked = match resource {
        "Messages" => check_message(&form),
        _ => check_call(&form),
    };
    if let Err((code, message)) = checked {
        return error(StatusCode::BAD_REQUEST, code, &message);
    }
    let prefix = if resource == "Messages" { "SM" } else { "CA" };
    let new_sid = format!("{prefix}{}", uuid::Uuid::new_v4().simple());
    let answer: Value = json!({
        "sid": new_sid,
        "account_sid": ACCOUNT_SID,
        "to": form.get("To"),
        "from": form.get("From"),
        "status": "queued",
        "api_version": "2010-04-01",
        "uri": format!("/2010-04-01/Accounts/{ACCOUNT_SID}/{resource}/{new_sid}.json"),
    });
    rec.accept(TwilioRequest {
        resource: resource.into(),
        form,
        sid: new_sid,
    });
    (StatusCode::CREATED, Json(answer)).into_response()
}

type Check = Result<(), (u32, String)>;

fn check_numbers(form: &BTreeMap<String, String>, from_or_service: bool) -> Check {
    match form.get("To") {
        Some(to) if is_e164(to) => {}
        Some(to) => {
            return Err((
                21211,
                format!("The 'To' number {to} is not a valid phone number."),
            ))
        }
        None => return Err((21604, "A 'To' phone number is required.".into())),
    }
    match form.get("From") {
        Some(from) if is_e164(from) => Ok(()),
        Some(from) => Err((
            21212,
            format!("The 'From' number {from} is not a valid phone number."),
        )),
        None if from_or_service && form.contains_key("MessagingServiceSid") => Ok(()),
        None => Err((21603, "A 'From' phone number is required.".into())),
    }
}

fn check_message(form: &BTreeMap<String, String>) -> Check {
    check_numbers(form, true)?;
    match form.get("Body") {
        Some(b) if b.chars().count() > 1600 => {
            return Err((
                21617,
                "The concatenated message body exceeds the 1600 character limit.".into(),
            ))
        }
        Some(b) if !b.is_empty() => {}
        _ => return Err((21602, "Message body is required.".into())),
    }
    if let Some(v) = form.get("ValidityPeriod") {
        if !v.parse::<u32>().is_ok_and(|s| (1..=14400).contains(&s)) {
            return Err((
                21620,
                "ValidityPeriod must be between 1 and 14400 seconds.".into(),
            ));
        }
    }
    Ok(())
}

fn check_call(form: &BTreeMap<String, String>) -> Check {
    check_numbers(form, false)?;
    let given = ["Url", "Twiml", "ApplicationSid"]
        .iter()
        .filter(|k| form.contains_key(**k))
        .count();
    if given != 1 {
        return Err((
            21205,
            "Exactly one of Url, Twiml or ApplicationSid is required.".into(),
        ));
    }
    if let Some(twiml) = form.get("Twiml") {
        if twiml.chars().count() > 4000 {
            return Err((21232, "Twiml exceeds the 4000 character limit.".into()));
        }
        let doc = roxmltree::Document::parse(twiml)
            .map_err(|e| (12100, format!("Document parse failure: {e}")))?;
        if doc.root_element().tag_name().name() != "Response" {
            return Err((12100, "TwiML root element must be <Response>".into()));
        }
    }
    if let Some(url) = form.get("Url") {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err((21205, "Url is not a valid URL.".into()));
        }
    }
    if let Some(t) = form.get("Timeout") {
        if !t.parse::<u32>().is_ok_and(|s| (1..=600).contains(&s)) {
            return Err((21216, "Timeout must be between 1 and 600 seconds.".into()));
        }
    }
    Ok(())
}

/// The words a TwiML document says (`<Say>` text, entities decoded) and its `loop` count.
pub fn spoken(twiml: &str) -> (String, Option<String>) {
    let doc = roxmltree::Document::parse(twiml).expect("valid TwiML");
    let say = doc
        .descendants()
        .find(|n| n.has_tag_name("Say"))
        .expect("a <Say>");
    (
        say.text().unwrap_or_default().to_string(),
        say.attribute("loop").map(String::from),
    )
}
