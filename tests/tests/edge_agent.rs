//! The edge agent as a real process on a bare data directory, with a real regional and a real
//! master-data publisher: boot to healthy and synced, /health field by field, PostgreSQL killed
//! and restarted by the agent, the agent killed mid-reconcile, `status` and `doctor`.

use std::time::Duration;

use agog_tests::edge_box::{EdgeBox, EdgeBoxConfig};
use agog_tests::fleet::{count, exec, regional_side, wait_count};
use agog_tests::{wait_until, Cluster};
use sync_core::Topology;
use sync_core::{reconcile_node, NodeName};

const LA: &str = "facility-la-001";
const A: &str = "tenant-foo-inc";
const T: Duration = Duration::from_secs(90);

fn n(s: &str) -> NodeName {
    NodeName::parse(s).unwrap()
}

fn regional_topology(us: &Cluster, usm: &Cluster, edge: &EdgeBox) -> Topology {
    regional_side(us, usm, &edge.name, LA, A, edge.replication_conninfo())
}

fn edge_config(usm: &Cluster, reconcile_secs: u64) -> EdgeBoxConfig<'static> {
    EdgeBoxConfig {
        node: "la",
        facility: LA,
        tenant: A,
        region: "us-east",
        regional_node: "us-east",
        master_node: "us-east-master",
        master_conninfo: usm.conninfo(),
        reconcile_secs,
    }
}

