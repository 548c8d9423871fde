//! The reconciler: observe a node (its catalogs and its publishers), plan, apply. One
//! implementation for the edge agent and the hub.

use tokio_postgres::Client;

use crate::apply::{apply_steps, describe, ApplyError};
use crate::catalog::{Catalog, PeerView};
use crate::connect::connect;
use crate::desired::DesiredNode;
use crate::ids::NodeName;
use crate::plan::{plan, PeerViews, Plan};
use crate::schema::RECONCILE_LOCK_KEY;
use crate::spec::Topology;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error("node {0} is not in the spec")]
    UnknownNode(NodeName),
    #[error("node {node}: cannot connect: {error}")]
    Connect { node: NodeName, error: String },
    #[error("node {node}: cannot read the catalogs: {error}")]
    Catalog { node: NodeName, error: String },
    #[error("node {node}: {error}")]
    Apply { node: NodeName, error: ApplyError },
}

/// Read what each publisher of `desired` has, through the connection its subscription will use.
pub async fn observe_peers(topo: &Topology, desired: &DesiredNode) -> PeerViews {
    let mut views = PeerViews::new();
    for sub in desired.subscriptions.values() {
        let peer = &sub.flow.from;
        if views.contains_key(peer) {
            continue;
        }
        let conninfo = topo.replication_conninfo(peer).unwrap_or_default();
        let view = match connect(conninfo).await {
            Ok(c) => PeerView::read(&c).await.map_err(|e| describe(&e)),
            Err(e) => Err(describe(&e)),
        };
        views.insert(peer.clone(), view);
    }
    views
}

async fn admin_client(
    topo: &Topology,
    node: &NodeName,
) -> Result<(Client, DesiredNode), ReconcileError> {
    let desired =
        DesiredNode::derive(topo, node).ok_or_else(|| ReconcileError::UnknownNode(node.clone()))?;
    let client = connect(&topo.nodes[node].admin)
        .await
        .map_err(|e| ReconcileError::Connect {
            node: node.clone(),
            error: describe(&e),
        })?;
    Ok((client, desired))
}

async fn plan_with(
    topo: &Topology,
    client: &Client,
    desired: &DesiredNode,
) -> Result<Plan, ReconcileError> {
    let catalog = Catalog::read(client)
        .await
        .map_err(|e| ReconcileError::Catalog {
            node: desired.node.clone(),
            error: describe(&e),
        })?;
    let peers = observe_peers(topo, desired).await;
    Ok(plan(desired, &catalog, &peers))
}

/// The plan for `node`, changing nothing.
pub async fn plan_node(topo: &Topology, node: &NodeName) -> Result<Plan, ReconcileError> {
    let (client, desired) = admin_client(topo, node).await?;
    plan_with(topo, &client, &desired).await
}

/// Plan and apply at most `limit` steps (all when `None`) under the node's reconcile lock.
/// Returns the plan that was (partly) applied.
pub async fn reconcile_node_limited(
    topo: &Topology,
    node: &NodeName,
    limit: Option<usize>,
) -> Result<Plan, ReconcileError> {
    let (mut client, desired) = admin_client(topo, node).await?;
    let catalog_err = |e: tokio_postgres::Error| ReconcileError::Catalog {
        node: node.clone(),
        error: describe(&e),
    };
    // Session lock: held across the non-transactional steps, released when the client drops.
    client
        .execute("SELECT pg_advisory_lock($1)", &[&RECONCILE_LOCK_KEY])
        .await
        .map_err(catalog_err)?;
    let plan = plan_with(topo, &client, &desired).await?;
    let steps = match limit {
        Some(n) => &plan.steps[..n.min(plan.steps.len())],
        None => &plan.steps[..],
    };
    if !steps.is_empty() {
        tracing::info!(node = %node, "applying plan\n{plan}");
    }
    apply_steps(&mut client, steps)
        .await
        .map_err(|error| ReconcileError::Apply {
            node: node.clone(),
            error,
        })?;
    Ok(plan)
}

/// Plan and apply everything for `node`.
pub async fn reconcile_node(topo: &Topology, node: &NodeName) -> Result<Plan, ReconcileError> {
    reconcile_node_limited(topo, node, None).await
}

/// Reconcile every node of the topology, in passes, until nothing is left to do or blocked
/// (a subscriber waits for its publisher's publication, made in the same pass). Returns the
/// plans of the last pass; errors of unreachable nodes are reported, not fatal.
pub async fn reconcile_all(
    topo: &Topology,
    max_passes: usize,
) -> Vec<Result<Plan, ReconcileError>> {
    let mut last = Vec::new();
    for _ in 0..max_passes.max(1) {
        last.clear();
        let mut settled = true;
        for node in topo.nodes.keys() {
            let r = reconcile_node(topo, node).await;
            if let Ok(p) = &r {
                settled &= p.steps.is_empty() && p.blocked.is_empty();
            } else {
                settled = false;
            }
            last.push(r);
        }
        if settled {
            break;
        }
    }
    last
}
