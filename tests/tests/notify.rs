//! The hub's alert channels against local receivers that check what the vendors check.
//! Each test starts its own receiver on a free loopback port; backoff is shortened so the
//! whole file runs in a few seconds (the Retry-After tests wait the 1 s the server asks).

use std::time::Duration;

use agog_tests::receivers::smtp::{self, SmtpFault};
use agog_tests::receivers::twilio::{self, ACCOUNT_SID, AUTH_TOKEN};
use agog_tests::receivers::{pagerduty, slack, teams, Fault, HttpReceiver};
use chrono::{TimeZone, Utc};
use hub::notify::{send_all, Alert, Channel, ChannelConfig, Delivery, Facility, Incident};
use serde_json::{json, Value};

const ROUTING_KEY: &str = "R0AGOGTESTROUTINGKEY000000000001";
const FROM: &str = "+14155550100";
const TO: &str = "+4930901820";

/// Short backoff for tests; 4 attempts in all.
const FAST_RETRY: &str = r#"
[retry]
max_attempts = 4
initial_backoff_ms = 10
max_backoff_ms = 40
max_total_ms = 8000
request_timeout_ms = 2000
"#;

fn channel(toml_text: &str) -> Channel {
    let cfg: ChannelConfig = toml::from_str(toml_text).expect("channel config parses");
    Channel::new(cfg).expect("channel config is valid")
}

fn pagerduty_channel(base_url: &str) -> Channel {
    channel(&format!(
        "kind = \"pagerduty\"\nrouting_key = \"{ROUTING_KEY}\"\nbase_url = \"{base_url}\"\n{FAST_RETRY}"
    ))
}

fn slack_channel(url: &str) -> Channel {
    channel(&format!(
        "kind = \"slack\"\nwebhook_url = \"{url}\"\n{FAST_RETRY}"
    ))
}

fn teams_channel(url: &str, format: &str) -> Channel {
    channel(&format!(
        "kind = \"teams\"\nwebhook_url = \"{url}\"\nformat = \"{format}\"\n{FAST_RETRY}"
    ))
}

fn twilio_channel(kind: &str, base_url: &str, token: &str, extra: &str) -> Channel {
    channel(&format!(
        "kind = \"{kind}\"\naccount_sid = \"{ACCOUNT_SID}\"\nauth_token = \"{token}\"\nfrom = \"{FROM}\"\nto = \"{TO}\"\nbase_url = \"{base_url}\"\n{extra}\n{FAST_RETRY}"
    ))
}

fn email_channel(r: &smtp::SmtpReceiver) -> Channel {
    channel(&format!(
        "kind = \"email\"\nhost = \"127.0.0.1\"\nport = {}\ntls = \"none\"\nfrom = \"AGOG Alerts <alerts@agog.test>\"\nto = [\"it@la-plant.test\", \"Customer Success <cs@agog.test>\"]\n{FAST_RETRY}",
        r.addr.port()
    ))
}

fn la_incident() -> Incident {
    let f = Facility {
        id: "la-01".into(),
        name: "LA Plant".into(),
        region: "us-west".into(),
    };
    Incident::new(f, Utc.with_ymd_and_hms(2026, 3, 1, 14, 45, 0).unwrap()).unwrap()
}

/// Offline, first escalation at +65 min, recovery at +80 min.
fn outage_alerts(inc: &Incident) -> [Alert; 3] {
    [
        inc.offline(),
        inc.escalated(1, inc.since + chrono::Duration::minutes(65)),
        inc.recovered(inc.since + chrono::Duration::minutes(80)),
    ]
}

fn long_alert() -> Alert {
    let mut a = la_incident().offline();
    a.message = format!(
        "{} {}",
        a.message,
        "Edge box unreachable over the tunnel. ".repeat(2000)
    );
    a
}

fn delivered(d: &Delivery) -> &str {
    match d {
        Delivery::Delivered { provider_id } => provider_id,
        other => panic!("expected Delivered, got {other:?}"),
    }
}

// ---- shared retry checks, run against every HTTP receiver ----

