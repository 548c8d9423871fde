//! This edge's view of the topology: itself, the regional that subscribes to its operational
//! data and the node that publishes its master data. The agent reconciles only its own node;
//! the regional side is the hub's job, through the same reconciler.

use sync_core::spec::{default_groups, FlowSpec, NodeKind, NodeSpec, Topology};

use crate::config::EdgeConfig;

pub fn edge_topology(cfg: &EdgeConfig) -> Result<Topology, String> {
    let me = cfg.node_name()?;
    let mut nodes = vec![NodeSpec {
        name: me.clone(),
        kind: NodeKind::Edge,
        region: cfg.region.clone(),
        facility: Some(cfg.facility.clone()),
        tenant: Some(cfg.tenant.clone()),
        admin: cfg.local_conninfo(),
        replication: None,
    }];
    let mut flows = Vec::new();
    if let Some(up) = &cfg.upstream {
        let shared = up.master_node == up.regional_node;
        // The agent never connects to the regional as admin; its entry names the subscriber,
        // and after a cloud fallback the publisher of the restore (reached with the
        // restore conninfo, which in the shared layout is the master conninfo).
        nodes.push(NodeSpec {
            name: up.regional_node.clone(),
            kind: NodeKind::Regional,
            region: cfg.region.clone(),
            facility: None,
            tenant: None,
            admin: if shared {
                up.master_conninfo.clone()
            } else {
                format!("host={} dbname=agog", up.regional_address)
            },
            replication: up.restore_conninfo.clone().filter(|_| !shared),
        });
        if !shared {
            nodes.push(NodeSpec {
                name: up.master_node.clone(),
                kind: NodeKind::Master,
                region: cfg.region.clone(),
                facility: None,
                tenant: None,
                admin: up.master_conninfo.clone(),
                replication: None,
            });
        }
        flows.push(FlowSpec {
            from: me.clone(),
            to: up.regional_node.clone(),
            group: "operational".into(),
        });
        flows.push(FlowSpec {
            from: up.master_node.clone(),
            to: me.clone(),
            group: "master".into(),
        });
        // A rebuilt box takes its facility's rows back from the regional: a transient flow,
        // subscribed while the regional publishes it (ARCHITECTURE.md, "Cloud fallback").
        if up.restore_conninfo.is_some() {
            flows.push(FlowSpec {
                from: up.regional_node.clone(),
                to: me,
                group: sync_core::spec::RESTORE_GROUP.into(),
            });
        }
    }
    Topology::build(default_groups(), nodes, flows).map_err(|e| e.to_string())
}

/// Tables the regional's replication role may read (for the initial copy).
pub fn published_tables() -> Vec<String> {
    default_groups()
        .into_iter()
        .find(|g| g.name == "operational")
        .map(|g| g.tables)
        .unwrap_or_default()
}
