//! The desired state of one node, derived from the topology: what its catalogs should say.

use std::collections::{BTreeMap, BTreeSet};

use crate::catalog::NodeIdentity;
use crate::ids::NodeName;
use crate::spec::{Flow, NodeKind, Origin, Topology};
use crate::sql;

/// The schema every replicated table lives in.
pub const TABLE_SCHEMA: &str = "public";

/// The `publish` option: TRUNCATE is never published, because it ignores row filters and
/// would empty the subscriber's table for every facility.
pub const PUBLISH: &str = "insert, update, delete";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowFilter {
    pub column: &'static str,
    pub value: String,
}

impl RowFilter {
    /// As written in `CREATE PUBLICATION ... WHERE (...)`.
    pub fn sql(&self) -> String {
        format!(
            "({} = {})",
            sql::ident(self.column),
            sql::literal(&self.value)
        )
    }

    /// As `pg_get_expr(prqual, prrelid)` prints it back for a text column, which is how the
    /// catalog is compared with the spec.
    pub fn deparsed(&self) -> String {
        format!("({} = {}::text)", self.column, sql::literal(&self.value))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredPublication {
    /// `schema.table` -> its row filter.
    pub tables: BTreeMap<String, Option<RowFilter>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredSubscription {
    pub flow: Flow,
    pub conninfo: String,
    pub origin: Origin,
    pub tables: BTreeSet<String>,
    /// Subscribe only while the publisher publishes through it (see `TableGroup::transient`).
    pub transient: bool,
    /// `copy_data` when the subscription is created.
    pub copy_data: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredNode {
    pub node: NodeName,
    pub identity: NodeIdentity,
    pub publications: BTreeMap<String, DesiredPublication>,
    pub subscriptions: BTreeMap<String, DesiredSubscription>,
    /// Slots subscribers hold on this node.
    pub slots: BTreeSet<String>,
}

/// Name of the table group whose rows the ownership guard calls "master data".
pub const MASTER_GROUP: &str = "master";

impl DesiredNode {
    pub fn derive(topo: &Topology, node: &NodeName) -> Option<Self> {
        let spec = topo.node(node)?;
        let qualified = |t: &str| {
            if t.contains('.') {
                t.to_owned()
            } else {
                format!("{TABLE_SCHEMA}.{t}")
            }
        };
        let mut publications: BTreeMap<String, DesiredPublication> = BTreeMap::new();
        let mut slots = BTreeSet::new();
        for f in topo.outgoing(node) {
            let group = &topo.groups[&f.group];
            let filter = f.filter.as_ref().map(|(column, value)| RowFilter {
                column,
                value: value.clone(),
            });
            let tables: BTreeMap<_, _> = group
                .tables
                .iter()
                .map(|t| (qualified(t), filter.clone()))
                .collect();
            slots.insert(f.slot.clone());
            // An ending flow keeps its publication, emptied, unless another subscriber of the
            // same publication still wants it.
            if f.ending {
                publications
                    .entry(f.publication.clone())
                    .or_insert_with(|| DesiredPublication {
                        tables: BTreeMap::new(),
                    });
            } else {
                publications.insert(f.publication.clone(), DesiredPublication { tables });
            }
        }
        let mut subscriptions = BTreeMap::new();
        for f in topo.incoming(node) {
            let group = &topo.groups[&f.group];
            subscriptions.insert(
                f.subscription.clone(),
                DesiredSubscription {
                    flow: f.clone(),
                    conninfo: topo
                        .replication_conninfo(&f.from)
                        .unwrap_or_default()
                        .to_owned(),
                    origin: group.origin,
                    tables: group.tables.iter().map(|t| qualified(t)).collect(),
                    transient: f.transient,
                    copy_data: f.copy_data,
                },
            );
        }
        let owns_master =
            spec.kind == NodeKind::Master || topo.outgoing(node).any(|f| f.group == MASTER_GROUP);
        let identity = NodeIdentity {
            node: node.to_string(),
            kind: spec.kind.as_str().to_owned(),
            region: spec.region.to_string(),
            facility_id: spec.facility.as_ref().map(|f| f.to_string()),
            tenant_id: spec.tenant.as_ref().map(|t| t.to_string()),
            owns_master,
        };
        Some(DesiredNode {
            node: node.clone(),
            identity,
            publications,
            subscriptions,
            slots,
        })
    }
}
