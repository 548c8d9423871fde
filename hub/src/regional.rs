//! The regional side of replication: the topology of this region as the hub's database knows
//! it (the regional node, the master-data publisher, every enrolled edge), reconciled with the
//! same reconciler the agents use. One replica at a time (an advisory lock on the regional
//! database); every `[reconcile] interval_secs` and right after an enrollment.

use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use sync_core::spec::{default_groups, FlowSpec, NodeKind, NodeSpec, Topology};
use sync_core::{FacilityId, NodeName, TenantId};
use tokio::sync::{watch, Notify};
use tokio_postgres::Client;

use crate::config::HubConfig;
use crate::fallback::shape::Shape;

/// Held by the replica that drives the regional side ("AGOGHUBR"). Not the reconciler's own
/// lock key: `reconcile_node` takes that one on another session of the same database.
pub const REGIONAL_LOCK_KEY: i64 = 0x4147_4f47_4855_4252;

/// One enrolled edge as `agog_hub.edges` has it.
#[derive(Debug, Clone)]
pub struct EnrolledEdge {
    pub facility: FacilityId,
    pub node: NodeName,
    pub tenant: TenantId,
    pub replication_conninfo: String,
}

/// Enrolled edges (rows with an invalid id are skipped and logged).
pub async fn enrolled_edges(db: &Client) -> anyhow::Result<Vec<EnrolledEdge>> {
    let rows = db
        .query(
            "SELECT facility_id, node, tenant_id, replication_conninfo FROM agog_hub.edges
              WHERE replication_conninfo IS NOT NULL ORDER BY facility_id",
            &[],
        )
        .await?;
    let mut edges = Vec::new();
    for r in rows {
        let (facility, node, tenant, conninfo): (String, String, String, String) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        match (
            FacilityId::parse(&facility),
            NodeName::parse(&node),
            TenantId::parse(&tenant),
        ) {
            (Ok(facility), Ok(node), Ok(tenant)) => edges.push(EnrolledEdge {
                facility,
                node,
                tenant,
                replication_conninfo: conninfo,
            }),
            _ => tracing::error!(
                facility,
                node,
                tenant,
                "skipping an edge row with an invalid id"
            ),
        }
    }
    Ok(edges)
}

/// The region's topology: the static part (`[reconcile] spec`: other regions, global flows),
/// the regional and master nodes from the config, and regional <- edge (operational),
/// master -> edge (master) for every enrolled edge. The config's nodes replace same-named
/// nodes of the static spec.
pub fn build_topology(
    cfg: &HubConfig,
    static_spec: Option<&Topology>,
    edges: &[EnrolledEdge],
) -> anyhow::Result<Topology> {
    build_topology_with(cfg, static_spec, edges, &BTreeMap::new())
}

/// The same, with the facilities in cloud fallback shaped as their phase says
/// (`fallback::shape`): keyed by facility id.
pub fn build_topology_with(
    cfg: &HubConfig,
    static_spec: Option<&Topology>,
    edges: &[EnrolledEdge],
    fallbacks: &BTreeMap<String, Shape>,
) -> anyhow::Result<Topology> {
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
    // Nodes of facilities in fallback: the static spec may not add flows to or from them.
    let mut in_fallback = std::collections::BTreeSet::new();
    let mut no_copy = Vec::new();
    let mut ending = Vec::new();
    for e in edges {
        let shape = fallbacks.get(e.facility.as_str()).copied();
        if shape.is_some() {
            in_fallback.insert(e.node.clone());
        }
        let (master_flow, up_flow, restore_flow) = match shape {
            None => (true, true, false),
            Some(Shape::Gone) => continue,
            Some(Shape::Restore {
                master,
                up,
                ending: end,
            }) => {
                if up {
                    no_copy.push(e.node.clone());
                }
                if end {
                    ending.push(e.node.clone());
                }
                (master, up, true)
            }
        };
        nodes.push(NodeSpec {
            name: e.node.clone(),
            kind: NodeKind::Edge,
            region: cfg.region.clone(),
            facility: Some(e.facility.clone()),
            tenant: Some(e.tenant.clone()),
            // The hub never administers an edge; its entry names the publisher and how to reach it.
            admin: e.replication_conninfo.clone(),
            replication: Some(e.replication_conninfo.clone()),
        });
        if up_flow {
            flows.push(FlowSpec {
                from: e.node.clone(),
                to: regional.clone(),
                group: "operational".into(),
            });
        }
        if master_flow {
            flows.push(FlowSpec {
                from: master.clone(),
                to: e.node.clone(),
                group: "master".into(),
            });
        }
        if restore_flow {
            flows.push(FlowSpec {
                from: regional.clone(),
                to: e.node.clone(),
                group: sync_core::spec::RESTORE_GROUP.into(),
            });
        }
    }
    let mut groups = default_groups();
    if let Some(st) = static_spec {
        groups = st.groups.values().cloned().collect();
        let known: std::collections::BTreeSet<NodeName> =
            nodes.iter().map(|n| n.name.clone()).collect();
        // A facility in fallback is the hub's alone: its edge's static entry (an edge set up
        // by hand) and flows are left out.
        let gone: std::collections::BTreeSet<NodeName> = st
            .nodes
            .values()
            .filter(|n| {
                n.facility
                    .as_ref()
                    .is_some_and(|f| fallbacks.contains_key(f.as_str()))
            })
            .map(|n| n.name.clone())
            .chain(in_fallback.iter().cloned())
            .collect();
        nodes.extend(
            st.nodes
                .values()
                .filter(|n| !known.contains(&n.name) && !gone.contains(&n.name))
                .cloned(),
        );
        let derived: std::collections::BTreeSet<(NodeName, NodeName)> = flows
            .iter()
            .map(|f| (f.from.clone(), f.to.clone()))
            .collect();
        flows.extend(
            st.flows
                .iter()
                .filter(|f| !derived.contains(&(f.from.clone(), f.to.clone())))
                .filter(|f| !gone.contains(&f.from) && !gone.contains(&f.to))
                .map(|f| FlowSpec {
                    from: f.from.clone(),
                    to: f.to.clone(),
                    group: f.group.clone(),
                }),
        );
    }
    let mut topo = Topology::build(groups, nodes, flows)?;
    for f in &mut topo.flows {
        // The regional already has a restored facility's rows: subscribing to its rebuilt edge
        // must not copy them up again.
        if f.group == "operational" && f.to == regional && no_copy.contains(&f.from) {
            f.copy_data = false;
        }
        if f.group == sync_core::spec::RESTORE_GROUP && ending.contains(&f.to) {
            f.ending = true;
        }
    }
    Ok(topo)
}

