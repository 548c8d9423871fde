//! Enrollment end to end, with real processes and real TLS: a CA and a hub certificate made
//! here, a regional and a separate master-data cluster, a real `hub serve` with its HTTPS API, a
//! token from the hub's CLI, a real edge agent started before the hub (it retries), enrolled,
//! healthy, synced both ways through the subscriptions the hub made; refused tokens change
//! nothing; a restarted agent does not enroll again; decommissioning removes the edge.

use std::path::Path;
use std::time::Duration;

use agog_tests::edge_box::{EdgeBox, EnrollingBoxConfig};
use agog_tests::fleet::{count, exec, wait_count};
use agog_tests::hub_process::HubProcess;
use agog_tests::pki::{pinned_client, pki, Pki};
use agog_tests::{cluster, wait_until, Cluster};

const LA: &str = "facility-la-001";
const A: &str = "tenant-foo-inc";
const T: Duration = Duration::from_secs(60);

fn hub_config(regional: &Cluster, master: Option<&Cluster>, api_port: u16, p: &Pki) -> String {
    let master = master
        .map(|m| {
            format!(
                "[master]\nnode = \"us-east-master\"\nadmin = \"{}\"\n",
                m.conninfo()
            )
        })
        .unwrap_or_default();
    format!(
        r#"region = "us-east"
database = "{db}"
regional_address = "127.0.0.1"

[monitor]
interval_secs = 1
timeout_secs = 2
offline_after_secs = 60
tick_ms = 200

[reconcile]
interval_secs = 2

[api]
listen = "127.0.0.1:{api_port}"
tls_cert = "{cert}"
tls_key = "{key}"

{master}"#,
        db = regional.conninfo(),
        cert = p.hub_cert.display(),
        key = p.hub_key.display(),
    )
}

fn create_token(hub: &HubProcess, facility: &str, expires: &str) -> anyhow::Result<String> {
    let (code, out, err) = hub.cli(&[
        "token",
        "create",
        "--facility",
        facility,
        "--tenant",
        A,
        "--name",
        &format!("{facility} plant"),
        "--expires",
        expires,
    ])?;
    anyhow::ensure!(code == 0, "hub token create: {err}");
    let token = out.trim().to_string();
    anyhow::ensure!(
        token.starts_with("agog_bt_") && !token.contains('\n'),
        "{out}"
    );
    Ok(token)
}

fn token_id(hub: &HubProcess, facility: &str) -> anyhow::Result<i64> {
    let (code, out, err) = hub.cli(&["token", "list", "--json"])?;
    anyhow::ensure!(code == 0, "hub token list: {err}");
    let v: serde_json::Value = serde_json::from_str(&out)?;
    v.as_array()
        .unwrap()
        .iter()
        .find(|t| t["facility_id"] == facility)
        .and_then(|t| t["id"].as_i64())
        .ok_or_else(|| anyhow::anyhow!("no token for {facility} in {out}"))
}

fn request(token: &str, facility: &str) -> serde_json::Value {
    serde_json::json!({
        "token": token,
        "facility_id": facility,
        "wireguard_public_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "replication_password": "a-password-chosen-by-the-edge",
        "health_url": "http://127.0.0.1:9/health",
        "replication_host": "127.0.0.1",
        "replication_port": 9,
        "agent_version": "0.0.0-test",
    })
}

/// POST an enrollment request: (HTTP status, JSON body).
async fn post(
    client: &reqwest::Client,
    port: u16,
    body: &serde_json::Value,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let resp = client
        .post(format!("https://127.0.0.1:{port}/api/v1/enroll"))
        .json(body)
        .send()
        .await?;
    let code = resp.status().as_u16();
    Ok((code, resp.json().await?))
}

async fn wait_api(client: &reqwest::Client, port: u16, hub: &HubProcess) -> anyhow::Result<()> {
    wait_until("the hub's API answers", T, || async {
        Ok(post(client, port, &serde_json::json!({})).await.ok())
    })
    .await
    .map_err(|e| e.context(format!("hub log:\n{}", hub.log())))?;
    Ok(())
}

