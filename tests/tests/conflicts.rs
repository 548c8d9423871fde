//! Conflicts resolve by ownership without a human: an incoming row whose key already exists
//! replaces the local one (the publisher owns it), the local version is kept in the conflict
//! log, and the subscription never stops.

use std::time::Duration;

use agog_tests::fleet::{
    checksum, count, exec, spec_toml, subscription_errors, wait_count, wait_subscriptions_ready,
    Node,
};
use agog_tests::Cluster;
use sync_core::{reconcile_all, Topology};

const T: Duration = Duration::from_secs(60);
const LA: &str = "facility-la-001";
const A: &str = "tenant-foo-inc";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_wins_both_ways_and_the_loser_is_logged() -> anyhow::Result<()> {
    let us = Cluster::start("cf-us")?;
    let la = Cluster::start("cf-la")?;
    let topo = Topology::from_toml(&spec_toml(
        &[
            Node::regional("us-east", "us-east", &us),
            Node::edge("la", "us-east", LA, A, &la),
        ],
        &[
            ("la", "us-east", "operational"),
            ("us-east", "la", "master"),
        ],
    ))?;
    for r in reconcile_all(&topo, 3).await {
        r?;
    }
    let (us_c, la_c) = (us.client().await?, la.client().await?);
    wait_subscriptions_ready(&us_c, T).await?;
    wait_subscriptions_ready(&la_c, T).await?;

    // Stale rows from an earlier life of each node, with the keys the owners are about to use
    // (written bypassing the guards, as only a restore or a resync would).
    let (customer, order) = (
        "6f1c0f0e-0000-4000-8000-000000000001",
        "6f1c0f0e-0000-4000-8000-000000000002",
    );
    exec(&la_c, &format!(
        "BEGIN; SET LOCAL session_replication_role = replica;
         INSERT INTO customers (tenant_id, id, name) VALUES ('{A}', '{customer}', 'stale name on the edge');
         COMMIT;"
    )).await?;
    exec(&us_c, &format!(
        "BEGIN; SET LOCAL session_replication_role = replica;
         INSERT INTO orders (facility_id, id, tenant_id, order_number) VALUES ('{LA}', '{order}', '{A}', 'STALE-ON-REGIONAL');
         COMMIT;"
    )).await?;

    // The owners write those keys.
    exec(&us_c, &format!("INSERT INTO customers (tenant_id, id, name) VALUES ('{A}', '{customer}', 'Acme Packaging')")).await?;
    exec(&la_c, &format!("INSERT INTO orders (facility_id, id, tenant_id, order_number) VALUES ('{LA}', '{order}', '{A}', 'LA-REAL')")).await?;
    wait_count(
        &la_c,
        "SELECT 1 FROM customers WHERE name = 'Acme Packaging'",
        1,
        T,
    )
    .await?;
    wait_count(
        &us_c,
        "SELECT 1 FROM orders WHERE order_number = 'LA-REAL'",
        1,
        T,
    )
    .await?;
    assert_eq!(
        count(&la_c, "SELECT 1 FROM customers").await?,
        1,
        "no duplicate on the edge"
    );
    assert_eq!(
        count(&us_c, "SELECT 1 FROM orders").await?,
        1,
        "no duplicate on the regional"
    );

    // The losers are kept for audit, and no apply ever failed.
    let row = la_c
        .query_one(
            "SELECT table_name, key->>'id', losing_row->>'name', error FROM agog_sync.conflict_log",
            &[],
        )
        .await?;
    assert_eq!(row.get::<_, String>(0), "public.customers");
    assert_eq!(row.get::<_, String>(1), customer);
    assert_eq!(row.get::<_, String>(2), "stale name on the edge");
    assert_eq!(row.get::<_, String>(3), "insert_exists");
    let row = us_c
        .query_one(
            "SELECT losing_row->>'order_number' FROM agog_sync.conflict_log",
            &[],
        )
        .await?;
    assert_eq!(row.get::<_, String>(0), "STALE-ON-REGIONAL");
    assert_eq!(subscription_errors(&la_c).await?, 0);
    assert_eq!(subscription_errors(&us_c).await?, 0);

    // Local writes are untouched by the merge: the trigger fires for replication only.
    let e = la_c
        .batch_execute(&format!("INSERT INTO orders (facility_id, id, tenant_id, order_number) VALUES ('{LA}', '{order}', '{A}', 'dup')"))
        .await
        .expect_err("a local duplicate still fails");
    assert!(
        e.as_db_error().unwrap().message().contains("duplicate key"),
        "{e:?}"
    );
    assert_eq!(
        checksum(&la_c, "orders", "true", "id").await?,
        checksum(&us_c, "orders", "true", "id").await?
    );
    Ok(())
}
