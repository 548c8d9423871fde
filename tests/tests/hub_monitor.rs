//! The hub's health monitor with two real replicas against one regional database: edges go
//! offline, escalate and recover; one replica is SIGKILLed halfway and another started; every
//! alert reaches Slack and PagerDuty receivers exactly once, and facility_status follows.

use std::time::Duration;

use agog_tests::fleet::{count, spec_toml, Node};
use agog_tests::health_endpoint::{HealthEndpoint, Mode};
use agog_tests::hub_process::HubProcess;
use agog_tests::receivers::{pagerduty, slack};
use agog_tests::{wait_until, Cluster};
use sync_core::{reconcile_node, NodeName, Topology};

const T: Duration = Duration::from_secs(60);
const ROUTING_KEY: &str = "R0AGOGTESTROUTINGKEY000000000001";

fn hub_config(db: &str, slack_url: &str, pd_url: &str) -> String {
    format!(
        r#"region = "us-east"
database = "{db}"

[monitor]
interval_secs = 1
timeout_secs = 1
offline_after_secs = 3
escalate_after_secs = 8
recover_after_checks = 2
tick_ms = 200

[[alerts.channels]]
name = "ops-slack"
kind = "slack"
webhook_url = "{slack_url}"

[[alerts.channels]]
name = "oncall"
kind = "pagerduty"
routing_key = "{ROUTING_KEY}"
base_url = "{pd_url}"
"#
    )
}

async fn wait_state(hub: &HubProcess, facility: &str, want: &str) -> anyhow::Result<()> {
    wait_until(&format!("{facility} {want}"), T, || async {
        Ok((hub.edge_state(facility)? == want).then_some(()))
    })
    .await
}

/// Slack messages about `facility` whose headline starts with `state`.
fn slack_count(r: &slack::SlackReceiver, facility: &str, state: &str) -> usize {
    r.accepted()
        .iter()
        .filter(|m| {
            let t = m["text"].as_str().unwrap_or_default();
            t.contains(&format!("{state}: ")) && t.contains(&format!("({facility})"))
        })
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_alert_once_through_offline_escalation_recovery_and_a_crash(
) -> anyhow::Result<()> {
    let db = Cluster::start("mon-us")?;
    // The regional node's identity lets the hub write its region's facility_status.
    let topo = Topology::from_toml(&spec_toml(
        &[Node::regional("us-east", "us-east", &db)],
        &[],
    ))?;
    reconcile_node(&topo, &NodeName::parse("us-east")?).await?;
    let slack_rx = slack::start().await;
    let pd_rx = pagerduty::start().await;
    let config = hub_config(&db.conninfo(), &slack_rx.webhook_url(), &pd_rx.base_url());

    let la = HealthEndpoint::start("facility-la-001").await;
    let nyc = HealthEndpoint::start("facility-nyc-001").await;
    let bos = HealthEndpoint::start("facility-bos-001").await;
    let mut a = HubProcess::new("hub-a", &config)?;
    let mut b = HubProcess::new("hub-b", &config)?;
    for e in [&la, &nyc, &bos] {
        let (code, _, err) = a.cli(&[
            "edges",
            "add",
            "--facility",
            e.facility(),
            "--tenant",
            "tenant-foo-inc",
            "--health-url",
            &e.url(),
        ])?;
        assert_eq!(code, 0, "{err}");
    }
    a.start()?;
    b.start()?;
    for f in ["facility-la-001", "facility-nyc-001", "facility-bos-001"] {
        wait_state(&a, f, "online").await?;
    }

    // NYC answers 503 "unhealthy": offline after 3 s, one alert per channel.
    nyc.set(Mode::Unhealthy);
    wait_state(&a, "facility-nyc-001", "offline").await?;
    wait_until("offline alert on Slack", T, || async {
        Ok((slack_count(&slack_rx, "facility-nyc-001", "OFFLINE") == 1).then_some(()))
    })
    .await?;

    // A replica dies mid-watch; the other carries on alone, then a new one joins.
    a.kill();
    // LA hangs past the 1 s timeout: offline too, then back before it would escalate.
    la.set(Mode::Hang);
    wait_state(&b, "facility-la-001", "offline").await?;
    la.set(Mode::Healthy);
    let mut c = HubProcess::new("hub-c", &config)?;
    c.start()?;
    wait_state(&b, "facility-nyc-001", "escalated").await?;
    nyc.set(Mode::Healthy);
    wait_state(&b, "facility-nyc-001", "online").await?;
    wait_state(&b, "facility-la-001", "online").await?;

    let db_c = db.client().await?;
    wait_until("every alert delivered", T, || async {
        Ok((count(
            &db_c,
            "SELECT 1 FROM agog_hub.alerts WHERE status <> 'delivered'",
        )
        .await?
            == 0)
            .then_some(()))
    })
    .await?;
    // Quiet for a few rounds: nothing more may arrive.
    tokio::time::sleep(Duration::from_secs(3)).await;

    for (facility, state, want) in [
        ("facility-nyc-001", "OFFLINE", 1),
        ("facility-nyc-001", "ESCALATED", 1),
        ("facility-nyc-001", "RECOVERED", 1),
        ("facility-la-001", "OFFLINE", 1),
        ("facility-la-001", "RECOVERED", 1),
        ("facility-la-001", "ESCALATED", 0),
        ("facility-bos-001", "OFFLINE", 0),
    ] {
        assert_eq!(
            slack_count(&slack_rx, facility, state),
            want,
            "Slack {state} for {facility}: {:#?}",
            slack_rx.accepted()
        );
    }
    assert_eq!(slack_rx.accepted().len(), 5);
    let pd = pd_rx.accepted();
    let actions: Vec<&str> = pd
        .iter()
        .map(|e| e["event_action"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        actions.iter().filter(|a| **a == "trigger").count(),
        3,
        "{pd:#?}"
    );
    assert_eq!(
        actions.iter().filter(|a| **a == "resolve").count(),
        2,
        "{pd:#?}"
    );
    assert!(
        pagerduty::open_incidents(&pd_rx).is_empty(),
        "every PagerDuty incident resolved: {pd:#?}"
    );
    assert_eq!(count(&db_c, "SELECT 1 FROM agog_hub.alerts").await?, 10);
    assert_eq!(
        count(
            &db_c,
            "SELECT 1 FROM agog_hub.incidents WHERE closed_at IS NOT NULL AND outage_seconds >= 3"
        )
        .await?,
        2
    );

    // The recovery notice carries the outage length.
    let recovered = slack_rx
        .accepted()
        .into_iter()
        .find(|m| {
            m["text"]
                .as_str()
                .unwrap_or_default()
                .contains("RECOVERED: ")
                && m.to_string().contains("facility-nyc-001")
        })
        .unwrap();
    assert!(recovered.to_string().contains("*Outage:*"), "{recovered}");

    // facility_status follows the monitor (and replicates to the other regions).
    let row = db_c
        .query_one("SELECT online, offline_since IS NULL FROM public.facility_status WHERE facility_id = 'facility-nyc-001'", &[])
        .await?;
    assert!(row.get::<_, bool>(0) && row.get::<_, bool>(1));
    // Both surviving replicas took part in checking.
    assert!(b.log().contains("state change") || c.log().contains("state change"));
    Ok(())
}
