//! The regional side of replication: the topology of this region as the hub's database knows
//! it (the regional node, the master-data publisher, every enrolled edge), reconciled with the
//! same reconciler the agents use. One replica at a time (an advisory lock on the regional
//! database); every `[reconcile] interval_secs` and right after an enrollment.

use std::sync::Arc;
use std::time::Duration;

use sync_core::spec::{default_groups, FlowSpec, NodeKind, NodeSpec, Topology};
use sync_core::{FacilityId, NodeName, TenantId};
use tokio::sync::{watch, Notify};
use tokio_postgres::Client;

use crate::config::HubConfig;

/// Held by the replica that drives the regional side ("AGOGHUBR"). Not the reconciler's own
/// lock key: `reconcile_node` takes that one on another session of the same database.
pub const REGIONAL_LOCK_KEY: i64 = 0x4147_4f47_4855_4252;

/// The region's topology: regional <- edge (operational), master -> edge (master).
pub async fn topology(cfg: &HubConfig, db: &Client) -> anyhow::Result<Topology> {
    let regional = cfg.node_name();
    let master = cfg.master_node();
    let mut nodes = vec![NodeSpec {
        name: regional.clone(),
        kind: NodeKind::Regional,
        region: cfg.region.clone(),
        facility: None,
        tenant: None,
        admin: cfg.database.clone(),
        replication: None,
    }];
    if cfg.separate_master() {
        nodes.push(NodeSpec {
            name: master.clone(),
            kind: NodeKind::Master,
            region: cfg.region.clone(),
            facility: None,
            tenant: None,
            admin: cfg.master_admin().to_owned(),
            replication: None,
        });
    }
    let mut flows = Vec::new();
    let rows = db
        .query(
            "SELECT facility_id, node, tenant_id, replication_conninfo FROM agog_hub.edges
              WHERE replication_conninfo IS NOT NULL ORDER BY facility_id",
            &[],
        )
        .await?;
    for r in rows {
        let (facility, node, tenant, conninfo): (String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let parsed = (
            FacilityId::parse(&facility),
            NodeName::parse(&node),
            TenantId::parse(&tenant),
        );
        let (Ok(facility), Ok(node), Ok(tenant)) = parsed else {
            tracing::error!(
                facility,
                node,
                tenant,
                "skipping an edge row with an invalid id"
            );
            continue;
        };
        nodes.push(NodeSpec {
            name: node.clone(),
            kind: NodeKind::Edge,
            region: cfg.region.clone(),
            facility: Some(facility),
            tenant: Some(tenant),
            // The hub never administers an edge; its entry names the publisher and how to reach it.
            admin: conninfo.clone(),
            replication: Some(conninfo),
        });
        flows.push(FlowSpec {
            from: node.clone(),
            to: regional.clone(),
            group: "operational".into(),
        });
        flows.push(FlowSpec {
            from: master.clone(),
            to: node,
            group: "master".into(),
        });
    }
    Ok(Topology::build(default_groups(), nodes, flows)?)
}

/// What one pass did.
#[derive(Debug)]
pub enum Pass {
    /// Another replica holds the lock.
    NotLeader,
    /// Reconciled; `blocked` lists what waits (e.g. an edge not reachable yet).
    Done { edges: usize, blocked: Vec<String> },
}

/// One pass: take the lock, read the topology, reconcile the master node then the regional.
pub async fn reconcile_once(cfg: &HubConfig) -> anyhow::Result<Pass> {
    let lock = sync_core::connect(&cfg.database).await.map_err(|e| {
        anyhow::anyhow!(
            "connect to the regional database: {}",
            sync_core::apply::describe(&e)
        )
    })?;
    let leader: bool = lock
        .query_one("SELECT pg_try_advisory_lock($1)", &[&REGIONAL_LOCK_KEY])
        .await?
        .get(0);
    if !leader {
        return Ok(Pass::NotLeader);
    }
    let topo = topology(cfg, &lock).await?;
    let edges = topo
        .nodes
        .values()
        .filter(|n| n.kind == NodeKind::Edge)
        .count();
    let mut blocked = Vec::new();
    let mut order = Vec::new();
    if cfg.separate_master() {
        order.push(cfg.master_node());
    }
    order.push(cfg.node_name());
    let mut first_error = None;
    for node in order {
        match sync_core::reconcile_node(&topo, &node).await {
            Ok(plan) => {
                blocked.extend(
                    plan.blocked
                        .iter()
                        .map(|b| format!("{node}: {}: {}", b.object, b.reason)),
                );
            }
            Err(e) => {
                tracing::warn!(node = %node, error = %e, "regional reconcile failed");
                first_error.get_or_insert(e);
            }
        }
    }
    // The lock is released when `lock` is dropped (its session ends).
    drop(lock);
    if let Some(e) = first_error {
        return Err(e.into());
    }
    Ok(Pass::Done { edges, blocked })
}

/// Reconcile until `stop`: every interval, sooner (5 s) while something is blocked or failed,
/// and at once when `wake` is notified (after an enrollment).
pub async fn run(cfg: Arc<HubConfig>, wake: Arc<Notify>, mut stop: watch::Receiver<bool>) {
    let interval = Duration::from_secs(cfg.reconcile.interval_secs.max(1));
    loop {
        let retry_soon = match reconcile_once(&cfg).await {
            Ok(Pass::NotLeader) => false,
            Ok(Pass::Done { edges, blocked }) => {
                for b in &blocked {
                    tracing::info!(waiting = %b, "regional reconcile waiting");
                }
                tracing::debug!(edges, "regional reconcile done");
                !blocked.is_empty()
            }
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "regional reconcile failed");
                true
            }
        };
        let wait = if retry_soon {
            interval.min(Duration::from_secs(5))
        } else {
            interval
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = wake.notified() => {}
            _ = stop.changed() => return,
        }
    }
}
