//! An offline subscriber loses nothing: its slot holds the WAL while it is gone, and when it is
//! back both sides hold exactly the same rows.

use std::time::Duration;

use agog_tests::fleet::{checksum, exec, spec_toml, wait_count, wait_subscriptions_ready, Node};
use agog_tests::Cluster;
use sync_core::{reconcile_all, Topology};

const LA: &str = "facility-la-001";
const A: &str = "tenant-foo-inc";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_regional_catches_up_on_100k_rows_exactly() -> anyhow::Result<()> {
    let us = Cluster::start("off-us")?;
    let la = Cluster::start("off-la")?;
    let topo = Topology::from_toml(&spec_toml(
        &[
            Node::regional("us-east", "us-east", &us),
            Node::edge("la", "us-east", LA, A, &la),
        ],
        &[("la", "us-east", "operational")],
    ))?;
    for r in reconcile_all(&topo, 3).await {
        r?;
    }
    wait_subscriptions_ready(&us.client().await?, Duration::from_secs(60)).await?;

    us.stop()?;
    let la_c = la.client().await?;
    // 100,000 rows in 1,000 transactions, with updates and deletes mixed in.
    for batch in 0..1000 {
        exec(
            &la_c,
            &format!(
                "INSERT INTO orders (facility_id, tenant_id, order_number, total)
                 SELECT '{LA}', '{A}', 'B{batch}-' || g, g * 1.5 FROM generate_series(1, 100) g"
            ),
        )
        .await?;
    }
    exec(
        &la_c,
        "UPDATE orders SET status = 'shipped' WHERE order_number LIKE 'B7%'",
    )
    .await?;
    exec(&la_c, "DELETE FROM orders WHERE order_number LIKE 'B99%'").await?;
    let slot = la_c
        .query_one(
            "SELECT active, wal_status, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint
               FROM pg_replication_slots WHERE slot_name = 'us_east_from_la_slot'",
            &[],
        )
        .await?;
    let (active, wal_status, retained): (bool, String, i64) =
        (slot.get(0), slot.get(1), slot.get(2));
    assert!(!active, "the slot's subscriber is down");
    assert_eq!(wal_status, "reserved");
    assert!(
        retained > 10 << 20,
        "the slot should retain the backlog's WAL, retains {retained} bytes"
    );

    us.restart()?;
    let us_c = us.client().await?;
    let expected = checksum(&la_c, "orders", "true", "facility_id, id").await?;
    assert_eq!(
        expected.0,
        100_000 - 1_100,
        "rows on the edge after the deletes"
    );
    wait_count(
        &us_c,
        "SELECT 1 FROM orders",
        expected.0,
        Duration::from_secs(120),
    )
    .await?;
    wait_count(
        &us_c,
        "SELECT 1 FROM orders WHERE status = 'shipped'",
        11_100,
        Duration::from_secs(60),
    )
    .await?;
    assert_eq!(
        checksum(&us_c, "orders", "true", "facility_id, id").await?,
        expected,
        "regional differs from edge"
    );
    Ok(())
}