/// One 429 with Retry-After: 1, then success: the second attempt waits the second the
/// server asked for, although the backoff alone would be ~10 ms.
async fn rate_limit_is_retried_after_retry_after<T: Clone>(ch: &Channel, r: &HttpReceiver<T>) {
    r.fail_next(
        1,
        Fault::RateLimited {
            retry_after_secs: 1,
        },
    );
    delivered(&ch.send(&la_incident().offline()).await);
    let hits = r.hits();
    assert_eq!(hits.len(), 2, "one rate-limited attempt, one accepted");
    let gap = hits[1] - hits[0];
    assert!(
        gap >= Duration::from_millis(1000),
        "retried after {gap:?}, before Retry-After"
    );
    assert!(gap < Duration::from_secs(3), "waited {gap:?}");
    assert_eq!(r.accepted().len(), 1);
}

async fn server_errors_are_retried<T: Clone>(ch: &Channel, r: &HttpReceiver<T>) {
    r.fail_next(2, Fault::ServerError);
    delivered(&ch.send(&la_incident().offline()).await);
    assert_eq!(r.hits().len(), 3, "two 500s, then accepted");
    assert_eq!(r.accepted().len(), 1);
}

async fn bad_request_is_rejected_once<T: Clone>(
    ch: &Channel,
    r: &HttpReceiver<T>,
    content_type: &'static str,
    body: String,
) {
    r.fail_next(
        1,
        Fault::Answer {
            status: 400,
            content_type,
            body: body.clone(),
        },
    );
    let d = ch.send(&la_incident().offline()).await;
    assert_eq!(d, Delivery::Rejected { status: 400, body });
    assert!(!d.is_delivered());
    assert_eq!(r.hits().len(), 1, "a 400 is not retried");
    assert!(r.accepted().is_empty());
}

// ---- PagerDuty ----

#[tokio::test]
async fn pagerduty_triggers_escalates_and_resolves_one_incident() {
    let r = pagerduty::start().await;
    let ch = pagerduty_channel(&r.base_url());
    let inc = la_incident();
    let [offline, escalated, recovered] = outage_alerts(&inc);

    assert_eq!(
        delivered(&ch.send(&offline).await),
        inc.key(),
        "PagerDuty's dedup_key is the provider id"
    );
    assert_eq!(pagerduty::open_incidents(&r), vec![inc.key()]);
    delivered(&ch.send(&escalated).await);
    delivered(&ch.send(&recovered).await);
    assert!(
        pagerduty::open_incidents(&r).is_empty(),
        "the resolve closed the incident"
    );

    let events = r.accepted();
    assert_eq!(events.len(), 3);
    let trigger = &events[0];
    assert_eq!(trigger["routing_key"], ROUTING_KEY);
    assert_eq!(trigger["event_action"], "trigger");
    assert_eq!(
        trigger["dedup_key"],
        "agog/us-west/la-01/offline/1772376300"
    );
    let p = &trigger["payload"];
    assert_eq!(
        p["summary"],
        "OFFLINE: LA Plant (la-01) in us-west - LA Plant (la-01) is OFFLINE since 2026-03-01T14:45:00Z"
    );
    assert_eq!(p["source"], "us-west/la-01");
    assert_eq!(p["severity"], "critical");
    assert_eq!(p["timestamp"], "2026-03-01T14:45:00.000Z");
    assert_eq!(p["group"], "us-west");
    let d = &p["custom_details"];
    assert_eq!(d["facility_id"], "la-01");
    assert_eq!(d["facility_name"], "LA Plant");
    assert_eq!(d["state"], "OFFLINE");
    assert_eq!(d["offline_since"], "2026-03-01T14:45:00Z");
    assert_eq!(d["recommended_actions"][2], "Check VPN tunnel status");

    let esc = &events[1];
    assert_eq!(esc["event_action"], "trigger");
    assert_eq!(
        esc["dedup_key"], trigger["dedup_key"],
        "escalation updates the same incident"
    );
    assert_eq!(esc["payload"]["custom_details"]["escalation_level"], 1);
    assert_eq!(esc["payload"]["timestamp"], "2026-03-01T15:50:00.000Z");
    assert!(esc["payload"]["summary"]
        .as_str()
        .unwrap()
        .contains("still OFFLINE"));

    // Resolve: only routing_key, dedup_key and event_action, same key and routing key.
    let resolve = &events[2];
    assert_eq!(
        resolve,
        &json!({"routing_key": ROUTING_KEY, "event_action": "resolve", "dedup_key": inc.key()})
    );
}

#[tokio::test]
async fn pagerduty_rate_limit_is_retried_after_retry_after() {
    let r = pagerduty::start().await;
    rate_limit_is_retried_after_retry_after(&pagerduty_channel(&r.base_url()), &r).await;
}

