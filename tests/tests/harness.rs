//! The harness itself: clusters start in parallel on distinct ports, speak PostgreSQL 16 with
//! pgvector and logical replication settings, and vanish when dropped.

use agog_tests::Cluster;

#[tokio::test]
async fn clusters_start_in_parallel_and_are_removed_on_drop() -> anyhow::Result<()> {
    let (a, b) = (Cluster::start("h-a")?, Cluster::start("h-b")?);
    assert_ne!(a.port, b.port);
    let c = a.client().await?;
    let v: String = c.query_one("SHOW server_version", &[]).await?.get(0);
    assert!(v.starts_with("16."), "server version {v}");
    let wal: String = c.query_one("SHOW wal_level", &[]).await?.get(0);
    assert_eq!(wal, "logical");
    c.batch_execute("CREATE EXTENSION vector").await?;
    let d: f64 = c
        .query_one("SELECT '[1,2,3]'::vector <-> '[1,2,4]'::vector", &[])
        .await?
        .get(0);
    assert_eq!(d, 1.0);
    let dir = a.dir.clone();
    drop(c);
    drop(a);
    assert!(
        !dir.exists(),
        "cluster directory {} left behind",
        dir.display()
    );
    b.client().await?.query_one("SELECT 1", &[]).await?;
    Ok(())
}

#[tokio::test]
async fn stop_and_restart_keep_the_data() -> anyhow::Result<()> {
    let a = Cluster::start("h-restart")?;
    a.client()
        .await?
        .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (7)")
        .await?;
    a.stop()?;
    assert!(
        a.client().await.is_err(),
        "a stopped cluster must refuse connections"
    );
    a.restart()?;
    let x: i32 = a
        .client()
        .await?
        .query_one("SELECT x FROM t", &[])
        .await?
        .get(0);
    assert_eq!(x, 7);
    Ok(())
}