/// What enrollment may have touched: edges, enrollments, used tokens, edge roles.
async fn footprint(
    regional: &tokio_postgres::Client,
    master: &tokio_postgres::Client,
) -> anyhow::Result<(i64, i64, i64, i64)> {
    Ok((
        count(regional, "SELECT 1 FROM agog_hub.edges").await?,
        count(regional, "SELECT 1 FROM agog_hub.enrollments").await?,
        count(
            regional,
            "SELECT 1 FROM agog_hub.bootstrap_tokens WHERE used_at IS NOT NULL",
        )
        .await?,
        count(
            master,
            "SELECT 1 FROM pg_roles WHERE rolname LIKE 'agog_edge_%'",
        )
        .await?,
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_enrolls_syncs_both_ways_restarts_without_reenrolling_and_is_decommissioned(
) -> anyhow::Result<()> {
    let us = Cluster::start("en-us")?;
    let usm = Cluster::start("en-usm")?;
    let dir = cluster::scratch_dir("en-pki")?;
    let p = pki(&dir)?;
    let api_port = cluster::free_port()?;
    let mut hub = HubProcess::new("en-hub", &hub_config(&us, Some(&usm), api_port, &p))?;
    let token = create_token(&hub, LA, "1h")?;

    // The agent starts before the hub: it retries until the hub answers.
    let mut edge = EdgeBox::new_enrolling(&EnrollingBoxConfig {
        node: "la",
        facility: LA,
        tenant: A,
        region: "us-east",
        hub_url: format!("https://127.0.0.1:{api_port}"),
        token: token.clone(),
        ca_cert: p.ca_cert.clone(),
        reconcile_secs: 2,
    })?;
    edge.start()?;
    wait_until("the agent retries while the hub is down", T, || async {
        Ok(edge
            .log()
            .contains("hub not reachable yet, retrying")
            .then_some(()))
    })
    .await?;
    assert!(!edge.state_dir().join("enrollment.json").exists());

    hub.start()?;
    edge.wait_status("healthy", Duration::from_secs(90))
        .await
        .map_err(|e| e.context(format!("hub log:\n{}", hub.log())))?;
    assert!(edge.log().contains("enrolled"), "{}", edge.log());
    // The state is root's only.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&edge.state_dir()), 0o700);
    for f in ["enrollment.json", "wireguard.key", "replication.password"] {
        assert_eq!(mode(&edge.state_dir().join(f)), 0o600, "{f}");
    }
    let state: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
        edge.state_dir().join("enrollment.json"),
    )?)?;
    assert_eq!(state["response"]["node"], "la");
    assert_eq!(state["response"]["regional_node"], "us-east");
    assert_eq!(state["response"]["master_node"], "us-east-master");
    assert!(state["response"]["master_conninfo"]
        .as_str()
        .unwrap()
        .contains("user='agog_edge_facility_la_001'"));
    let private_key = std::fs::read_to_string(edge.state_dir().join("wireguard.key"))?;

    // What the hub stored: the public key, not the private one; the edge's own password.
    let (us_c, usm_c) = (us.client().await?, usm.client().await?);
    let row = us_c
        .query_one(
            "SELECT wireguard_public_key, replication_conninfo, agent_version, enrolled_address, master_role
               FROM agog_hub.edges WHERE facility_id = $1",
            &[&LA],
        )
        .await?;
    let stored_key: String = row.get(0);
    assert_eq!(stored_key, state["wireguard_public_key"].as_str().unwrap());
    assert_ne!(stored_key.trim(), private_key.trim());
    let edge_password = std::fs::read_to_string(edge.state_dir().join("replication.password"))?;
    let conninfo: String = row.get(1);
    assert!(conninfo.contains(edge_password.trim()), "{conninfo}");
    assert_eq!(row.get::<_, String>(2), env!("CARGO_PKG_VERSION"));
    assert_eq!(row.get::<_, String>(3), "127.0.0.1");
    assert_eq!(row.get::<_, String>(4), "agog_edge_facility_la_001");
    // The token is stored as a hash only.
    assert_eq!(
        count(
            &us_c,
            &format!(
                "SELECT 1 FROM agog_hub.bootstrap_tokens WHERE token_sha256 = '{}' OR token_sha256 LIKE '%{}%'",
                token, &token[8..20]
            )
        )
        .await?,
        0
    );
    // The edge's master role: LOGIN REPLICATION, SELECT on the master tables only.
    let r = usm_c
        .query_one(
            "SELECT rolcanlogin, rolreplication, rolsuper,
                    has_table_privilege('agog_edge_facility_la_001', 'public.products', 'SELECT'),
                    has_table_privilege('agog_edge_facility_la_001', 'public.orders', 'SELECT'),
                    has_table_privilege('agog_edge_facility_la_001', 'public.products', 'INSERT')
               FROM pg_roles WHERE rolname = 'agog_edge_facility_la_001'",
            &[],
        )
        .await?;
    assert_eq!(
        (
            r.get::<_, bool>(0),
            r.get::<_, bool>(1),
            r.get::<_, bool>(2),
            r.get::<_, bool>(3),
            r.get::<_, bool>(4),
            r.get::<_, bool>(5)
        ),
        (true, true, false, true, false, false)
    );

    // Rows flow both ways through the subscriptions the hub's reconcile made.
    let edge_c = edge.client().await?;
    exec(&usm_c, &format!("INSERT INTO products (tenant_id, sku, name) VALUES ('{A}', 'BOX', 'Box'), ('tenant-other', 'X', 'X')")).await?;
    wait_count(&edge_c, "SELECT 1 FROM products", 1, T).await?;
    exec(&edge_c, &format!("INSERT INTO orders (facility_id, tenant_id, order_number) VALUES ('{LA}', '{A}', 'LA-1')")).await?;
    wait_count(&us_c, "SELECT 1 FROM orders", 1, T).await?;
    assert_eq!(
        count(
            &us_c,
            "SELECT 1 FROM pg_subscription WHERE subname = 'us_east_from_la'"
        )
        .await?,
        1
    );

    // The monitor watches it.
    wait_until("hub edges shows la online", T, || async {
        Ok(hub
            .edge(LA)?
            .filter(|e| e["state"] == "online" && e["enrolled"] == true)
            .map(|_| ()))
    })
    .await?;

    // The same token again: refused, nothing changed.
    let client = pinned_client(&p.ca_pem)?;
    let before = footprint(&us_c, &usm_c).await?;
    assert_eq!(before, (1, 1, 1, 1));
    let (code, body) = post(&client, api_port, &request(&token, LA)).await?;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["error"], "token_used", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("already used"),
        "{body}"
    );
    assert_eq!(footprint(&us_c, &usm_c).await?, before);
    let conninfo_after: String = us_c
        .query_one(
            "SELECT replication_conninfo FROM agog_hub.edges WHERE facility_id = $1",
            &[&LA],
        )
        .await?
        .get(0);
    assert_eq!(conninfo_after, conninfo);

    // A restarted agent does not enroll again.
    edge.stop()?;
    edge.start()?;
    wait_until("the restarted agent reads its enrollment", T, || async {
        Ok(edge
            .log()
            .contains("enrolled already: not enrolling again")
            .then_some(()))
    })
    .await?;
    edge.wait_status("healthy", T).await?;
    assert_eq!(footprint(&us_c, &usm_c).await?, before);
    let edge_c = edge.client().await?;
    exec(&edge_c, &format!("INSERT INTO orders (facility_id, tenant_id, order_number) VALUES ('{LA}', '{A}', 'LA-2')")).await?;
    wait_count(&us_c, "SELECT 1 FROM orders", 2, T).await?;
    let (code, out) = edge.cli(&["enroll"])?;
    assert_eq!(code, 0);
    assert!(out.contains("already enrolled: node la"), "{out}");

    // Decommission: the row and the master role at once, the regional's subscription and the
    // master's slot after the hub's next reconcile.
    let (code, out, err) = hub.cli(&["edges", "decommission", LA])?;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("decommissioned facility-la-001"), "{out}");
    assert!(hub.edge(LA)?.is_none());
    assert_eq!(
        count(
            &usm_c,
            "SELECT 1 FROM pg_roles WHERE rolname = 'agog_edge_facility_la_001'"
        )
        .await?,
        0
    );
    wait_count(
        &us_c,
        "SELECT 1 FROM pg_subscription WHERE subname = 'us_east_from_la'",
        0,
        T,
    )
    .await
    .map_err(|e| e.context(format!("hub log:\n{}", hub.log())))?;
    wait_count(
        &usm_c,
        "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'la_from_us_east_master_slot'",
        0,
        T,
    )
    .await?;
    assert_eq!(
        count(
            &us_c,
            "SELECT 1 FROM agog_hub.enrollments WHERE decommissioned_at IS NOT NULL"
        )
        .await?,
        1
    );
    // A second decommission says there is nothing to remove.
    let (code, _, err) = hub.cli(&["edges", "decommission", LA])?;
    assert_eq!(code, 1);
    assert!(err.contains("no edge for facility"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_expired_revoked_foreign_and_injected_enrollments_are_refused_and_change_nothing(
) -> anyhow::Result<()> {
    // The shared layout: the regional publishes master data itself.
    let us = Cluster::start("enr-us")?;
    let dir = cluster::scratch_dir("enr-pki")?;
    let p = pki(&dir)?;
    let api_port = cluster::free_port()?;
    let mut hub = HubProcess::new("enr-hub", &hub_config(&us, None, api_port, &p))?;
    let good = create_token(&hub, LA, "1h")?;
    let expired = create_token(&hub, "facility-exp-001", "1s")?;
    let revoked = create_token(&hub, "facility-rev-001", "7d")?;
    let nyc = create_token(&hub, "facility-nyc-001", "24h")?;
    let (code, out, err) = hub.cli(&[
        "token",
        "revoke",
        &token_id(&hub, "facility-rev-001")?.to_string(),
    ])?;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revoked"), "{out}");
    hub.start()?;
    let client = pinned_client(&p.ca_pem)?;
    wait_api(&client, api_port, &hub).await?;
    let us_c = us.client().await?;
    let before = footprint(&us_c, &us_c).await?;
    assert_eq!(before, (0, 0, 0, 0));
    tokio::time::sleep(Duration::from_millis(1100)).await; // `expired` is past its 1 s

    let unknown = format!("agog_bt_{}", "x".repeat(43));
    let cases: Vec<(&str, serde_json::Value, u16, &str, &str)> = vec![
        (
            "a wrong token",
            request(&unknown, LA),
            401,
            "token_unknown",
            "not known to this hub",
        ),
        (
            "not a token",
            request("letmein", LA),
            401,
            "token_unknown",
            "not a bootstrap token",
        ),
        (
            "an expired token",
            request(&expired, "facility-exp-001"),
            410,
            "token_expired",
            "has expired",
        ),
        (
            "a revoked token",
            request(&revoked, "facility-rev-001"),
            403,
            "token_revoked",
            "was revoked",
        ),
        (
            "another facility's token",
            request(&nyc, LA),
            403,
            "facility_mismatch",
            "for another facility",
        ),
        (
            "an injection in facility_id",
            request(&good, "x'; drop table orders; --"),
            400,
            "invalid_request",
            "invalid facility id",
        ),
        (
            "a bad WireGuard key",
            {
                let mut r = request(&good, LA);
                r["wireguard_public_key"] = "c2hvcnQ=".into();
                r
            },
            400,
            "invalid_request",
            "must be 32 bytes",
        ),
        (
            "an injection in the replication host",
            {
                let mut r = request(&good, LA);
                r["replication_host"] = "h' password='x".into();
                r
            },
            400,
            "invalid_request",
            "replication_host",
        ),
        (
            "an unknown field",
            {
                let mut r = request(&good, LA);
                r["superuser"] = true.into();
                r
            },
            400,
            "invalid_request",
            "unknown field",
        ),
    ];
    for (what, body, want_code, want_error, want_message) in cases {
        let (code, resp) = post(&client, api_port, &body).await?;
        assert_eq!(code, want_code, "{what}: {resp}");
        assert_eq!(resp["error"], want_error, "{what}: {resp}");
        assert!(
            resp["message"]
                .as_str()
                .unwrap_or_default()
                .contains(want_message),
            "{what}: {resp}"
        );
        assert_eq!(
            footprint(&us_c, &us_c).await?,
            before,
            "{what} changed something"
        );
    }
    assert_eq!(count(&us_c, "SELECT 1 FROM orders").await?, 0);
    assert!(
        hub.log().contains("enrollment refused"),
        "refusals are logged"
    );

    // The good token was not consumed by any of that: it enrolls, once.
    let (code, resp) = post(&client, api_port, &request(&good, LA)).await?;
    assert_eq!(code, 200, "{resp}");
    assert_eq!(resp["facility_id"], LA);
    assert_eq!(resp["tenant_id"], A);
    assert_eq!(resp["region"], "us-east");
    assert_eq!(resp["node"], LA);
    assert_eq!(resp["master_node"], "us-east");
    assert_eq!(resp["regional_address"], "127.0.0.1");
    assert!(chrono::DateTime::parse_from_rfc3339(resp["hub_time"].as_str().unwrap()).is_ok());
    assert_eq!(footprint(&us_c, &us_c).await?, (1, 1, 1, 1));
    let (code, resp) = post(&client, api_port, &request(&good, LA)).await?;
    assert_eq!(
        (code, resp["error"].as_str()),
        (409, Some("token_used")),
        "{resp}"
    );
    assert_eq!(footprint(&us_c, &us_c).await?, (1, 1, 1, 1));

    // An agent given a bad token reports the refusal clearly and does not hammer the hub.
    let mut edge = EdgeBox::new_enrolling(&EnrollingBoxConfig {
        node: "nyc",
        facility: "facility-nyc-002",
        tenant: A,
        region: "us-east",
        hub_url: format!("https://127.0.0.1:{api_port}"),
        token: unknown.clone(),
        ca_cert: p.ca_cert.clone(),
        reconcile_secs: 2,
    })?;
    let (code, out) = edge.cli(&["enroll"])?;
    assert_eq!(code, 1, "{out}");
    edge.start()?;
    wait_until("the agent reports the refusal", T, || async {
        Ok(edge
            .log()
            .contains("the hub refused the enrollment")
            .then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let log = edge.log();
    assert_eq!(
        log.matches("the hub refused the enrollment").count(),
        1,
        "a refusal is not retried at once:\n{log}"
    );
    assert!(log.contains("token_unknown"), "{log}");
    assert!(log.contains("hub token create"), "the fix is named:\n{log}");
    assert!(!edge.state_dir().join("enrollment.json").exists());
    edge.stop()?;
    assert_eq!(footprint(&us_c, &us_c).await?, (1, 1, 1, 1));

    // The regional side runs on one replica at a time: while another session holds the lock,
    // a pass does nothing.
    let cfg = hub::config::HubConfig::parse(&hub_config(&us, None, api_port, &p))
        .map_err(anyhow::Error::msg)?;
    let holder = us.client().await?;
    holder
        .execute(
            "SELECT pg_advisory_lock($1)",
            &[&hub::regional::REGIONAL_LOCK_KEY],
        )
        .await?;
    let pass = hub::regional::reconcile_once(&cfg).await?;
    assert!(matches!(pass, hub::regional::Pass::NotLeader), "{pass:?}");
    drop(holder);
    // The topology the leader reconciles: the enrolled edge, in the shared layout.
    let topo = hub::regional::topology(&cfg, &us_c).await?;
    assert!(topo.nodes.contains_key(&sync_core::NodeName::parse(LA)?));
    assert_eq!(
        topo.flows
            .iter()
            .map(|f| (f.from.to_string(), f.to.to_string(), f.group.clone()))
            .collect::<Vec<_>>(),
        vec![
            (
                LA.to_string(),
                "us-east".to_string(),
                "operational".to_string()
            ),
            ("us-east".to_string(), LA.to_string(), "master".to_string()),
        ]
    );

    // The token list shows each state, never a token.
    let (code, out, _) = hub.cli(&["token", "list", "--json"])?;
    assert_eq!(code, 0);
    for t in [&good, &expired, &revoked, &nyc] {
        assert!(!out.contains(t.as_str()), "a token is listed: {out}");
    }
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let status = |f: &str| {
        v.as_array()
            .unwrap()
            .iter()
            .find(|t| t["facility_id"] == f)
            .map(|t| t["status"].as_str().unwrap().to_string())
            .unwrap()
    };
    assert_eq!(status(LA), "used");
    assert_eq!(status("facility-exp-001"), "expired");
    assert_eq!(status("facility-rev-001"), "revoked");
    assert_eq!(status("facility-nyc-001"), "active");
    // A used token cannot be revoked (decommission the edge instead).
    let (code, _, err) = hub.cli(&["token", "revoke", &token_id(&hub, LA)?.to_string()])?;
    assert_eq!(code, 1);
    assert!(err.contains("already used"), "{err}");
    // Bad CLI input is refused before anything is stored.
    let (code, _, err) = hub.cli(&["token", "create", "--facility", "LA 1", "--tenant", A])?;
    assert_ne!(code, 0);
    assert!(err.contains("invalid facility id"), "{err}");
    let (code, _, err) = hub.cli(&[
        "token",
        "create",
        "--facility",
        LA,
        "--tenant",
        A,
        "--expires",
        "2001-01-01T00:00:00Z",
    ])?;
    assert_eq!(code, 1);
    assert!(err.contains("in the past"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