#[tokio::test]
async fn pagerduty_server_errors_are_retried() {
    let r = pagerduty::start().await;
    server_errors_are_retried(&pagerduty_channel(&r.base_url()), &r).await;
}

#[tokio::test]
async fn pagerduty_bad_request_is_rejected_without_retry() {
    let r = pagerduty::start().await;
    let body = pagerduty::invalid_event(&["Event object is invalid"]);
    bad_request_is_rejected_once(
        &pagerduty_channel(&r.base_url()),
        &r,
        "application/json",
        body,
    )
    .await;
}

#[tokio::test]
async fn pagerduty_persistent_server_errors_fail_after_bounded_attempts() {
    let r = pagerduty::start().await;
    r.fail_next(10, Fault::ServerError);
    let d = pagerduty_channel(&r.base_url())
        .send(&la_incident().offline())
        .await;
    match d {
        Delivery::Failed {
            attempts,
            last_error,
        } => {
            assert_eq!(attempts, 4);
            assert!(last_error.contains("500"), "{last_error}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
    assert_eq!(r.hits().len(), 4);
}

#[tokio::test]
async fn unreachable_endpoint_fails_after_bounded_attempts() {
    // A port that was just free: connection refused on every attempt.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = pagerduty_channel(&format!("http://127.0.0.1:{port}"))
        .send(&la_incident().offline())
        .await;
    match d {
        Delivery::Failed {
            attempts,
            last_error,
        } => {
            assert_eq!(attempts, 4);
            assert!(last_error.contains("connect"), "{last_error}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[tokio::test]
async fn pagerduty_long_summary_is_cut_to_1024_and_accepted() {
    let r = pagerduty::start().await;
    delivered(&pagerduty_channel(&r.base_url()).send(&long_alert()).await);
    let summary = r.accepted()[0]["payload"]["summary"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(summary.chars().count(), 1024);
    assert!(summary.starts_with("OFFLINE: LA Plant") && summary.ends_with('…'));
    // The full message still travels in custom_details.
    assert!(
        r.accepted()[0]["payload"]["custom_details"]["message"]
            .as_str()
            .unwrap()
            .len()
            > 50_000
    );
}

// ---- Slack ----

#[tokio::test]
async fn slack_posts_fallback_text_and_blocks_for_each_alert() {
    let r = slack::start().await;
    let ch = slack_channel(&r.webhook_url());
    for a in outage_alerts(&la_incident()) {
        assert_eq!(delivered(&ch.send(&a).await), "ok");
    }
    let msgs = r.accepted();
    assert_eq!(msgs.len(), 3);
    let m = &msgs[0];
    assert_eq!(
        m["text"],
        "🔴 OFFLINE: LA Plant (la-01) in us-west: LA Plant (la-01) is OFFLINE since 2026-03-01T14:45:00Z"
    );
    let blocks = m["blocks"].as_array().unwrap();
    assert_eq!(blocks.len(), 4);
    assert_eq!(blocks[0]["type"], "header");
    assert_eq!(
        blocks[0]["text"]["text"],
        "🔴 OFFLINE: LA Plant (la-01) in us-west"
    );
    assert_eq!(blocks[1]["text"]["type"], "mrkdwn");
    assert_eq!(
        blocks[1]["text"]["text"],
        "LA Plant (la-01) is OFFLINE since 2026-03-01T14:45:00Z"
    );
    assert_eq!(
        blocks[2]["text"]["text"],
        "*Recommended actions:*\n1. Check internet connectivity\n2. Verify edge computer powered on\n3. Check VPN tunnel status\n4. Contact AgogSaaS support if issue persists"
    );
    let context = blocks[3]["elements"][0]["text"].as_str().unwrap();
    assert!(
        context.contains("*Region:* us-west")
            && context.contains("*Incident:* agog/us-west/la-01/offline/1772376300")
    );
    assert!(msgs[1]["blocks"][0]["text"]["text"]
        .as_str()
        .unwrap()
        .starts_with("🔴 ESCALATED:"));
    assert!(msgs[1]["blocks"][3]["elements"][0]["text"]
        .as_str()
        .unwrap()
        .contains("*Escalation level:* 1"));
    assert_eq!(
        msgs[2]["blocks"][0]["text"]["text"],
        "✅ RECOVERED: LA Plant (la-01) in us-west"
    );
    assert!(msgs[2]["text"]
        .as_str()
        .unwrap()
        .contains("after 1h 20min offline"));
}

#[tokio::test]
async fn slack_rate_limit_is_retried_after_retry_after() {
    let r = slack::start().await;
    rate_limit_is_retried_after_retry_after(&slack_channel(&r.webhook_url()), &r).await;
}

#[tokio::test]
async fn slack_server_errors_are_retried() {
    let r = slack::start().await;
    server_errors_are_retried(&slack_channel(&r.webhook_url()), &r).await;
}

#[tokio::test]
async fn slack_bad_request_is_rejected_without_retry() {
    let r = slack::start().await;
    bad_request_is_rejected_once(
        &slack_channel(&r.webhook_url()),
        &r,
        "text/plain",
        "invalid_payload".into(),
    )
    .await;
}

#[tokio::test]
async fn slack_200_with_error_body_is_not_reported_as_sent() {
    let r = slack::start().await;
    r.fail_next(
        1,
        Fault::Answer {
            status: 200,
            content_type: "text/plain",
            body: "invalid_payload".into(),
        },
    );
    let d = slack_channel(&r.webhook_url())
        .send(&la_incident().offline())
        .await;
    assert_eq!(
        d,
        Delivery::Rejected {
            status: 200,
            body: "invalid_payload".into()
        }
    );
    assert_eq!(r.hits().len(), 1);
}

#[tokio::test]
async fn slack_unknown_webhook_path_is_rejected() {
    let r = slack::start().await;
    let d = slack_channel(&format!("{}/services/T0/B0/wrong", r.base_url()))
        .send(&la_incident().offline())
        .await;
    assert_eq!(
        d,
        Delivery::Rejected {
            status: 404,
            body: "no_service".into()
        }
    );
}

#[tokio::test]
async fn slack_long_message_is_cut_to_block_limits_and_accepted() {
    let r = slack::start().await;
    assert_eq!(
        delivered(&slack_channel(&r.webhook_url()).send(&long_alert()).await),
        "ok"
    );
    let m = &r.accepted()[0];
    assert_eq!(
        m["blocks"][1]["text"]["text"]
            .as_str()
            .unwrap()
            .chars()
            .count(),
        3000
    );
    assert!(m["text"].as_str().unwrap().chars().count() <= 3000);
}

// ---- Teams ----

#[tokio::test]
async fn teams_workflows_get_an_adaptive_card_for_each_alert() {
    let r = teams::start().await;
    let ch = teams_channel(&r.workflows_url(), "adaptive_card");
    for a in outage_alerts(&la_incident()) {
        assert_eq!(delivered(&ch.send(&a).await), "HTTP 202");
    }
    let msgs = r.accepted();
    assert_eq!(msgs.len(), 3);
    let m = &msgs[0];
    assert_eq!(m["type"], "message");
    let att = &m["attachments"][0];
    assert_eq!(
        att["contentType"],
        "application/vnd.microsoft.card.adaptive"
    );
    assert_eq!(att["contentUrl"], Value::Null);
    let card = &att["content"];
    assert_eq!(
        card["$schema"],
        "http://adaptivecards.io/schemas/adaptive-card.json"
    );
    assert_eq!(card["type"], "AdaptiveCard");
    assert_eq!(card["version"], "1.2");
    let body = card["body"].as_array().unwrap();
    assert_eq!(body[0]["text"], "OFFLINE: LA Plant (la-01) in us-west");
    assert_eq!(body[0]["color"], "Attention");
    assert_eq!(
        body[1]["text"],
        "LA Plant (la-01) is OFFLINE since 2026-03-01T14:45:00Z"
    );
    assert_eq!(body[1]["wrap"], true);
    let facts = body[2]["facts"].as_array().unwrap();
    assert!(facts.contains(&json!({"title": "Offline since", "value": "2026-03-01T14:45:00Z"})));
    assert!(body[4]["text"]
        .as_str()
        .unwrap()
        .starts_with("1. Check internet connectivity"));
    let esc_facts = &msgs[1]["attachments"][0]["content"]["body"][2]["facts"];
    assert!(esc_facts
        .as_array()
        .unwrap()
        .contains(&json!({"title": "Escalation level", "value": "1"})));
    let rec = &msgs[2]["attachments"][0]["content"]["body"];
    assert_eq!(rec[0]["color"], "Good");
    assert!(rec[2]["facts"]
        .as_array()
        .unwrap()
        .contains(&json!({"title": "Outage", "value": "1h 20min"})));
}

#[tokio::test]
async fn teams_legacy_connector_gets_a_message_card() {
    let r = teams::start().await;
    let ch = teams_channel(&r.connector_url(), "message_card");
    for a in outage_alerts(&la_incident()) {
        assert_eq!(delivered(&ch.send(&a).await), "1");
    }
    let m = &r.accepted()[0];
    assert_eq!(m["@type"], "MessageCard");
    assert_eq!(m["@context"], "http://schema.org/extensions");
    assert_eq!(m["themeColor"], "FF0000");
    assert_eq!(m["summary"], "OFFLINE: LA Plant (la-01) in us-west");
    assert_eq!(m["title"], "OFFLINE: LA Plant (la-01) in us-west");
    assert_eq!(
        m["text"],
        "LA Plant (la-01) is OFFLINE since 2026-03-01T14:45:00Z"
    );
    let facts = m["sections"][0]["facts"].as_array().unwrap();
    assert!(facts.contains(&json!({"name": "Region", "value": "us-west"})));
    assert!(facts.contains(&json!({"name": "Action 1", "value": "Check internet connectivity"})));
    assert_eq!(r.accepted()[2]["themeColor"], "2EB886");
}

#[tokio::test]
async fn teams_rate_limit_is_retried_after_retry_after() {
    let r = teams::start().await;
    rate_limit_is_retried_after_retry_after(
        &teams_channel(&r.workflows_url(), "adaptive_card"),
        &r,
    )
    .await;
}

#[tokio::test]
async fn teams_server_errors_are_retried() {
    let r = teams::start().await;
    server_errors_are_retried(&teams_channel(&r.connector_url(), "message_card"), &r).await;
}

#[tokio::test]
async fn teams_bad_request_is_rejected_without_retry() {
    let r = teams::start().await;
    let ch = teams_channel(&r.workflows_url(), "adaptive_card");
    bad_request_is_rejected_once(&ch, &r, "text/plain", "Summary or Text is required.".into())
        .await;
}

#[tokio::test]
async fn teams_long_message_stays_under_the_size_limit_and_is_accepted() {
    let r = teams::start().await;
    for (url, format) in [
        (r.workflows_url(), "adaptive_card"),
        (r.connector_url(), "message_card"),
    ] {
        delivered(&teams_channel(&url, format).send(&long_alert()).await);
    }
    for m in r.accepted() {
        let size = serde_json::to_vec(&m).unwrap().len();
        assert!(size <= teams::MAX_MESSAGE_BYTES, "{size} bytes");
        assert!(m.to_string().contains('…'), "the message was cut visibly");
    }
}

// ---- Twilio SMS ----

#[tokio::test]
async fn twilio_sms_for_each_alert_with_auth_and_form_fields() {
    let r = twilio::start().await;
    let ch = twilio_channel("twilio_sms", &r.base_url(), AUTH_TOKEN, "");
    let inc = la_incident();
    for a in outage_alerts(&inc) {
        assert!(delivered(&ch.send(&a).await).starts_with("SM"));
    }
    let reqs = r.accepted();
    assert_eq!(reqs.len(), 3);
    let sms = &reqs[0];
    assert_eq!(sms.resource, "Messages");
    assert_eq!(sms.form.keys().collect::<Vec<_>>(), ["Body", "From", "To"]);
    assert_eq!(sms.form["To"], TO);
    assert_eq!(sms.form["From"], FROM);
    assert_eq!(
        sms.form["Body"],
        "AGOG OFFLINE: LA Plant (la-01) in us-west\nLA Plant (la-01) is OFFLINE since 2026-03-01T14:45:00Z\nActions:\n1. Check internet connectivity\n2. Verify edge computer powered on\n3. Check VPN tunnel status\n4. Contact AgogSaaS support if issue persists\nIncident: agog/us-west/la-01/offline/1772376300"
    );
    assert!(reqs[1].form["Body"].starts_with("AGOG ESCALATED:"));
    assert!(
        reqs[2].form["Body"].starts_with("AGOG RECOVERED:")
            && reqs[2].form["Body"].contains("1h 20min")
    );
    let sids: Vec<_> = reqs.iter().map(|q| q.sid.clone()).collect();
    assert_eq!(
        delivered(&ch.send(&inc.offline()).await),
        r.accepted()[3].sid
    );
    assert!(!sids.contains(&r.accepted()[3].sid));
}

#[tokio::test]
async fn twilio_sms_wrong_token_is_rejected_401_without_retry() {
    let r = twilio::start().await;
    let d = twilio_channel("twilio_sms", &r.base_url(), "not-the-token", "")
        .send(&la_incident().offline())
        .await;
    assert_eq!(
        d,
        Delivery::Rejected {
            status: 401,
            body: twilio::error_body(401, 20003, "Authenticate")
        }
    );
    assert_eq!(r.hits().len(), 1);
}

#[tokio::test]
async fn twilio_sms_rate_limit_is_retried_after_retry_after() {
    let r = twilio::start().await;
    rate_limit_is_retried_after_retry_after(
        &twilio_channel("twilio_sms", &r.base_url(), AUTH_TOKEN, ""),
        &r,
    )
    .await;
}

#[tokio::test]
async fn twilio_sms_server_errors_are_retried() {
    let r = twilio::start().await;
    server_errors_are_retried(
        &twilio_channel("twilio_sms", &r.base_url(), AUTH_TOKEN, ""),
        &r,
    )
    .await;
}

#[tokio::test]
async fn twilio_sms_bad_request_is_rejected_without_retry() {
    let r = twilio::start().await;
    let body = twilio::error_body(400, 21610, "Attempt to send to unsubscribed recipient");
    let ch = twilio_channel("twilio_sms", &r.base_url(), AUTH_TOKEN, "");
    bad_request_is_rejected_once(&ch, &r, "application/json", body).await;
}

#[tokio::test]
async fn twilio_sms_long_body_is_cut_to_1600_and_accepted() {
    let r = twilio::start().await;
    delivered(
        &twilio_channel("twilio_sms", &r.base_url(), AUTH_TOKEN, "")
            .send(&long_alert())
            .await,
    );
    let body = &r.accepted()[0].form["Body"];
    assert_eq!(body.chars().count(), 1600);
    assert!(body.starts_with("AGOG OFFLINE: LA Plant") && body.ends_with('…'));
}

// ---- Twilio voice ----

#[tokio::test]
async fn twilio_voice_reads_the_alert_with_escaped_inline_twiml() {
    let r = twilio::start().await;
    let ch = twilio_channel("twilio_voice", &r.base_url(), AUTH_TOKEN, "");
    let f = Facility {
        id: "rd-02".into(),
        name: "R&D <North> \"Lab\"".into(),
        region: "eu-central".into(),
    };
    let inc = Incident::new(f, Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap()).unwrap();
    for a in outage_alerts(&inc) {
        assert!(delivered(&ch.send(&a).await).starts_with("CA"));
    }
    let call = &r.accepted()[0];
    assert_eq!(call.resource, "Calls");
    assert_eq!(
        call.form.keys().collect::<Vec<_>>(),
        ["From", "To", "Twiml"],
        "Twiml and no Url"
    );
    assert!(call.form["Twiml"].contains("R&amp;D &lt;North&gt; &quot;Lab&quot;"));
    let (said, repeat) = twilio::spoken(&call.form["Twiml"]);
    assert_eq!(
        said,
        "This is an AGOG alert. R&D <North> \"Lab\" (rd-02) is OFFLINE since 2026-03-01T08:00:00Z"
    );
    assert_eq!(repeat.as_deref(), Some("2"));
    assert!(twilio::spoken(&r.accepted()[2].form["Twiml"])
        .0
        .contains("is back ONLINE"));
}

#[tokio::test]
async fn twilio_voice_with_twiml_url_sends_only_the_url() {
    let r = twilio::start().await;
    let extra = "twiml_url = \"https://hub.agog.test/twilio/voice/facility-offline\"";
    let ch = twilio_channel("twilio_voice", &r.base_url(), AUTH_TOKEN, extra);
    delivered(&ch.send(&la_incident().offline()).await);
    let call = &r.accepted()[0];
    assert_eq!(call.form.keys().collect::<Vec<_>>(), ["From", "To", "Url"]);
    assert_eq!(
        call.form["Url"],
        "https://hub.agog.test/twilio/voice/facility-offline"
    );
}

#[tokio::test]
async fn twilio_voice_long_message_keeps_twiml_within_4000() {
    let r = twilio::start().await;
    let mut a = long_alert();
    a.message = "Tunnel & power <down> ".repeat(500);
    delivered(
        &twilio_channel("twilio_voice", &r.base_url(), AUTH_TOKEN, "")
            .send(&a)
            .await,
    );
    let twiml = &r.accepted()[0].form["Twiml"];
    let n = twiml.chars().count();
    assert!((3990..=4000).contains(&n), "TwiML is {n} chars");
    assert!(twilio::spoken(twiml).0.ends_with('…'));
}

#[tokio::test]
async fn twilio_voice_rate_limit_is_retried_after_retry_after() {
    let r = twilio::start().await;
    rate_limit_is_retried_after_retry_after(
        &twilio_channel("twilio_voice", &r.base_url(), AUTH_TOKEN, ""),
        &r,
    )
    .await;
}

#[tokio::test]
async fn twilio_voice_server_errors_and_bad_requests() {
    let r = twilio::start().await;
    let ch = twilio_channel("twilio_voice", &r.base_url(), AUTH_TOKEN, "");
    server_errors_are_retried(&ch, &r).await;
    let r = twilio::start().await;
    let ch = twilio_channel("twilio_voice", &r.base_url(), AUTH_TOKEN, "");
    let body = twilio::error_body(
        400,
        21215,
        "Geo Permission configuration is not permitting call",
    );
    bad_request_is_rejected_once(&ch, &r, "application/json", body).await;
}

// ---- Email ----

#[tokio::test]
async fn email_sends_text_and_html_with_facility_and_state_in_the_subject() {
    let r = smtp::start().await;
    let ch = email_channel(&r);
    for a in outage_alerts(&la_incident()) {
        assert!(delivered(&ch.send(&a).await).starts_with("250"));
    }
    let mails = r.accepted();
    assert_eq!(mails.len(), 3);
    let m = &mails[0];
    assert_eq!(m.subject, "[AGOG] OFFLINE: LA Plant (la-01) in us-west");
    assert_eq!(m.envelope_from, "alerts@agog.test");
    assert_eq!(m.envelope_to, ["it@la-plant.test", "cs@agog.test"]);
    assert_eq!(m.content_type, "multipart/alternative");
    let text = m.text.as_deref().expect("a text/plain part");
    assert!(
        text.starts_with("LA Plant (la-01) is OFFLINE since 2026-03-01T14:45:00Z\n"),
        "{text}"
    );
    assert!(
        text.contains("Region: us-west\n")
            && text.contains("4. Contact AgogSaaS support if issue persists")
    );
    let html = m.html.as_deref().expect("a text/html part");
    assert!(
        html.contains("<h2 style=\"color:#d00000\">OFFLINE: LA Plant (la-01) in us-west</h2>"),
        "{html}"
    );
    assert!(html.contains("<li>Check VPN tunnel status</li>"));
    assert_eq!(
        mails[1].subject,
        "[AGOG] ESCALATED: LA Plant (la-01) in us-west"
    );
    assert!(mails[1]
        .text
        .as_deref()
        .unwrap()
        .contains("Escalation level: 1"));
    assert_eq!(
        mails[2].subject,
        "[AGOG] RECOVERED: LA Plant (la-01) in us-west"
    );
    assert!(mails[2]
        .html
        .as_deref()
        .unwrap()
        .contains("<td>1h 20min</td>"));
}

#[tokio::test]
async fn email_escapes_html_and_keeps_text_verbatim() {
    let r = smtp::start().await;
    let f = Facility {
        id: "rd-02".into(),
        name: "R&D <North>".into(),
        region: "eu-central".into(),
    };
    let inc = Incident::new(f, Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap()).unwrap();
    delivered(&email_channel(&r).send(&inc.offline()).await);
    let m = &r.accepted()[0];
    assert_eq!(
        m.subject,
        "[AGOG] OFFLINE: R&D <North> (rd-02) in eu-central"
    );
    assert!(m.html.as_deref().unwrap().contains("R&amp;D &lt;North&gt;"));
    assert!(m
        .text
        .as_deref()
        .unwrap()
        .starts_with("R&D <North> (rd-02) is OFFLINE"));
}

#[tokio::test]
async fn email_transient_4xx_is_retried() {
    let r = smtp::start().await;
    r.fail_next(2, SmtpFault::Transient);
    delivered(&email_channel(&r).send(&la_incident().offline()).await);
    assert_eq!(r.hits().len(), 3);
    assert_eq!(r.accepted().len(), 1);
}

#[tokio::test]
async fn email_permanent_5xx_is_rejected_without_retry() {
    let r = smtp::start().await;
    r.fail_next(1, SmtpFault::Permanent);
    match email_channel(&r).send(&la_incident().offline()).await {
        Delivery::Rejected { status, body } => {
            assert_eq!(status, 554);
            assert!(body.contains("Transaction failed"), "{body}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert_eq!(r.hits().len(), 1);
    assert!(r.accepted().is_empty());
}

// ---- all channels, config ----

#[tokio::test]
async fn one_alert_goes_out_on_every_channel_at_once() {
    let (pd, sl, tm, tw, mail) = (
        pagerduty::start().await,
        slack::start().await,
        teams::start().await,
        twilio::start().await,
        smtp::start().await,
    );
    let channels = [
        pagerduty_channel(&pd.base_url()),
        slack_channel(&sl.webhook_url()),
        teams_channel(&tm.workflows_url(), "adaptive_card"),
        twilio_channel("twilio_sms", &tw.base_url(), AUTH_TOKEN, ""),
        twilio_channel("twilio_voice", &tw.base_url(), AUTH_TOKEN, ""),
        email_channel(&mail),
    ];
    let outcomes = send_all(&channels, &la_incident().offline()).await;
    assert_eq!(outcomes.len(), 6);
    assert!(outcomes.iter().all(Delivery::is_delivered), "{outcomes:?}");
    assert_eq!(
        (
            pd.accepted().len(),
            sl.accepted().len(),
            tm.accepted().len(),
            tw.accepted().len(),
            mail.accepted().len()
        ),
        (1, 1, 1, 2, 1)
    );
}

#[test]
fn bad_channel_config_gets_a_clear_error() {
    let err = |t: &str| match toml::from_str::<ChannelConfig>(t) {
        Err(e) => e.to_string(),
        Ok(cfg) => Channel::new(cfg)
            .expect_err("config should be refused")
            .to_string(),
    };
    assert!(err(&format!(
        "kind = \"pagerduty\"\nrouting_key = \"{ROUTING_KEY}\"\nrouting_kye = \"x\""
    ))
    .contains("unknown field `routing_kye`"));
    assert!(err("kind = \"pagerduty\"\nrouting_key = \"short\"")
        .contains("32-character integration key"));
    assert!(
        err("kind = \"slack\"\nwebhook_url = \"hooks.slack.com/services/x\"")
            .contains("slack.webhook_url: not a URL")
    );
    assert!(
        err("kind = \"teams\"\nwebhook_url = \"https://x.test/\"\nformat = \"html\"")
            .contains("unknown variant `html`")
    );
    let sms = |to: &str| {
        format!("kind = \"twilio_sms\"\naccount_sid = \"{ACCOUNT_SID}\"\nauth_token = \"t\"\nfrom = \"{FROM}\"\nto = \"{to}\"")
    };
    assert!(err(&sms("030 901820")).contains("to \"030 901820\" is not an E.164 number"));
    assert!(err(&format!("{}\n[retry]\nmax_attempts = 0", sms(TO)))
        .contains("max_attempts must be at least 1"));
    assert!(err(&format!("{}\n[retry]\nmax_attemps = 3", sms(TO)))
        .contains("unknown field `max_attemps`"));
    let email = "kind = \"email\"\nhost = \"smtp.example.com\"\ntls = \"none\"\nfrom = \"a@b.test\"\nto = [\"c@d.test\"]";
    assert!(err(email).contains("only allowed for a loopback host"));
    assert!(
        err("kind = \"email\"\nhost = \"localhost\"\nfrom = \"a@b.test\"\nto = []")
            .contains("at least one address")
    );
    assert!(err("kind = \"fax\"").contains("unknown variant `fax`"));
}

#[test]
fn secrets_stay_out_of_debug_output() {
    let ch = twilio_channel("twilio_sms", "http://127.0.0.1:9", AUTH_TOKEN, "");
    let shown = format!("{ch:?}");
    assert!(!shown.contains(AUTH_TOKEN), "{shown}");
    let ch = slack_channel("http://127.0.0.1:9/services/T0/B0/topsecretpath");
    assert!(!format!("{ch:?}").contains("topsecretpath"));
}
