//! The topology spec: which nodes exist and which table groups flow between them.
//!
//! A spec is TOML. Table groups have built-in defaults (the design's three layers), so a spec
//! usually lists only nodes and flows:
//!
//! ```toml
//! [[nodes]]
//! name = "us-east"
//! kind = "regional"
//! region = "us-east"
//! admin = "host=127.0.0.1 port=5432 dbname=agog user=postgres"
//!
//! [[flows]]
//! from = "la"
//! to = "us-east"
//! group = "operational"
//! ```
//!
//! Parsing validates everything (ids, references, kinds, name lengths) before anything talks to a
//! database, so a bad spec executes nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use crate::ids::{FacilityId, NodeName, RegionId, TenantId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// A facility's edge box: owns its facility's operational rows.
    Edge,
    /// A region's ingest database: receives operational data from its edges, exchanges global
    /// tables with the other regions. May also publish master data (the shared layout).
    Regional,
    /// A region's master-data publisher, a cluster of its own so its walsenders only wake
    /// for master-data commits (the separate layout).
    Master,
}

impl NodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            NodeKind::Edge => "edge",
            NodeKind::Regional => "regional",
            NodeKind::Master => "master",
        }
    }
}

/// Which value a group's publication filters on, and so which column its row filter uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FilterScope {
    /// `facility_id = <publisher's facility>`
    Facility,
    /// `tenant_id = <subscriber's tenant>` (unfiltered when the subscriber serves every tenant)
    Tenant,
    /// `region = <publisher's region>`
    Region,
    /// `facility_id = <subscriber's facility>`: a regional sends one facility's rows down to
    /// that facility's edge (the restore after a cloud fallback).
    #[serde(rename = "subscriber_facility")]
    SubscriberFacility,
}

impl FilterScope {
    pub fn column(self) -> &'static str {
        match self {
            FilterScope::Facility | FilterScope::SubscriberFacility => "facility_id",
            FilterScope::Tenant => "tenant_id",
            FilterScope::Region => "region",
        }
    }
}

/// The `origin` option of the subscriptions of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Pass on rows whatever node they were first written on (needed for the second hop:
    /// LA's inventory, arrived in us-east from the LA edge, must go on to eu-central).
    Any,
    /// Only rows written on the publisher itself.
    None,
}

