//! Lag in both directions, its history and its alerts, per-facility contacts and routes, the
//! delivery log and /metrics — with a real edge agent, a real hub, real regional and master
//! clusters. The regional's apply of the edge's changes is stalled by a lock (a subscription
//! silently stuck while the edge's /health answers healthy): the hub must show the facility
//! lagging, alert its people once, and clear it when the apply catches up.

use std::time::Duration;

use agog_tests::edge_box::{EdgeBox, EdgeBoxConfig};
use agog_tests::fleet::{count, exec};
use agog_tests::hub_process::HubProcess;
use agog_tests::receivers::slack;
use agog_tests::receivers::twilio::{self, ACCOUNT_SID, AUTH_TOKEN};
use agog_tests::{http_client, wait_until, Cluster};
use sync_core::{reconcile_node, NodeName, Topology};

const LA: &str = "facility-la-001";
const A: &str = "tenant-foo-inc";
const T: Duration = Duration::from_secs(120);
const OPS_PHONE: &str = "+14155550100";

fn n(s: &str) -> NodeName {
    NodeName::parse(s).unwrap()
}

/// The region as the hub keeps it: us-east subscribes to the edge, us-east-master feeds it.
fn static_spec(us: &Cluster, usm: &Cluster, edge: &EdgeBox) -> String {
    format!(
        r#"[[nodes]]
name = "us-east"
kind = "regional"
region = "us-east"
admin = "{us}"

[[nodes]]
name = "us-east-master"
kind = "master"
region = "us-east"
admin = "{usm}"

[[nodes]]
name = "la"
kind = "edge"
region = "us-east"
facility = "{LA}"
tenant = "{A}"
admin = "{edge}"

[[flows]]
from = "la"
to = "us-east"
group = "operational"

[[flows]]
from = "us-east-master"
to = "la"
group = "master"
"#,
        us = us.conninfo(),
        usm = usm.conninfo(),
        edge = edge.replication_conninfo(),
    )
}

fn hub_config(
    us: &Cluster,
    usm: &Cluster,
    spec: &std::path::Path,
    slack_url: &str,
    twilio_url: &str,
    metrics_port: u16,
) -> String {
    let twilio = |kind: &str| {
        format!(
            "[[alerts.channels]]\nname = \"{kind}\"\nkind = \"{kind}\"\naccount_sid = \"{ACCOUNT_SID}\"\nauth_token = \"{AUTH_TOKEN}\"\nfrom = \"+14155550199\"\nto = \"{OPS_PHONE}\"\nbase_url = \"{twilio_url}\"\n"
        )
    };
    format!(
        r#"region = "us-east"
database = "{us}"

[master]
node = "us-east-master"
admin = "{usm}"

[monitor]
interval_secs = 1
timeout_secs = 2
offline_after_secs = 60
tick_ms = 200

[reconcile]
interval_secs = 2
spec = "{spec}"

[lag]
interval_secs = 1
history_every_secs = 1
max_seconds = 6
samples = 2
heartbeat_secs = 1

[metrics]
listen = "127.0.0.1:{metrics_port}"

[[alerts.channels]]
name = "ops-slack"
kind = "slack"
webhook_url = "{slack_url}"

{sms}
{voice}"#,
        us = us.conninfo(),
        usm = usm.conninfo(),
        spec = spec.display(),
        sms = twilio("twilio_sms"),
        voice = twilio("twilio_voice"),
    )
}

async fn edge_json(hub: &HubProcess) -> anyhow::Result<serde_json::Value> {
    hub.edge(LA)?
        .ok_or_else(|| anyhow::anyhow!("{LA} not in hub edges"))
}

/// Slack messages whose fallback text starts with `state` (LAGGING, CAUGHT UP).
fn slack_with(r: &slack::SlackReceiver, state: &str) -> usize {
    r.accepted()
        .iter()
        .filter(|m| {
            m["text"]
                .as_str()
                .unwrap_or_default()
                .contains(&format!("{state}: "))
        })
        .count()
}

