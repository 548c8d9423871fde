//! WAL kept for an offline regional is bounded: /health turns degraded at half the bound,
//! unhealthy when the slot is lost anyway; the regional's next reconcile resyncs by a merging
//! copy, and every row written on the edge arrives exactly once.

use std::time::Duration;

use agog_tests::edge_box::{EdgeBox, EdgeBoxConfig};
use agog_tests::fleet::{checksum, exec, regional_side, subscription_errors, wait_count};
use agog_tests::{wait_until, Cluster};
use sync_core::{plan_node, reconcile_node, NodeName};

const LA: &str = "facility-la-001";
const A: &str = "tenant-foo-inc";
const T: Duration = Duration::from_secs(90);

/// ~1 MB of operational rows (1,000 production logs of 1 kB each) in one transaction.
async fn write_mb(c: &tokio_postgres::Client, batch: usize) -> anyhow::Result<()> {
    exec(
        c,
        &format!(
            "INSERT INTO production_logs (facility_id, tenant_id, line, quantity, notes)
             SELECT '{LA}', '{A}', 'line-{batch}', g, repeat(md5(g::text), 32) FROM generate_series(1, 1000) g"
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_slot_degrades_health_then_resyncs_without_loss_or_duplicates() -> anyhow::Result<()>
{
    let us = Cluster::start("wal-us")?;
    let usm = Cluster::start("wal-usm")?;
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
    edge.edit_config("wal_keep_mb = 64", "wal_keep_mb = 24")?;
    edge.edit_config(
        "shared_buffers = \"32MB\"",
        "shared_buffers = \"32MB\", max_wal_size = \"48MB\", min_wal_size = \"32MB\"",
    )?;
    let topo = regional_side(&us, &usm, "la", LA, A, edge.replication_conninfo());
    let us_node = NodeName::parse("us-east")?;
    reconcile_node(&topo, &NodeName::parse("us-east-master")?).await?;
    edge.start()?;
    wait_until("regional subscribed", T, || async {
        Ok(reconcile_node(&topo, &us_node)
            .await?
            .blocked
            .is_empty()
            .then_some(()))
    })
    .await?;
    edge.wait_status("healthy", T).await?;
    let edge_c = edge.client().await?;
    write_mb(&edge_c, 0).await?;
    wait_count(
        &us.client().await?,
        "SELECT 1 FROM production_logs",
        1000,
        T,
    )
    .await?;

    // The regional goes away; the edge keeps writing.
    us.stop()?;
    let mut batch = 1;
    while batch < 16 {
        write_mb(&edge_c, batch).await?;
        batch += 1;
    }
    let degraded = edge.wait_status("degraded", T).await?;
    assert!(
        degraded["reasons"]
            .to_string()
            .contains("over 50% of the 24 MB bound"),
        "{degraded}"
    );

    // Past the bound, a checkpoint removes the WAL: the slot is lost.
    while batch < 40 {
        write_mb(&edge_c, batch).await?;
        batch += 1;
    }
    exec(&edge_c, "CHECKPOINT").await?;
    let lost = edge.wait_status("unhealthy", T).await?;
    assert!(
        lost["reasons"].to_string().contains("lost its WAL"),
        "{lost}"
    );
    let written = batch as i64 * 1000;

    // The regional comes back; its reconcile sees the lost slot and resyncs.
    us.restart()?;
    let plan = plan_node(&topo, &us_node).await?.to_string();
    assert!(
        plan.contains("lost its WAL: resync us_east_from_la"),
        "{plan}"
    );
    wait_until("resync planned and applied", T, || async {
        let p = reconcile_node(&topo, &us_node).await?;
        Ok((p.steps.is_empty() && p.blocked.is_empty()).then_some(()))
    })
    .await?;
    let us_c = us.client().await?;
    wait_count(&us_c, "SELECT 1 FROM production_logs", written, T).await?;
    assert_eq!(
        checksum(&us_c, "production_logs", "true", "facility_id, id").await?,
        checksum(&edge_c, "production_logs", "true", "facility_id, id").await?,
        "regional and edge differ after the resync"
    );
    assert_eq!(
        subscription_errors(&us_c).await?,
        0,
        "the merging copy must not fail on rows already there"
    );
    // Streaming works again from the new slot.
    exec(&edge_c, &format!("INSERT INTO orders (facility_id, tenant_id, order_number) VALUES ('{LA}', '{A}', 'after-resync')")).await?;
    wait_count(
        &us_c,
        "SELECT 1 FROM orders WHERE order_number = 'after-resync'",
        1,
        T,
    )
    .await?;
    edge.wait_status("healthy", T).await?;
    Ok(())
}
