//! Building topology specs over harness clusters, and the queries tests ask of them.

use std::fmt::Write;
use std::time::Duration;

use anyhow::Result;
use tokio_postgres::Client;

use crate::{wait_until, Cluster};

/// One node of a test topology.
pub struct Node<'a> {
    pub name: &'a str,
    pub kind: &'a str,
    pub region: &'a str,
    pub facility: Option<&'a str>,
    pub tenant: Option<&'a str>,
    pub cluster: &'a Cluster,
}

impl<'a> Node<'a> {
    pub fn regional(name: &'a str, region: &'a str, cluster: &'a Cluster) -> Self {
        Node {
            name,
            kind: "regional",
            region,
            facility: None,
            tenant: None,
            cluster,
        }
    }
    pub fn master(name: &'a str, region: &'a str, cluster: &'a Cluster) -> Self {
        Node {
            name,
            kind: "master",
            region,
            facility: None,
            tenant: None,
            cluster,
        }
    }
    pub fn edge(
        name: &'a str,
        region: &'a str,
        facility: &'a str,
        tenant: &'a str,
        cluster: &'a Cluster,
    ) -> Self {
        Node {
            name,
            kind: "edge",
            region,
            facility: Some(facility),
            tenant: Some(tenant),
            cluster,
        }
    }
}

/// A spec in the TOML form operators write, so tests go through the same parser.
pub fn spec_toml(nodes: &[Node], flows: &[(&str, &str, &str)]) -> String {
    let mut s = String::new();
    for n in nodes {
        let _ = writeln!(
            s,
            "[[nodes]]\nname = \"{}\"\nkind = \"{}\"\nregion = \"{}\"",
            n.name, n.kind, n.region
        );
        if let Some(f) = n.facility {
            let _ = writeln!(s, "facility = \"{f}\"");
        }
        if let Some(t) = n.tenant {
            let _ = writeln!(s, "tenant = \"{t}\"");
        }
        let _ = writeln!(s, "admin = \"{}\"\n", n.cluster.conninfo());
    }
    for (from, to, group) in flows {
        let _ = writeln!(
            s,
            "[[flows]]\nfrom = \"{from}\"\nto = \"{to}\"\ngroup = \"{group}\"\n"
        );
    }
    s
}

pub async fn count(c: &Client, sql: &str) -> Result<i64> {
    Ok(c.query_one(&format!("SELECT count(*) FROM ({sql}) q"), &[])
        .await?
        .get(0))
}

/// Row count and an md5 over every column of every row, in key order: equal on two nodes
/// means the same rows with the same values.
pub async fn checksum(
    c: &Client,
    table: &str,
    filter: &str,
    order_by: &str,
) -> Result<(i64, String)> {
    let row = c
        .query_one(
            &format!(
                "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY {order_by})), '') FROM {table} t WHERE {filter}"
            ),
            &[],
        )
        .await?;
    Ok((row.get(0), row.get(1)))
}

/// Wait until every subscription on this node has finished its initial copy and has a
/// running apply worker.
pub async fn wait_subscriptions_ready(c: &Client, timeout: Duration) -> Result<()> {
    wait_until("subscriptions ready", timeout, || async {
        let not_ready: i64 = c
            .query_one("SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'", &[])
            .await?
            .get(0);
        let no_worker: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_subscription s
                  WHERE s.subenabled AND NOT EXISTS (
                        SELECT 1 FROM pg_stat_subscription w WHERE w.subid = s.oid AND w.pid IS NOT NULL AND w.relid IS NULL)",
                &[],
            )
            .await?
            .get(0);
        Ok((not_ready == 0 && no_worker == 0).then_some(()))
    })
    .await
}

/// Wait until `sql` (a count query) returns `want`.
pub async fn wait_count(c: &Client, sql: &str, want: i64, timeout: Duration) -> Result<()> {
    let what = format!("{sql} = {want}");
    let last = std::cell::Cell::new(-1);
    let r = wait_until(&what, timeout, || async {
        let n = count(c, sql).await?;
        last.set(n);
        Ok((n == want).then_some(()))
    })
    .await;
    r.map_err(|e| e.context(format!("last count was {}", last.get())))
}

/// Apply and table-sync errors of every subscription on this node (`pg_stat_subscription_stats`).
pub async fn subscription_errors(c: &Client) -> Result<i64> {
    Ok(c
        .query_one("SELECT coalesce(sum(apply_error_count + sync_error_count), 0)::bigint FROM pg_stat_subscription_stats", &[])
        .await?
        .get(0))
}

/// (apply errors, table-sync errors) of every subscription of the node.
pub async fn subscription_error_counts(c: &Client) -> Result<(i64, i64)> {
    let r = c
        .query_one(
            "SELECT coalesce(sum(apply_error_count), 0)::bigint, coalesce(sum(sync_error_count), 0)::bigint
               FROM pg_stat_subscription_stats",
            &[],
        )
        .await?;
    Ok((r.get(0), r.get(1)))
}

/// Run SQL that must succeed; on failure the error says what PostgreSQL said and which SQL.
pub async fn exec(c: &Client, sql: &str) -> Result<()> {
    c.batch_execute(sql)
        .await
        .map_err(|e| anyhow::anyhow!("{}\n  in: {}", sync_core::apply::describe(&e), sql.trim()))
}

/// The regional side of one edge, as the hub drives it: us-east subscribes to the edge (through
/// the edge's replication role), us-east-master publishes the edge tenant's master data.
pub fn regional_side(
    us: &Cluster,
    usm: &Cluster,
    edge: &str,
    facility: &str,
    tenant: &str,
    edge_conninfo: String,
) -> sync_core::Topology {
    use sync_core::spec::{default_groups, FlowSpec, NodeKind, NodeSpec};
    let n = |s: &str| sync_core::NodeName::parse(s).expect("node name");
    let node =
        |name: &str, kind, facility: Option<&str>, tenant: Option<&str>, admin: String| NodeSpec {
            name: n(name),
            kind,
            region: "us-east".parse().expect("region"),
            facility: facility.map(|f| f.parse().expect("facility")),
            tenant: tenant.map(|t| t.parse().expect("tenant")),
            admin,
            replication: None,
        };
    sync_core::Topology::build(
        default_groups(),
        vec![
            node("us-east", NodeKind::Regional, None, None, us.conninfo()),
            node(
                "us-east-master",
                NodeKind::Master,
                None,
                None,
                usm.conninfo(),
            ),
            node(
                edge,
                NodeKind::Edge,
                Some(facility),
                Some(tenant),
                edge_conninfo,
            ),
        ],
        vec![
            FlowSpec {
                from: n(edge),
                to: n("us-east"),
                group: "operational".into(),
            },
            FlowSpec {
                from: n("us-east-master"),
                to: n(edge),
                group: "master".into(),
            },
        ],
    )
    .expect("regional-side topology")
}
