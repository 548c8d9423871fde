//! The reconciler on real clusters: idempotent, resumable after a cut-off run, repairs drift,
//! removes what left the spec, and refuses bad input before any SQL runs.

use std::time::Duration;

use agog_tests::fleet::{count, exec, spec_toml, wait_count, wait_subscriptions_ready, Node};
use agog_tests::Cluster;
use sync_core::reconcile::reconcile_node_limited;
use sync_core::{plan_node, reconcile_all, reconcile_node, NodeName, Topology};

const T: Duration = Duration::from_secs(60);
const LA: &str = "facility-la-001";
const A: &str = "tenant-foo-inc";

fn n(s: &str) -> NodeName {
    NodeName::parse(s).unwrap()
}

/// One edge publishing its operational tables to its regional.
fn la_to_us_east(us: &Cluster, la: &Cluster) -> anyhow::Result<Topology> {
    Ok(Topology::from_toml(&spec_toml(
        &[
            Node::regional("us-east", "us-east", us),
            Node::edge("la", "us-east", LA, A, la),
        ],
        &[("la", "us-east", "operational")],
    ))?)
}

async fn assert_settled(topo: &Topology) -> anyhow::Result<()> {
    for node in topo.nodes.keys() {
        let plan = plan_node(topo, node).await?;
        assert!(
            plan.steps.is_empty() && plan.blocked.is_empty(),
            "node {node} is not settled:\n{plan}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_twice_changes_nothing_and_a_cut_off_run_converges() -> anyhow::Result<()> {
    let us = Cluster::start("rc-us")?;
    let usm = Cluster::start("rc-usm")?;
    let la = Cluster::start("rc-la")?;
    let nodes = [
        Node::regional("us-east", "us-east", &us),
        Node::master("us-east-master", "us-east", &usm),
        Node::edge("la", "us-east", LA, A, &la),
    ];
    let flows = [
        ("la", "us-east", "operational"),
        ("us-east-master", "la", "master"),
    ];
    let topo = Topology::from_toml(&spec_toml(&nodes, &flows))?;

    // Cut every node's first run off after two steps, as a crash would.
    for node in ["la", "us-east-master", "us-east"] {
        let plan = reconcile_node_limited(&topo, &n(node), Some(2)).await?;
        assert!(
            plan.steps.len() > 2 || node == "us-east",
            "plan of {node} is shorter than expected:\n{plan}"
        );
    }
    let la_plan = plan_node(&topo, &n("la")).await?;
    assert!(
        !la_plan.steps.is_empty(),
        "la's run was cut off, so work must remain"
    );
    assert!(
        la_plan.to_string().contains("CREATE PUBLICATION"),
        "{la_plan}"
    );

    // The next full run finishes the job; the one after that has nothing to do.
    for r in reconcile_all(&topo, 3).await {
        r?;
    }
    assert_settled(&topo).await?;
    let second: Vec<_> = reconcile_all(&topo, 1)
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    assert!(
        second.iter().all(|p| p.steps.is_empty()),
        "second apply changed something"
    );

    let (us_c, la_c, usm_c) = (us.client().await?, la.client().await?, usm.client().await?);
    wait_subscriptions_ready(&us_c, T).await?;
    wait_subscriptions_ready(&la_c, T).await?;
    exec(&la_c, &format!("INSERT INTO orders (facility_id, tenant_id, order_number) VALUES ('{LA}', '{A}', 'O-1')")).await?;
    exec(
        &usm_c,
        &format!("INSERT INTO products (tenant_id, sku, name) VALUES ('{A}', 'SKU-1', 'Tape')"),
    )
    .await?;
    wait_count(&us_c, "SELECT 1 FROM orders", 1, T).await?;
    wait_count(&la_c, "SELECT 1 FROM products", 1, T).await?;

    // Drift: someone drops the publication's row filter and disables the subscription by hand.
    exec(
        &la_c,
        "ALTER PUBLICATION pub_operational_facility_la_001 SET TABLE public.orders",
    )
    .await?;
    exec(&us_c, "ALTER SUBSCRIPTION us_east_from_la DISABLE").await?;
    let la_plan = plan_node(&topo, &n("la")).await?.to_string();
    assert!(
        la_plan.contains("ALTER PUBLICATION \"pub_operational_facility_la_001\" SET TABLE"),
        "{la_plan}"
    );
    assert!(
        la_plan.contains("WHERE (\"facility_id\" = 'facility-la-001')"),
        "{la_plan}"
    );
    let us_plan = plan_node(&topo, &n("us-east")).await?.to_string();
    assert!(
        us_plan.contains("ALTER SUBSCRIPTION \"us_east_from_la\" ENABLE"),
        "{us_plan}"
    );
    reconcile_node(&topo, &n("la")).await?;
    reconcile_node(&topo, &n("us-east")).await?;
    // The restored publication has all its tables again: the subscriber refreshes to pick them up.
    for r in reconcile_all(&topo, 3).await {
        r?;
    }
    assert_settled(&topo).await?;
    wait_subscriptions_ready(&us_c, T).await?;
    exec(&la_c, &format!("INSERT INTO production_logs (facility_id, tenant_id, line) VALUES ('{LA}', '{A}', 'line-2')")).await?;
    wait_count(&us_c, "SELECT 1 FROM production_logs", 1, T).await?;

    // A flow leaves the spec: the subscription is dropped on the subscriber, then the slot on
    // the publisher, without waiting on the publisher.
    let smaller = Topology::from_toml(&spec_toml(&nodes, &flows[..1]))?;
    let la_plan = reconcile_node(&smaller, &n("la")).await?.to_string();
    assert!(
        la_plan.contains("DROP SUBSCRIPTION \"la_from_us_east_master\""),
        "{la_plan}"
    );
    let usm_plan = reconcile_node(&smaller, &n("us-east-master"))
        .await?
        .to_string();
    assert!(
        usm_plan.contains("DROP PUBLICATION \"pub_master_tenant_foo_inc\""),
        "{usm_plan}"
    );
    assert!(
        usm_plan.contains("pg_drop_replication_slot('la_from_us_east_master_slot')"),
        "{usm_plan}"
    );
    assert_eq!(
        count(&usm_c, "SELECT 1 FROM pg_replication_slots").await?,
        0
    );
    assert_settled(&smaller).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_orphan_slot_from_an_interrupted_create_is_replaced() -> anyhow::Result<()> {
    let us = Cluster::start("orph-us")?;
    let la = Cluster::start("orph-la")?;
    let topo = la_to_us_east(&us, &la)?;
    reconcile_node(&topo, &n("la")).await?;
    // CREATE SUBSCRIPTION made the slot on the publisher, then the subscriber died before commit.
    let la_c = la.client().await?;
    exec(
        &la_c,
        "SELECT pg_create_logical_replication_slot('us_east_from_la_slot', 'pgoutput')",
    )
    .await?;
    let plan = plan_node(&topo, &n("us-east")).await?.to_string();
    assert!(
        plan.contains("-- on la:\nSELECT pg_drop_replication_slot('us_east_from_la_slot')"),
        "{plan}"
    );
    for r in reconcile_all(&topo, 2).await {
        r?;
    }
    assert_settled(&topo).await?;
    let us_c = us.client().await?;
    wait_subscriptions_ready(&us_c, T).await?;
    exec(&la_c, &format!("INSERT INTO orders (facility_id, tenant_id, order_number) VALUES ('{LA}', '{A}', 'after-orphan')")).await?;
    wait_count(&us_c, "SELECT 1 FROM orders", 1, T).await?;
    Ok(())
}

/// CREATE SUBSCRIPTION waits for every transaction open on the publisher while it makes its slot
/// there. When an edge and its hub subscribe to each other at the same moment, each one's
/// CREATE SUBSCRIPTION is such a transaction for the other, and without a bound both waited
/// for ever (the lab's edge once hung 240 s in it). Here a transaction held open on the
/// publisher stands for the other side: the bounded CREATE SUBSCRIPTION gives up with a clear
/// error, leaves no subscription, and once the publisher's transaction ends the reconciler makes
/// the subscription and data flows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_subscription_stuck_on_the_publisher_gives_up_and_the_next_run_makes_it(
) -> anyhow::Result<()> {
    let us = Cluster::start("stuck-us")?;
    let la = Cluster::start("stuck-la")?;
    let topo = la_to_us_east(&us, &la)?;
    reconcile_node(&topo, &n("la")).await?;
    // The other side's open transaction, with its XID.
    let blocker = la.client().await?;
    exec(&blocker, "BEGIN; SELECT txid_current();").await?;

    let plan = plan_node(&topo, &n("us-east")).await?;
    assert!(plan.to_string().contains("CREATE SUBSCRIPTION"), "{plan}");
    let mut us_c = us.client().await?;
    let started = std::time::Instant::now();
    let err = sync_core::apply::apply_steps_with(&mut us_c, &plan.steps, Duration::from_secs(3))
        .await
        .expect_err("the slot cannot be made while the publisher's transaction is open");
    let waited = started.elapsed();
    assert!(
        err.to_string()
            .contains("gave up after 3 s waiting for the publisher"),
        "{err}"
    );
    assert!(waited < Duration::from_secs(15), "{waited:?}");
    assert_eq!(count(&us_c, "SELECT 1 FROM pg_subscription").await?, 0);
    // The statement timeout was for that statement only.
    let timeout: String = us_c.query_one("SHOW statement_timeout", &[]).await?.get(0);
    assert_eq!(timeout, "0");

    // The other side finishes: the reconciler (retried as the agent and the hub do) makes it.
    exec(&blocker, "COMMIT").await?;
    agog_tests::wait_until("the subscription made", T, || async {
        Ok(reconcile_node(&topo, &n("us-east")).await.ok().map(|_| ()))
    })
    .await?;
    assert_settled(&topo).await?;
    wait_subscriptions_ready(&us_c, T).await?;
    // One slot on the publisher, the subscription's.
    let la_c = la.client().await?;
    wait_count(&la_c, "SELECT 1 FROM pg_replication_slots", 1, T).await?;
    exec(&la_c, &format!("INSERT INTO orders (facility_id, tenant_id, order_number) VALUES ('{LA}', '{A}', 'after-stuck')")).await?;
    wait_count(&us_c, "SELECT 1 FROM orders", 1, T).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_ids_and_bad_specs_execute_nothing() -> anyhow::Result<()> {
    let la = Cluster::start("bad-la")?;
    let us = Cluster::start("bad-us")?;
    let good = spec_toml(
        &[
            Node::regional("us-east", "us-east", &us),
            Node::edge("la", "us-east", LA, A, &la),
        ],
        &[("la", "us-east", "operational")],
    );
    let injected = good.replace(LA, "x'; drop table orders; --");
    let e = Topology::from_toml(&injected).unwrap_err().to_string();
    assert!(
        e.contains("invalid facility id \"x'; drop table orders; --\""),
        "{e}"
    );
    let e = Topology::from_toml(&good.replace("name = \"la\"", "name = \"la\\\"; DROP\""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid node id"), "{e}");
    let e = Topology::from_toml(&good.replace("[[flows]]", "[[flow]]"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `flow`"), "{e}");
    let e = Topology::from_toml(&good.replace("kind = \"edge\"", "kind = \"edgy\""))
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown variant `edgy`"), "{e}");
    let e = Topology::from_toml(&good.replace("dbname=agog", "dbname=agog port=notaport"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("admin connection string is invalid"), "{e}");
    // None of that reached a database: no schema, no publication, the tables untouched.
    for c in [la.client().await?, us.client().await?] {
        assert_eq!(
            count(&c, "SELECT 1 FROM pg_namespace WHERE nspname = 'agog_sync'").await?,
            0
        );
        assert_eq!(count(&c, "SELECT 1 FROM pg_publication").await?, 0);
        assert_eq!(count(&c, "SELECT 1 FROM pg_subscription").await?, 0);
    }
    let topo = Topology::from_toml(&good)?;
    let e = plan_node(&topo, &n("nyc")).await.unwrap_err().to_string();
    assert_eq!(e, "node nyc is not in the spec");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_behind_its_publishers_schema_refuses_to_subscribe() -> anyhow::Result<()> {
    let us = Cluster::start("ver-us")?;
    let la = Cluster::start("ver-la")?;
    let topo = la_to_us_east(&us, &la)?;
    reconcile_node(&topo, &n("la")).await?;
    // The edge was upgraded to a schema this build of the regional does not know yet.
    let la_c = la.client().await?;
    exec(
        &la_c,
        "INSERT INTO agog_sync.schema_migrations (version, name) VALUES (99, 'from the future')",
    )
    .await?;
    let plan = reconcile_node(&topo, &n("us-east")).await?;
    let text = plan.to_string();
    assert!(!text.contains("CREATE SUBSCRIPTION"), "{text}");
    assert_eq!(plan.blocked.len(), 1, "{text}");
    let reason = &plan.blocked[0].reason;
    assert!(
        reason.contains(&format!(
            "us-east (schema v{}) cannot subscribe to la (schema v99)",
            sync_core::schema::latest_version()
        )),
        "{reason}"
    );
    assert!(
        reason.contains("Upgrade us-east to v99 or later first"),
        "{reason}"
    );
    assert_eq!(
        count(&us.client().await?, "SELECT 1 FROM pg_subscription").await?,
        0
    );
    Ok(())
}
