//! The `plan` and `apply` commands, shared by the agent's and the hub's CLIs.

use std::path::Path;

use crate::ids::NodeName;
use crate::reconcile::{plan_node, reconcile_node};
use crate::spec::Topology;

/// Load and validate a spec file; the error names the file and everything wrong in it.
pub fn load_spec(path: &Path) -> Result<Topology, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read spec {}: {e}", path.display()))?;
    Topology::from_toml(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Print the plan of each node (all nodes when `nodes` is empty); apply it when `apply`.
/// Returns false when a node failed.
pub async fn plan_or_apply(topo: &Topology, nodes: &[NodeName], apply: bool) -> bool {
    let all: Vec<NodeName> = if nodes.is_empty() {
        topo.nodes.keys().cloned().collect()
    } else {
        nodes.to_vec()
    };
    let mut ok = true;
    for node in &all {
        let r = if apply {
            reconcile_node(topo, node).await
        } else {
            plan_node(topo, node).await
        };
        match r {
            Ok(plan) => {
                print!("{plan}");
                if apply && !plan.steps.is_empty() {
                    println!("-- node {node}: applied {} step(s)", plan.steps.len());
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                ok = false;
            }
        }
    }
    ok
}