/// The region's topology as the database and the config say now.
pub async fn topology(cfg: &HubConfig, db: &Client) -> anyhow::Result<Topology> {
    let static_spec = match &cfg.reconcile.spec {
        Some(path) => Some(
            sync_core::cli::load_spec(path)
                .map_err(|e| anyhow::anyhow!("[reconcile] spec {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let fallbacks = crate::fallback::shape::load(db).await?;
    build_topology_with(
        cfg,
        static_spec.as_ref(),
        &enrolled_edges(db).await?,
        &fallbacks,
    )
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
    let result = reconcile_locked(cfg, &lock).await;
    // Cloud fallbacks move on under the same lock, after the regional side is applied.
    let waiting = crate::fallback::driver::drive(cfg, &lock).await;
    // The lock is released when `lock` is dropped (its session ends).
    drop(lock);
    let (edges, mut blocked) = result?;
    blocked.extend(waiting);
    Ok(Pass::Done { edges, blocked })
}

/// One reconcile of the master node then the regional, by the caller that holds
/// [`REGIONAL_LOCK_KEY`] on `db`: (edges, what waits).
pub async fn reconcile_locked(
    cfg: &HubConfig,
    db: &Client,
) -> anyhow::Result<(usize, Vec<String>)> {
    let topo = topology(cfg, db).await?;
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
    if let Some(e) = first_error {
        return Err(e.into());
    }
    Ok((edges, blocked))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(extra: &str) -> HubConfig {
        HubConfig::parse(&format!(
            "region = \"us-east\"\ndatabase = \"host=10.0.0.5 dbname=agog user=postgres\"\n{extra}"
        ))
        .unwrap()
    }

    fn la() -> EnrolledEdge {
        EnrolledEdge {
            facility: "facility-la-001".parse().unwrap(),
            node: "la".parse().unwrap(),
            tenant: "tenant-foo-inc".parse().unwrap(),
            replication_conninfo: "host=10.8.0.12 user=agog_replication password=x".into(),
        }
    }

    fn flows(t: &Topology) -> Vec<String> {
        t.flows
            .iter()
            .map(|f| format!("{} -> {} {}", f.from, f.to, f.group))
            .collect()
    }

    #[test]
    fn shared_and_separate_layouts() {
        let t = build_topology(&cfg(""), None, &[la()]).unwrap();
        assert_eq!(
            flows(&t),
            ["la -> us-east operational", "us-east -> la master"]
        );
        let t = build_topology(
            &cfg("[master]\nnode = \"us-east-master\"\nadmin = \"host=10.0.0.6 dbname=agog\"\n"),
            None,
            &[la()],
        )
        .unwrap();
        assert_eq!(
            flows(&t),
            ["la -> us-east operational", "us-east-master -> la master"]
        );
        assert_eq!(
            t.replication_conninfo(&"la".parse().unwrap()),
            Some("host=10.8.0.12 user=agog_replication password=x")
        );
    }

    #[test]
    fn the_static_spec_keeps_the_cross_region_flows() {
        let st = Topology::from_toml(
            r#"
[[nodes]]
name = "us-east"
kind = "regional"
region = "us-east"
admin = "host=elsewhere dbname=agog"

[[nodes]]
name = "eu-central"
kind = "regional"
region = "eu-central"
admin = "host=10.1.0.5 dbname=agog"

[[flows]]
from = "us-east"
to = "eu-central"
group = "global"

[[flows]]
from = "eu-central"
to = "us-east"
group = "global"
"#,
        )
        .unwrap();
        let t = build_topology(&cfg(""), Some(&st), &[la()]).unwrap();
        assert_eq!(
            flows(&t),
            [
                "la -> us-east operational",
                "us-east -> la master",
                "us-east -> eu-central global",
                "eu-central -> us-east global"
            ]
        );
        // The config's own node wins over the spec's entry of the same name.
        assert_eq!(
            t.nodes[&"us-east".parse::<NodeName>().unwrap()].admin,
            "host=10.0.0.5 dbname=agog user=postgres"
        );
    }

    fn flows_of(t: &Topology) -> Vec<String> {
        t.flows
            .iter()
            .map(|f| {
                let mut s = format!("{} -> {} {}", f.from, f.to, f.group);
                if !f.copy_data {
                    s.push_str(" (no copy)");
                }
                if f.ending {
                    s.push_str(" (ending)");
                }
                s
            })
            .collect()
    }

    #[test]
    fn a_facility_in_fallback_has_the_flows_of_its_phase() {
        use crate::fallback::record::Phase;
        use crate::fallback::shape::shape;
        let ny = EnrolledEdge {
            facility: "facility-ny-001".parse().unwrap(),
            node: "ny".parse().unwrap(),
            tenant: "tenant-foo-inc".parse().unwrap(),
            replication_conninfo: "host=10.8.0.13 user=agog_replication password=y".into(),
        };
        let at = |phase, token| {
            let mut m = BTreeMap::new();
            if let Some(s) = shape(phase, token) {
                m.insert("facility-la-001".to_string(), s);
            }
            flows_of(&build_topology_with(&cfg(""), None, &[la(), ny.clone()], &m).unwrap())
        };
        let ny_flows = ["ny -> us-east operational", "us-east -> ny master"];
        // The dead edge is out of the topology: the reconcile detaches and drops the subscription.
        assert_eq!(at(Phase::Activating, false), ny_flows);
        assert_eq!(at(Phase::Active, false), ny_flows);
        // A restore token publishes the restore for the facility's node.
        assert_eq!(
            at(Phase::Active, true)[..1],
            ["us-east -> la restore".to_string()]
        );
        assert_eq!(
            at(Phase::Restoring, true)[..2],
            [
                "us-east -> la master".to_string(),
                "us-east -> la restore".to_string()
            ]
        );
        assert_eq!(
            at(Phase::HandingOver, true)[..3],
            [
                "la -> us-east operational (no copy)".to_string(),
                "us-east -> la master".to_string(),
                "us-east -> la restore".to_string()
            ]
        );
        assert_eq!(
            at(Phase::Closing, true)[2],
            "us-east -> la restore (ending)".to_string()
        );
        // Restored: normal again, and the other facility never changed.
        let normal = at(Phase::Restored, true);
        assert_eq!(
            normal[..2],
            [
                "la -> us-east operational".to_string(),
                "us-east -> la master".to_string()
            ]
        );
        for phase in [Phase::Activating, Phase::Restoring, Phase::Closing] {
            let f = at(phase, true);
            assert!(
                ny_flows.iter().all(|n| f.contains(&n.to_string())),
                "{phase:?}: {f:?}"
            );
        }
    }

    #[test]
    fn a_static_spec_cannot_bring_back_a_facility_in_fallback() {
        let st = Topology::from_toml(
            r#"
[[nodes]]
name = "us-east"
kind = "regional"
region = "us-east"
admin = "host=elsewhere dbname=agog"

[[nodes]]
name = "sf"
kind = "edge"
region = "us-east"
facility = "facility-sf-001"
tenant = "tenant-foo-inc"
admin = "host=10.8.0.20 dbname=agog"

[[flows]]
from = "sf"
to = "us-east"
group = "operational"
"#,
        )
        .unwrap();
        let mut m = BTreeMap::new();
        m.insert(
            "facility-sf-001".to_string(),
            crate::fallback::shape::Shape::Gone,
        );
        let t = build_topology_with(&cfg(""), Some(&st), &[la()], &m).unwrap();
        assert!(!t.nodes.contains_key(&"sf".parse::<NodeName>().unwrap()));
        assert_eq!(
            flows_of(&t),
            ["la -> us-east operational", "us-east -> la master"]
        );
    }
}