/// Twilio requests (`Messages` or `Calls`) to `to` whose text mentions `word`.
fn twilio_to(r: &twilio::TwilioReceiver, resource: &str, to: &str, word: &str) -> usize {
    r.accepted()
        .iter()
        .filter(|q| {
            q.resource.starts_with(resource)
                && q.form.get("To").map(String::as_str) == Some(to)
                && q.form.values().any(|v| v.contains(word))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_apply_shows_as_lag_alerts_the_facilitys_people_once_and_clears(
) -> anyhow::Result<()> {
    let us = Cluster::start("lag-us")?;
    let usm = Cluster::start("lag-usm")?;
    let mut edge = EdgeBox::new(&EdgeBoxConfig {
        node: "la",
        facility: LA,
        tenant: A,
        region: "us-east",
        regional_node: "us-east",
        master_node: "us-east-master",
        master_conninfo: usm.conninfo(),
        reconcile_secs: 2,
    })?;
    let spec = static_spec(&us, &usm, &edge);
    let spec_path = edge.dir.join("region.toml");
    std::fs::write(&spec_path, &spec)?;
    // The master must publish before the edge can subscribe to it.
    reconcile_node(&Topology::from_toml(&spec)?, &n("us-east-master")).await?;
    let ops_slack = slack::start().await;
    let la_slack = slack::start().await;
    let tw = twilio::start().await;
    let metrics_port = agog_tests::cluster::free_port()?;
    let mut hub = HubProcess::new(
        "lag-hub",
        &hub_config(
            &us,
            &usm,
            &spec_path,
            &ops_slack.webhook_url(),
            &tw.base_url(),
            metrics_port,
        ),
    )?;
    let (code, _, err) = hub.cli(&[
        "edges",
        "add",
        "--facility",
        LA,
        "--tenant",
        A,
        "--node",
        "la",
        "--health-url",
        &edge.health_url(),
    ])?;
    assert_eq!(code, 0, "{err}");

    // Contacts and a route: bad input is refused with the field named and stores nothing.
    let (code, _, err) = hub.cli(&[
        "contacts",
        "add",
        "--facility",
        LA,
        "--name",
        "Night shift",
        "--phone",
        "555-0100",
        "--sms",
    ])?;
    assert_eq!(code, 1);
    assert!(
        err.contains("--phone \"555-0100\": an E.164 number"),
        "{err}"
    );
    let (code, _, err) = hub.cli(&[
        "routes",
        "add",
        "--facility",
        LA,
        "--channel",
        "nope",
        "--target",
        &la_slack.webhook_url(),
    ])?;
    assert_eq!(code, 1);
    assert!(
        err.contains("--channel \"nope\" is not configured"),
        "{err}"
    );
    let (code, _, err) = hub.cli(&[
        "routes",
        "add",
        "--facility",
        LA,
        "--channel",
        "ops-slack",
        "--target",
        "not a url",
    ])?;
    assert_eq!(code, 1, "{err}");
    let (_, out, _) = hub.cli(&["contacts", "list", "--json"])?;
    assert_eq!(out.trim(), "[]");
    for args in [
        &[
            "--name",
            "Maria Lopez",
            "--phone",
            "+14155550111",
            "--sms",
            "--primary",
        ][..],
        &["--name", "Night shift", "--phone", "+14155550122", "--sms"][..],
        &["--name", "Plant office", "--phone", "+14155550133"][..],
    ] {
        let mut a = vec!["contacts", "add", "--facility", LA];
        a.extend_from_slice(args);
        let (code, _, err) = hub.cli(&a)?;
        assert_eq!(code, 0, "{err}");
    }
    let (code, _, err) = hub.cli(&[
        "routes",
        "add",
        "--facility",
        LA,
        "--channel",
        "ops-slack",
        "--target",
        &la_slack.webhook_url(),
    ])?;
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = hub.cli(&["routes", "list"])?;
    assert!(
        out.contains("http://127.0.0.1:") && out.contains("/***") && !out.contains("xoxAGOG"),
        "the webhook is shown redacted: {out}"
    );

    edge.start()?;
    hub.start()?;
    edge.wait_status("healthy", T).await?;
    // Online, with figures in both directions.
    let e = wait_until("lag sampled in both directions", T, || async {
        let e = edge_json(&hub).await?;
        let l = &e["lag"];
        Ok((e["state"] == "online"
            && l["up"]["seconds"].is_number()
            && l["up"]["bytes"].is_number()
            && l["up"]["retained_bytes"].is_number()
            && l["down"]["seconds"].is_number()
            && l["down"]["bytes"].is_number()
            && l["up"]["seconds"].as_f64() < Some(6.0))
        .then_some(e))
    })
    .await?;
    assert_eq!(e["lag"]["alerting"], false, "{e}");

    // Stall the regional's apply: a SHARE lock lets readers (the hub) through but no writes,
    // so the edge's heartbeats stop landing while its slot stays active and /health healthy.
    let us_c = us.client().await?;
    let locker = us.client().await?;
    exec(
        &locker,
        "BEGIN; LOCK TABLE public.edge_heartbeats IN SHARE MODE",
    )
    .await?;
    let e = wait_until("LA lagging", T, || async {
        let e = edge_json(&hub).await?;
        Ok((e["lag"]["alerting"] == true).then_some(e))
    })
    .await?;
    assert_eq!(e["state"], "online", "still answering: {e}");
    assert!(e["lag"]["up"]["seconds"].as_f64().unwrap() > 6.0, "{e}");
    let (code, _) = edge.health().await?;
    assert_eq!(
        code, 200,
        "the edge itself is healthy while its data goes stale"
    );
    wait_until("lag alerts delivered", T, || async {
        Ok((slack_with(&ops_slack, "LAGGING") == 1
            && slack_with(&la_slack, "LAGGING") == 1
            && twilio_to(&tw, "Messages", "+14155550111", "behind") == 1
            && twilio_to(&tw, "Messages", "+14155550122", "behind") == 1
            && twilio_to(&tw, "Messages", OPS_PHONE, "behind") == 1
            && twilio_to(&tw, "Calls", "+14155550111", "behind") == 1
            && twilio_to(&tw, "Calls", OPS_PHONE, "behind") == 1)
            .then_some(()))
    })
    .await?;
    let m = ops_slack.accepted();
    let text = m
        .iter()
        .map(|x| x["text"].as_str().unwrap_or_default())
        .find(|t| t.contains("LAGGING"))
        .unwrap()
        .to_string();
    assert!(
        text.contains("operational data (edge -> regional) is") && text.contains("behind"),
        "{text}"
    );
    // Not opted in: no SMS; not primary: no call.
    assert_eq!(twilio_to(&tw, "Messages", "+14155550133", ""), 0);
    assert_eq!(twilio_to(&tw, "Calls", "+14155550122", ""), 0);

    // The apply resumes: caught up, one clearing notice per recipient, lag back to normal.
    exec(&locker, "COMMIT").await?;
    wait_until("LA caught up", T, || async {
        let e = edge_json(&hub).await?;
        Ok(
            (e["lag"]["alerting"] == false && e["lag"]["up"]["seconds"].as_f64() < Some(6.0))
                .then_some(()),
        )
    })
    .await?;
    wait_until("caught-up notices", T, || async {
        Ok((slack_with(&ops_slack, "CAUGHT UP") == 1
            && slack_with(&la_slack, "CAUGHT UP") == 1
            && twilio_to(&tw, "Messages", "+14155550122", "caught up") == 1)
            .then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        slack_with(&ops_slack, "LAGGING"),
        1,
        "one lag alert, not one per sample"
    );

    // The delivery log: channel, recipient, outcome.
    let (code, out, err) = hub.cli(&["alerts", "--facility", LA, "--json"])?;
    assert_eq!(code, 0, "{err}");
    let log: serde_json::Value = serde_json::from_str(&out)?;
    let log = log.as_array().unwrap();
    let lag_rows: Vec<_> = log.iter().filter(|a| a["event"] == "lag").collect();
    assert_eq!(lag_rows.len(), 7, "{out}");
    assert!(lag_rows.iter().all(|a| a["status"] == "delivered"), "{out}");
    assert!(log
        .iter()
        .any(|a| a["channel"] == "twilio_voice" && a["recipient"] == "+14155550111"));
    let la_hook = format!(
        "http://127.0.0.1:{}/***",
        reqwest::Url::parse(&la_slack.webhook_url())?
            .port()
            .unwrap()
    );
    assert!(
        log.iter()
            .any(|a| a["channel"] == "ops-slack" && a["recipient"] == la_hook.as_str()),
        "{out}"
    );
    let (_, table, _) = hub.cli(&["alerts"])?;
    assert!(
        table.contains("lag_cleared") && table.contains("delivered"),
        "{table}"
    );

    // History in both directions (pruned past [lag] history_hours).
    let up = count(&us_c, &format!("SELECT 1 FROM agog_hub.lag_samples WHERE facility_id = '{LA}' AND direction = 'up' AND lag_seconds IS NOT NULL")).await?;
    let down = count(&us_c, &format!("SELECT 1 FROM agog_hub.lag_samples WHERE facility_id = '{LA}' AND direction = 'down' AND lag_bytes IS NOT NULL")).await?;
    assert!(up >= 5 && down >= 5, "history up {up}, down {down}");
    let peak: f64 = us_c
        .query_one(
            "SELECT max(lag_seconds) FROM agog_hub.lag_samples WHERE direction = 'up'",
            &[],
        )
        .await?
        .get(0);
    assert!(peak > 6.0, "the stall is in the history: {peak}");

    // /metrics in the Prometheus (OpenMetrics) text format.
    let body = http_client()
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    for want in [
        "agog_hub_edges{state=\"online\"} 1",
        "agog_hub_lag_seconds{facility=\"facility-la-001\",direction=\"up\"}",
        "agog_hub_lag_bytes{facility=\"facility-la-001\",direction=\"down\"}",
        "agog_hub_alerts{channel=\"twilio_sms\",status=\"delivered\"} 6",
        "agog_hub_health_checks_total{outcome=\"healthy\"}",
        "agog_hub_health_check_seconds_bucket{",
    ] {
        assert!(body.contains(want), "{want} missing from:\n{body}");
    }
    hub.stop();
    Ok(())
}