/// Drive the regional side until its subscription to the edge exists (the edge must have
/// published first).
async fn reconcile_regional(topo: &Topology) -> anyhow::Result<()> {
    reconcile_node(topo, &n("us-east-master")).await?;
    wait_until("regional subscribed to the edge", T, || async {
        let plan = reconcile_node(topo, &n("us-east")).await?;
        Ok((plan.blocked.is_empty()).then_some(()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boots_from_a_bare_disk_to_a_healthy_synced_edge_and_heals() -> anyhow::Result<()> {
    // The regional gives up a replication connection into a killed server after 10 s of
    // silence instead of the default 60 s (the kill below can leave one half-open under load).
    let us = Cluster::start_with("ag-us", &[("wal_receiver_timeout", "10s")])?;
    let usm = Cluster::start("ag-usm")?;
    let mut edge = EdgeBox::new(&edge_config(&usm, 2))?;
    let topo = regional_topology(&us, &usm, &edge);
    reconcile_node(&topo, &n("us-east-master")).await?;
    assert!(
        !edge.dir.join("pgdata/PG_VERSION").exists(),
        "the data directory starts empty"
    );
    edge.start()?;

    // /health answers before PostgreSQL exists, and not with 200.
    let (code, body) = wait_until("health answers", T, || async {
        Ok(edge.health().await.ok())
    })
    .await?;
    assert_ne!(code, 200, "{body}");

    reconcile_regional(&topo).await?;
    edge.wait_status("healthy", T).await?;
    // Once the regional's initial copy is done its apply worker holds the slot.
    let h = wait_until("the regional streams from the edge's slot", T, || async {
        let (_, h) = edge.health().await?;
        Ok(
            // Only the regional's own slot: the initial copy's tablesync slots are gone.
            (h["status"] == "healthy"
                && h["replication"]["slots"].as_array().map(|s| s.len()) == Some(1)
                && h["replication"]["slots"][0]["active"] == true)
                .then_some(h),
        )
    })
    .await?;
    let (code, _) = edge.health().await?;
    assert_eq!(code, 200);
    assert_eq!(h["facility_id"], LA);
    assert_eq!(h["node"], "la");
    assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    assert!(h["uptime_seconds"].as_u64().is_some());
    assert!(h["reasons"].as_array().unwrap().is_empty(), "{h}");
    assert_eq!(h["schema_version"], sync_core::schema::latest_version());
    assert_eq!(h["postgres"]["up"], true);
    assert!(
        h["postgres"]["version"]
            .as_str()
            .unwrap()
            .starts_with("16."),
        "{h}"
    );
    assert!(h["postgres"]["disk_free_bytes"].as_u64().unwrap() > 0);
    assert_eq!(h["postgres"]["restarts"], 0);
    assert_eq!(h["replication"]["wal_keep_limit_bytes"], 64 << 20);
    let slots = h["replication"]["slots"].as_array().unwrap();
    assert_eq!(slots.len(), 1, "{h}");
    assert_eq!(slots[0]["name"], "us_east_from_la_slot");
    assert_eq!(slots[0]["active"], true);
    assert_eq!(slots[0]["wal_status"], "reserved");
    let subs = h["replication"]["subscriptions"].as_array().unwrap();
    assert_eq!(subs.len(), 1, "{h}");
    assert_eq!(subs[0]["name"], "la_from_us_east_master");
    assert_eq!(subs[0]["enabled"], true);
    assert_eq!(subs[0]["worker_running"], true);
    assert_eq!(subs[0]["apply_errors"], 0);
    assert!(subs[0]["last_message_at"].is_string(), "{h}");
    assert_eq!(h["reconcile"]["ok"], true);
    assert!(h["reconcile"]["error"].is_null());

    // Synced both ways: master data down, operational data and heartbeats up.
    let (edge_c, us_c, usm_c) = (
        edge.client().await?,
        us.client().await?,
        usm.client().await?,
    );
    exec(&usm_c, &format!("INSERT INTO products (tenant_id, sku, name) VALUES ('{A}', 'BOX', 'Box'), ('tenant-other', 'X', 'X')")).await?;
    wait_count(&edge_c, "SELECT 1 FROM products", 1, T).await?;
    exec(&edge_c, &format!("INSERT INTO orders (facility_id, tenant_id, order_number) VALUES ('{LA}', '{A}', 'LA-1')")).await?;
    wait_count(&us_c, "SELECT 1 FROM orders", 1, T).await?;
    wait_count(&us_c, &format!("SELECT 1 FROM edge_heartbeats WHERE facility_id = '{LA}' AND beat_at > now() - interval '10 seconds'"), 1, T).await?;

    // The CLI: status (readable and JSON), doctor all green.
    let (code, out) = edge.cli(&["status"])?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("facility-la-001 (la): OK"), "{out}");
    let (code, out) = edge.cli(&["status", "--json"])?;
    assert_eq!(code, 0);
    let j: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(j["status"], "healthy");
    let (code, out) = edge.cli(&["doctor"])?;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("[ok  ] subscription la_from_us_east_master: streaming"),
        "{out}"
    );
    assert!(
        out.contains("[ok  ] upstream: reachable, clock within"),
        "{out}"
    );

    // PostgreSQL dies: /health turns unhealthy, the agent restarts it, healthy again.
    let pid = edge.postgres_pid().expect("postmaster.pid");
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let down = edge.wait_status("unhealthy", T).await?;
    assert!(
        down["reasons"][0]
            .as_str()
            .unwrap()
            .contains("PostgreSQL is down"),
        "{down}"
    );
    let (code, _) = edge.health().await?;
    assert_eq!(code, 503);
    let back = edge.wait_status("healthy", T).await?;
    assert_eq!(back["postgres"]["restarts"], 1, "{back}");
    assert_ne!(edge.postgres_pid(), Some(pid));
    let edge_c = edge.client().await?;
    exec(&edge_c, &format!("INSERT INTO orders (facility_id, tenant_id, order_number) VALUES ('{LA}', '{A}', 'LA-2')")).await?;
    // The regional's apply worker reconnects by itself; on a loaded machine a connection it
    // held into the killed server is given up after wal_receiver_timeout (10 s here).
    let after_restart =
        wait_count(&us_c, "SELECT 1 FROM orders", 2, Duration::from_secs(180)).await;
    if after_restart.is_err() {
        // Keep the evidence: the harness saves logs when the test panics.
        panic!("LA-2 never reached the regional after the edge's PostgreSQL restart: {after_restart:?}");
    }

    // A clean stop stops PostgreSQL too.
    edge.stop()?;
    assert!(
        edge.postgres_pid()
            .is_none_or(|p| unsafe { libc::kill(p, 0) } != 0),
        "postgres still running after stop"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_reconcile_the_agent_converges_after_restart() -> anyhow::Result<()> {
    let us = Cluster::start("km-us")?;
    let usm = Cluster::start("km-usm")?;
    let mut edge = EdgeBox::new(&edge_config(&usm, 2))?;
    let topo = regional_topology(&us, &usm, &edge);
    reconcile_node(&topo, &n("us-east-master")).await?;
    edge.start()?;
    // SIGKILL as soon as the first plan starts applying (the migration is its first step).
    wait_until("the agent starts applying its plan", T, || async {
        Ok(edge.log().contains("applying").then_some(()))
    })
    .await?;
    edge.kill();
    let orphan = edge.postgres_pid();
    assert!(orphan.is_some(), "postgres outlives its killed agent");

    edge.start()?;
    reconcile_regional(&topo).await?;
    edge.wait_status("healthy", T).await?;
    assert!(
        edge.log().contains("still up: stopping it"),
        "the restarted agent takes over the orphaned server"
    );
    let (code, out) = edge.cli(&["plan"])?;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("-- node la: nothing to do"), "{out}");
    let us_c = us.client().await?;
    let edge_c = edge.client().await?;
    exec(&edge_c, &format!("INSERT INTO orders (facility_id, tenant_id, order_number) VALUES ('{LA}', '{A}', 'after-kill')")).await?;
    wait_count(&us_c, "SELECT 1 FROM orders", 1, T).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_reports_a_stopped_subscription_with_its_fix() -> anyhow::Result<()> {
    let us = Cluster::start("dr-us")?;
    let usm = Cluster::start("dr-usm")?;
    // Reconcile rarely, so the agent does not repair the subscription before doctor looks.
    let mut edge = EdgeBox::new(&edge_config(&usm, 3600))?;
    let topo = regional_topology(&us, &usm, &edge);
    reconcile_node(&topo, &n("us-east-master")).await?;
    edge.start()?;
    reconcile_regional(&topo).await?;
    edge.wait_status("healthy", T).await?;
    let edge_c = edge.client().await?;
    exec(&edge_c, "ALTER SUBSCRIPTION la_from_us_east_master DISABLE").await?;
    let (code, out) = edge.cli(&["doctor"])?;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("[FAIL] subscription la_from_us_east_master: disabled"),
        "{out}"
    );
    assert!(
        out.contains("fix: psql agog -c 'ALTER SUBSCRIPTION la_from_us_east_master ENABLE'"),
        "{out}"
    );
    let degraded = edge.wait_status("degraded", T).await?;
    assert!(
        degraded["reasons"]
            .to_string()
            .contains("subscription la_from_us_east_master is disabled"),
        "{degraded}"
    );
    let (code, out) = edge.cli(&["status"])?;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("DEGRADED"), "{out}");
    let (code, out) = edge.cli(&["doctor", "--json"])?;
    assert_eq!(code, 1);
    let checks: serde_json::Value = serde_json::from_str(&out)?;
    assert!(checks
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["outcome"] == "fail" && c["fix"].is_string()));
    assert_eq!(
        count(
            &edge_c,
            "SELECT 1 FROM pg_subscription WHERE NOT subenabled"
        )
        .await?,
        1
    );
    Ok(())
}