impl Origin {
    pub fn as_str(self) -> &'static str {
        match self {
            Origin::Any => "any",
            Origin::None => "none",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableGroup {
    pub name: String,
    pub tables: Vec<String>,
    pub filter: FilterScope,
    /// Node kinds allowed to publish this group (its owners).
    pub publishers: Vec<NodeKind>,
    /// Node kinds allowed to subscribe to it.
    pub subscribers: Vec<NodeKind>,
    #[serde(default = "origin_any")]
    pub origin: Origin,
    /// A temporary flow, next to the regular one between the same two nodes: its subscription
    /// is named `<to>_from_<from>_tmp`, and the subscriber keeps it only while the publisher
    /// publishes something through it (it is not created, and is dropped, once the publisher
    /// has emptied or dropped the publication). Never blocks the subscriber's plan.
    #[serde(default)]
    pub transient: bool,
}

fn origin_any() -> Origin {
    Origin::Any
}

/// The design's three layers.
/// The subscription on `to` that receives from `from`: `<to>_from_<from>`.
pub fn subscription_name(from: &NodeName, to: &NodeName) -> String {
    format!("{}_from_{}", to.ident_part(), from.ident_part())
}

/// Its slot on `from`: `<to>_from_<from>_slot`.
pub fn slot_name(from: &NodeName, to: &NodeName) -> String {
    format!("{}_slot", subscription_name(from, to))
}

pub fn default_groups() -> Vec<TableGroup> {
    let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
    vec![
        TableGroup {
            name: "operational".into(),
            tables: t(&[
                "orders",
                "inventory_transactions",
                "production_logs",
                "quality_inspections",
                "inventory_levels",
                "edge_heartbeats",
            ]),
            filter: FilterScope::Facility,
            publishers: vec![NodeKind::Edge],
            subscribers: vec![NodeKind::Regional],
            origin: Origin::Any,
            transient: false,
        },
        TableGroup {
            name: "master".into(),
            tables: t(&[
                "customers",
                "products",
                "product_prices",
                "system_configuration",
            ]),
            filter: FilterScope::Tenant,
            publishers: vec![NodeKind::Master, NodeKind::Regional],
            subscribers: vec![NodeKind::Edge, NodeKind::Regional],
            origin: Origin::Any,
            transient: false,
        },
        TableGroup {
            name: "global".into(),
            tables: t(&["inventory_levels", "facility_status"]),
            filter: FilterScope::Region,
            publishers: vec![NodeKind::Regional],
            subscribers: vec![NodeKind::Regional],
            // The region row filter alone stops loops (a region publishes only its own rows);
            // `any` lets rows that reached a region from its edges travel on to the others.
            origin: Origin::Any,
            transient: false,
        },
        TableGroup {
            name: RESTORE_GROUP.into(),
            // The facility's operational rows (not its heartbeats: those are the new edge's
            // own), and the ownership override, whose deletion hands the facility back.
            tables: t(&[
                "orders",
                "inventory_transactions",
                "production_logs",
                "quality_inspections",
                "inventory_levels",
                "agog_sync.ownership_overrides",
            ]),
            filter: FilterScope::SubscriberFacility,
            publishers: vec![NodeKind::Regional],
            subscribers: vec![NodeKind::Edge],
            // The initial copy brings every row; afterwards only rows written on the regional
            // itself (the workspace) come down, never rows the regional got from the edge.
            origin: Origin::None,
            transient: true,
        },
    ]
}

/// The group that brings a facility's rows from its regional down to a rebuilt edge after a
/// cloud fallback (ARCHITECTURE.md, "Cloud fallback").
pub const RESTORE_GROUP: &str = "restore";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub name: NodeName,
    pub kind: NodeKind,
    pub region: RegionId,
    pub facility: Option<FacilityId>,
    pub tenant: Option<TenantId>,
    /// How the reconciler reaches this node's database (libpq key=value form).
    pub admin: String,
    /// How subscribers reach it, e.g. through the tunnel with a replication role. Defaults to `admin`.
    pub replication: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowSpec {
    pub from: NodeName,
    pub to: NodeName,
    pub group: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct SpecFile {
    #[serde(default = "default_groups")]
    groups: Vec<TableGroup>,
    nodes: Vec<NodeSpec>,
    #[serde(default)]
    flows: Vec<FlowSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("spec is not valid TOML or has a bad value: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("spec is inconsistent:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// One flow with everything derived from it: the names on both sides and the row filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flow {
    pub from: NodeName,
    pub to: NodeName,
    pub group: String,
    pub publication: String,
    pub subscription: String,
    pub slot: String,
    /// `(column, value)` of the row filter; `None` publishes every row.
    pub filter: Option<(&'static str, String)>,
    /// The group's `transient` flag.
    pub transient: bool,
    /// Copy the publisher's rows when the subscription is created (true unless the caller
    /// says otherwise: a regional resuming from a restored edge already has its rows). A
    /// resync after a lost slot always copies.
    pub copy_data: bool,
    /// The publisher empties the publication (keeping it and the slot) so a transient
    /// subscriber ends its subscription cleanly, instead of erroring on a dropped one.
    pub ending: bool,
}

/// A validated spec.
#[derive(Debug, Clone)]
pub struct Topology {
    pub groups: BTreeMap<String, TableGroup>,
    pub nodes: BTreeMap<NodeName, NodeSpec>,
    pub flows: Vec<Flow>,
}

const MAX_IDENT: usize = 63;

/// `table` (in `public`) or `schema.table`.
fn valid_table_name(s: &str) -> bool {
    match s.split_once('.') {
        Some((schema, table)) => valid_ident(schema) && valid_ident(table),
        None => valid_ident(s),
    }
}

fn valid_ident(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_IDENT
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl Topology {
    pub fn from_toml(text: &str) -> Result<Self, SpecError> {
        let file: SpecFile = toml::from_str(text)?;
        Self::build(file.groups, file.nodes, file.flows)
    }

    pub fn build(
        groups: Vec<TableGroup>,
        nodes: Vec<NodeSpec>,
        flows: Vec<FlowSpec>,
    ) -> Result<Self, SpecError> {
        let mut errors = Vec::new();
        let mut group_map = BTreeMap::new();
        for g in groups {
            if !valid_ident(&g.name) {
                errors.push(format!(
                    "group name {:?} must be lowercase letters, digits and _",
                    g.name
                ));
            }
            for t in &g.tables {
                if !valid_table_name(t) {
                    errors.push(format!(
                        "group {}: table name {t:?} must be lowercase letters, digits and _",
                        g.name
                    ));
                }
            }
            if g.tables.is_empty() {
                errors.push(format!("group {} lists no tables", g.name));
            }
            if group_map.insert(g.name.clone(), g).is_some() {
                errors.push("a group name appears twice".to_string());
            }
        }
        let mut node_map = BTreeMap::new();
        for n in nodes {
            if n.kind == NodeKind::Edge && (n.facility.is_none() || n.tenant.is_none()) {
                errors.push(format!(
                    "node {}: an edge needs both facility and tenant",
                    n.name
                ));
            }
            if n.kind != NodeKind::Edge && n.facility.is_some() {
                errors.push(format!("node {}: only an edge serves a facility", n.name));
            }
            for (what, conn) in [
                ("admin", Some(&n.admin)),
                ("replication", n.replication.as_ref()),
            ] {
                if let Some(c) = conn {
                    if let Err(e) = c.parse::<tokio_postgres::Config>() {
                        errors.push(format!(
                            "node {}: {what} connection string is invalid: {e}",
                            n.name
                        ));
                    }
                }
            }
            let name = n.name.clone();
            if node_map.insert(name.clone(), n).is_some() {
                errors.push(format!("node {name} appears twice"));
            }
        }
        let mut derived = Vec::new();
        let mut seen_pairs = BTreeSet::new();
        let mut seen_subscriptions = BTreeSet::new();
        for f in flows {
            let (Some(from), Some(to)) = (node_map.get(&f.from), node_map.get(&f.to)) else {
                for n in [&f.from, &f.to] {
                    if !node_map.contains_key(n) {
                        errors.push(format!("flow {} -> {}: unknown node {n}", f.from, f.to));
                    }
                }
                continue;
            };
            let Some(group) = group_map.get(&f.group) else {
                errors.push(format!(
                    "flow {} -> {}: unknown group {:?}",
                    f.from, f.to, f.group
                ));
                continue;
            };
            if f.from == f.to {
                errors.push(format!(
                    "flow {} -> {}: a node cannot subscribe to itself",
                    f.from, f.to
                ));
                continue;
            }
            if !seen_pairs.insert((f.from.clone(), f.to.clone(), group.transient)) {
                errors.push(format!(
                    "flow {} -> {}: only one flow per direction between two nodes (one subscription, one slot), and one transient one",
                    f.from, f.to
                ));
                continue;
            }
            if !group.publishers.contains(&from.kind) {
                errors.push(format!(
                    "flow {} -> {}: a {} node does not publish group {} (its owners are {:?})",
                    f.from,
                    f.to,
                    from.kind.as_str(),
                    group.name,
                    group.publishers
                ));
            }
            if !group.subscribers.contains(&to.kind) {
                errors.push(format!(
                    "flow {} -> {}: a {} node does not subscribe to group {}",
                    f.from,
                    f.to,
                    to.kind.as_str(),
                    group.name
                ));
            }
            let filter_value = match group.filter {
                FilterScope::Facility => match &from.facility {
                    Some(fac) => Some(fac.as_str().to_owned()),
                    None => {
                        errors.push(format!("flow {} -> {}: group {} filters on the publisher's facility, and {} has none", f.from, f.to, group.name, f.from));
                        continue;
                    }
                },
                FilterScope::Tenant => to.tenant.as_ref().map(|t| t.as_str().to_owned()),
                FilterScope::Region => Some(from.region.as_str().to_owned()),
                FilterScope::SubscriberFacility => match &to.facility {
                    Some(fac) => Some(fac.as_str().to_owned()),
                    None => {
                        errors.push(format!("flow {} -> {}: group {} filters on the subscriber's facility, and {} has none", f.from, f.to, group.name, f.to));
                        continue;
                    }
                },
            };
            let publication = match &filter_value {
                Some(v) => format!("pub_{}_{}", group.name, v.replace('-', "_")),
                None => format!("pub_{}_all", group.name),
            };
            let mut subscription = subscription_name(&f.from, &f.to);
            if group.transient {
                subscription.push_str("_tmp");
            }
            if !seen_subscriptions.insert((f.to.clone(), subscription.clone())) {
                errors.push(format!(
                    "flow {} -> {}: its subscription name {subscription} is taken by another flow into {}; rename a node",
                    f.from, f.to, f.to
                ));
                continue;
            }
            let slot = format!("{subscription}_slot");
            for name in [&publication, &slot] {
                if name.len() > MAX_IDENT {
                    errors.push(format!(
                        "flow {} -> {}: derived name {name} is longer than PostgreSQL's 63 bytes; use shorter node names or ids",
                        f.from, f.to
                    ));
                }
            }
            derived.push(Flow {
                from: f.from,
                to: f.to,
                group: group.name.clone(),
                publication,
                subscription,
                slot,
                filter: filter_value.map(|v| (group.filter.column(), v)),
                transient: group.transient,
                copy_data: true,
                ending: false,
            });
        }
        if errors.is_empty() {
            Ok(Topology {
                groups: group_map,
                nodes: node_map,
                flows: derived,
            })
        } else {
            Err(SpecError::Invalid(errors))
        }
    }

    pub fn node(&self, name: &NodeName) -> Option<&NodeSpec> {
        self.nodes.get(name)
    }

    /// Flows this node publishes.
    pub fn outgoing<'a>(&'a self, node: &'a NodeName) -> impl Iterator<Item = &'a Flow> + 'a {
        self.flows.iter().filter(move |f| &f.from == node)
    }

    /// Flows this node subscribes to.
    pub fn incoming<'a>(&'a self, node: &'a NodeName) -> impl Iterator<Item = &'a Flow> + 'a {
        self.flows.iter().filter(move |f| &f.to == node)
    }

    /// The connection string subscribers use to reach `node`.
    pub fn replication_conninfo(&self, node: &NodeName) -> Option<&str> {
        self.nodes
            .get(node)
            .map(|n| n.replication.as_deref().unwrap_or(&n.admin))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[nodes]]
name = "us-east"
kind = "regional"
region = "us-east"
admin = "host=127.0.0.1 port=5432 dbname=agog user=postgres"

[[nodes]]
name = "la"
kind = "edge"
region = "us-east"
facility = "facility-la-001"
tenant = "tenant-foo-inc"
admin = "host=127.0.0.1 port=5433 dbname=agog user=postgres"

[[flows]]
from = "la"
to = "us-east"
group = "operational"

[[flows]]
from = "us-east"
to = "la"
group = "master"
"#;

    #[test]
    fn derives_names_and_filters() {
        let t = Topology::from_toml(GOOD).unwrap();
        let up = &t.flows[0];
        assert_eq!(up.publication, "pub_operational_facility_la_001");
        assert_eq!(up.subscription, "us_east_from_la");
        assert_eq!(up.slot, "us_east_from_la_slot");
        assert_eq!(up.filter, Some(("facility_id", "facility-la-001".into())));
        let down = &t.flows[1];
        assert_eq!(down.publication, "pub_master_tenant_foo_inc");
        assert_eq!(down.filter, Some(("tenant_id", "tenant-foo-inc".into())));
    }

    #[test]
    fn injection_in_an_id_is_refused_at_parse_time() {
        let bad = GOOD.replace("facility-la-001", "x'; drop table orders; --");
        let e = Topology::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("invalid facility id"), "{e}");
    }

    #[test]
    fn inconsistencies_are_all_listed() {
        let bad = GOOD
            .replace("to = \"us-east\"", "to = \"nowhere\"")
            .replace("group = \"master\"", "group = \"mastr\"");
        let e = Topology::from_toml(&bad).unwrap_err().to_string();
        assert!(e.contains("unknown node nowhere"), "{e}");
        assert!(e.contains("unknown group \"mastr\""), "{e}");
    }

    #[test]
    fn wrong_direction_is_refused() {
        let bad = GOOD.replace("group = \"operational\"", "group = \"global\"");
        let e = Topology::from_toml(&bad).unwrap_err().to_string();
        assert!(
            e.contains("a edge node does not publish group global")
                || e.contains("does not publish group global"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_and_syntax_errors_are_clear() {
        let e = Topology::from_toml(
            &GOOD.replace("kind = \"edge\"", "kind = \"edge\"\ncolour = \"red\""),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = Topology::from_toml("[[nodes]\nname=")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not valid TOML"), "{e}");
    }
}
