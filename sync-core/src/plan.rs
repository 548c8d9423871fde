//! Desired vs actual -> ordered steps, printable as the SQL they run.
//!
//! Planning is a pure function of the desired node, its catalog and what its publishers said,
//! so it is tested without a database and `plan` never changes anything.

use std::collections::BTreeMap;
use std::fmt;

use crate::catalog::{Catalog, NodeIdentity, PeerView, PublicationState, SubscriptionState};
use crate::desired::{DesiredNode, DesiredPublication, DesiredSubscription, PUBLISH};
use crate::ids::NodeName;
use crate::schema;
use crate::sql::{ident, literal};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Apply a numbered migration (its file runs in one transaction).
    Migrate { version: i32, name: &'static str },
    /// One statement on the node. `CREATE SUBSCRIPTION` and friends cannot run in a
    /// transaction block, so every statement runs on its own.
    Sql(String),
    /// One statement on a publisher, through the subscriber's replication connection.
    PeerSql {
        peer: NodeName,
        conninfo: String,
        sql: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub why: String,
    pub action: Action,
}

/// What could not be planned now, and why. The next run tries again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub object: String,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub node: NodeName,
    pub steps: Vec<Step>,
    pub blocked: Vec<Blocked>,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.steps.is_empty() {
            writeln!(f, "-- node {}: nothing to do", self.node)?;
        } else {
            writeln!(f, "-- node {}: {} step(s)", self.node, self.steps.len())?;
        }
        for (i, s) in self.steps.iter().enumerate() {
            writeln!(f, "-- {}. {}", i + 1, s.why)?;
            match &s.action {
                Action::Migrate { version, name } => writeln!(
                    f,
                    "--    migration {version:04} ({name}), in one transaction"
                )?,
                Action::Sql(sql) => writeln!(f, "{sql};")?,
                Action::PeerSql { peer, sql, .. } => writeln!(f, "-- on {peer}:\n{sql};")?,
            }
        }
        for b in &self.blocked {
            writeln!(f, "-- blocked: {}: {}", b.object, b.reason)?;
        }
        Ok(())
    }
}

/// What the node learned from each publisher it subscribes to: its view, or why it could not look.
pub type PeerViews = BTreeMap<NodeName, Result<PeerView, String>>;

pub fn plan(desired: &DesiredNode, actual: &Catalog, peers: &PeerViews) -> Plan {
    let mut steps = Vec::new();
    let mut blocked = Vec::new();

    // 1. Schema.
    for m in schema::pending(actual.schema_version) {
        steps.push(Step {
            why: format!("migrate schema to v{}", m.version),
            action: Action::Migrate {
                version: m.version,
                name: m.name,
            },
        });
    }
    let own_version = Some(schema::latest_version().max(actual.schema_version.unwrap_or(0)));

    // 2. Identity, read by the ownership guard.
    if actual.identity.as_ref() != Some(&desired.identity) {
        steps.push(Step {
            why: format!(
                "set node identity ({} {})",
                desired.identity.kind, desired.identity.node
            ),
            action: Action::Sql(identity_sql(&desired.identity)),
        });
    }

    // 3. Publications.
    for (name, want) in &desired.publications {
        match actual.publications.get(name) {
            None => steps.push(create_publication(name, want)),
            Some(have) if have.all_tables => {
                steps.push(Step {
                    why: format!(
                        "publication {name} publishes ALL TABLES; recreate it with its row filters"
                    ),
                    action: Action::Sql(format!("DROP PUBLICATION {}", ident(name))),
                });
                steps.push(create_publication(name, want));
            }
            Some(have) => {
                if !(have.insert && have.update && have.delete && !have.truncate) {
                    steps.push(Step {
                        why: format!("publication {name} must publish insert, update, delete and never truncate"),
                        action: Action::Sql(format!("ALTER PUBLICATION {} SET (publish = {})", ident(name), literal(PUBLISH))),
                    });
                }
                if !same_tables(want, have) && want.tables.is_empty() {
                    // SET TABLE needs at least one table; an ended transient flow keeps its
                    // publication with none, so its subscriber leaves without an error.
                    steps.push(Step {
                        why: format!("publication {name}: the flow is ending, publish nothing"),
                        action: Action::Sql(format!(
                            "ALTER PUBLICATION {} DROP TABLE {}",
                            ident(name),
                            have.tables
                                .keys()
                                .map(|t| qualified_ident(t))
                                .collect::<Vec<_>>()
                                .join(", ")
                        )),
                    });
                } else if !same_tables(want, have) {
                    steps.push(Step {
                        why: format!("publication {name}: set its tables and row filters"),
                        action: Action::Sql(format!(
                            "ALTER PUBLICATION {} SET TABLE {}",
                            ident(name),
                            table_list(want)
                        )),
                    });
                }
            }
        }
    }

    // 4. Subscriptions no longer wanted: detach from the slot first, so dropping never waits on a
    //    publisher that may be gone for good; the publisher's own reconcile drops the slot.
    for (name, have) in &actual.subscriptions {
        if desired.subscriptions.contains_key(name) {
            continue;
        }
        let why = format!("subscription {name} is not in the spec");
        detach_and_drop(name, have, why, &mut steps);
    }

    // 5. Subscriptions wanted.
    for (name, want) in &desired.subscriptions {
        if want.transient {
            match transient_state(want, peers) {
                Transient::Ended => {
                    if let Some(have) = actual.subscriptions.get(name) {
                        let why = format!(
                            "{} ended the transient flow {}",
                            want.flow.from, want.flow.publication
                        );
                        detach_and_drop(name, have, why, &mut steps);
                    }
                    continue;
                }
                // Nothing to start and nothing to wait for: a transient flow never blocks.
                Transient::Unknown if !actual.subscriptions.contains_key(name) => continue,
                Transient::Unknown | Transient::Publishing => {}
            }
        }
        match actual.subscriptions.get(name) {
            Some(have) if slot_gone(want, peers) => resync_subscription(
                name,
                want,
                have,
                own_version,
                peers,
                &mut steps,
                &mut blocked,
            ),
            Some(have) => alter_subscription(name, want, have, &mut steps, &mut blocked),
            None => create_subscription(
                name,
                want,
                want.copy_data,
                own_version,
                peers,
                &mut steps,
                &mut blocked,
            ),
        }
    }

    // 6. Publications and slots no longer wanted.
    for name in actual.publications.keys() {
        if !desired.publications.contains_key(name) {
            steps.push(Step {
                why: format!("publication {name} is not in the spec"),
                action: Action::Sql(format!("DROP PUBLICATION {}", ident(name))),
            });
        }
    }
    for (name, slot) in &actual.slots {
        if desired.slots.contains(name) || !is_managed_slot(name) || slot.slot_type != "logical" {
            continue;
        }
        if slot.database.as_deref() != Some(actual.database.as_str()) {
            continue;
        }
        if slot.active {
            blocked.push(Blocked {
                object: format!("slot {name}"),
                reason: "not in the spec, but its subscriber is still connected; it is dropped once that subscriber is reconciled".into(),
            });
        } else {
            steps.push(Step {
                why: format!(
                    "slot {name} has no subscriber in the spec: stop retaining WAL for it"
                ),
                action: Action::Sql(format!(
                    "SELECT pg_drop_replication_slot({})",
                    literal(name)
                )),
            });
        }
    }

    Plan {
        node: desired.node.clone(),
        steps,
        blocked,
    }
}

/// What the publisher of a transient flow says about it.
enum Transient {
    /// It publishes tables through the publication.
    Publishing,
    /// The publication is gone or empty.
    Ended,
    /// The publisher could not be asked.
    Unknown,
}

fn transient_state(want: &DesiredSubscription, peers: &PeerViews) -> Transient {
    match peers.get(&want.flow.from) {
        Some(Ok(peer)) => {
            let publication = &want.flow.publication;
            if peer.publications.contains(publication)
                && !peer.empty_publications.contains(publication)
            {
                Transient::Publishing
            } else {
                Transient::Ended
            }
        }
        _ => Transient::Unknown,
    }
}

/// Slots named by the spec's scheme (`<to>_from_<from>_slot`); anything else is someone else's.
pub fn is_managed_slot(name: &str) -> bool {
    name.ends_with("_slot") && name.contains("_from_")
}

fn identity_sql(id: &NodeIdentity) -> String {
    let opt = |v: &Option<String>| v.as_deref().map(literal).unwrap_or_else(|| "NULL".into());
    format!(
        "INSERT INTO agog_sync.node_identity (node, kind, region, facility_id, tenant_id, owns_master) \
         VALUES ({}, {}, {}, {}, {}, {}) \
         ON CONFLICT (singleton) DO UPDATE SET node = EXCLUDED.node, kind = EXCLUDED.kind, region = EXCLUDED.region, \
         facility_id = EXCLUDED.facility_id, tenant_id = EXCLUDED.tenant_id, owns_master = EXCLUDED.owns_master, updated_at = now()",
        literal(&id.node),
        literal(&id.kind),
        literal(&id.region),
        opt(&id.facility_id),
        opt(&id.tenant_id),
        id.owns_master
    )
}

fn qualified_ident(table: &str) -> String {
    match table.split_once('.') {
        Some((schema, name)) => format!("{}.{}", ident(schema), ident(name)),
        None => ident(table),
    }
}

fn table_list(p: &DesiredPublication) -> String {
    p.tables
        .iter()
        .map(|(t, filter)| match filter {
            Some(f) => format!("{} WHERE {}", qualified_ident(t), f.sql()),
            None => qualified_ident(t),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn create_publication(name: &str, want: &DesiredPublication) -> Step {
    let tables = if want.tables.is_empty() {
        String::new()
    } else {
        format!(" FOR TABLE {}", table_list(want))
    };
    Step {
        why: format!("create publication {name}"),
        action: Action::Sql(format!(
            "CREATE PUBLICATION {}{tables} WITH (publish = {})",
            ident(name),
            literal(PUBLISH)
        )),
    }
}

fn same_tables(want: &DesiredPublication, have: &PublicationState) -> bool {
    want.tables.len() == have.tables.len()
        && want.tables.iter().all(|(t, f)| {
            have.tables
                .get(t)
                .is_some_and(|h| h.as_deref() == f.as_ref().map(|f| f.deparsed()).as_deref())
        })
}

fn subscription_options_sql(want: &DesiredSubscription) -> String {
    format!(
        "synchronous_commit = off, origin = {}, streaming = on, disable_on_error = false",
        want.origin.as_str()
    )
}

fn alter_subscription(
    name: &str,
    want: &DesiredSubscription,
    have: &SubscriptionState,
    steps: &mut Vec<Step>,
    blocked: &mut Vec<Blocked>,
) {
    if have.slot_name.as_deref() != Some(want.flow.slot.as_str()) {
        blocked.push(Blocked {
            object: format!("subscription {name}"),
            reason: format!(
                "uses slot {:?} but the spec names {}; re-pointing a subscription could lose or repeat changes, so drop it by hand (DROP SUBSCRIPTION {}) and reconcile to recreate it",
                have.slot_name, want.flow.slot, ident(name)
            ),
        });
        return;
    }
    if have.conninfo != want.conninfo {
        steps.push(Step {
            why: format!("subscription {name}: publisher {} moved", want.flow.from),
            action: Action::Sql(format!(
                "ALTER SUBSCRIPTION {} CONNECTION {}",
                ident(name),
                literal(&want.conninfo)
            )),
        });
    }
    if have.publications != [want.flow.publication.clone()] {
        steps.push(Step {
            why: format!(
                "subscription {name}: subscribe to publication {}",
                want.flow.publication
            ),
            action: Action::Sql(format!(
                "ALTER SUBSCRIPTION {} SET PUBLICATION {} WITH (refresh = true)",
                ident(name),
                ident(&want.flow.publication)
            )),
        });
    } else if want.tables.iter().any(|t| !have.tables.contains_key(t)) {
        // The publication gained tables after the subscription was made.
        steps.push(Step {
            why: format!(
                "subscription {name}: pick up tables added to {}",
                want.flow.publication
            ),
            action: Action::Sql(format!(
                "ALTER SUBSCRIPTION {} REFRESH PUBLICATION",
                ident(name)
            )),
        });
    }
    if have.synchronous_commit != "off"
        || have.origin != want.origin.as_str()
        || have.streaming == "f"
    {
        steps.push(Step {
            why: format!("subscription {name}: options"),
            action: Action::Sql(format!(
                "ALTER SUBSCRIPTION {} SET ({})",
                ident(name),
                subscription_options_sql(want)
            )),
        });
    }
    if !have.enabled {
        steps.push(Step {
            why: format!("subscription {name} is disabled: enable it"),
            action: Action::Sql(format!("ALTER SUBSCRIPTION {} ENABLE", ident(name))),
        });
    }
}

/// Disable, detach from the slot, drop: never waits on a publisher that may be gone for good
/// (the slot, if any, is the publisher's to drop).
fn detach_and_drop(name: &str, have: &SubscriptionState, why: String, steps: &mut Vec<Step>) {
    if have.enabled {
        steps.push(Step {
            why: format!("{why}: disable it"),
            action: Action::Sql(format!("ALTER SUBSCRIPTION {} DISABLE", ident(name))),
        });
    }
    if have.slot_name.is_some() {
        steps.push(Step {
            why: format!("detach subscription {name} from its slot"),
            action: Action::Sql(format!(
                "ALTER SUBSCRIPTION {} SET (slot_name = NONE)",
                ident(name)
            )),
        });
    }
    steps.push(Step {
        why: format!("drop subscription {name}"),
        action: Action::Sql(format!("DROP SUBSCRIPTION {}", ident(name))),
    });
}

/// The publisher is reachable and the subscription's slot there is lost (its WAL was removed
/// past `max_slot_wal_keep_size`) or gone: streaming can never resume from it.
fn slot_gone(want: &DesiredSubscription, peers: &PeerViews) -> bool {
    match peers.get(&want.flow.from) {
        Some(Ok(peer)) => match peer.slots.get(&want.flow.slot) {
            Some(slot) => slot.wal_status.as_deref() == Some("lost"),
            None => true,
        },
        _ => false,
    }
}

/// Start the subscription over from a fresh slot and a full copy. The copy merges into the rows
/// already here (the apply-upsert triggers of schema v3 let the publisher's version replace an
/// existing row instead of failing), so nothing is duplicated and every row the publisher
/// still has arrives, including those written while the slot was lost.
fn resync_subscription(
    name: &str,
    want: &DesiredSubscription,
    have: &SubscriptionState,
    own_version: Option<i32>,
    peers: &PeerViews,
    steps: &mut Vec<Step>,
    blocked: &mut Vec<Blocked>,
) {
    let publisher = &want.flow.from;
    let why = format!(
        "slot {} on {publisher} lost its WAL: resync {name} by a merging full copy",
        want.flow.slot
    );
    detach_and_drop(name, have, why, steps);
    // create_subscription drops the old slot on the publisher first (it is inactive). A resync
    // always copies: that is how the rows written while the slot was lost arrive.
    create_subscription(name, want, true, own_version, peers, steps, blocked);
}

fn create_subscription(
    name: &str,
    want: &DesiredSubscription,
    copy_data: bool,
    own_version: Option<i32>,
    peers: &PeerViews,
    steps: &mut Vec<Step>,
    blocked: &mut Vec<Blocked>,
) {
    let publisher = &want.flow.from;
    let mut block = |reason: String| {
        blocked.push(Blocked {
            object: format!("subscription {name}"),
            reason,
        });
    };
    let peer = match peers.get(publisher) {
        Some(Ok(p)) => p,
        Some(Err(e)) => return block(format!("cannot reach publisher {publisher}: {e}")),
        None => return block(format!("publisher {publisher} was not probed")),
    };
    if let Err(e) = schema::check_compatible(
        &want.flow.to.to_string(),
        own_version,
        &publisher.to_string(),
        peer.schema_version,
    ) {
        return block(e.to_string());
    }
    // A slot made before its publication existed makes the walsender fail on every start
    // ("publication does not exist" at the slot's position), so wait for the publication.
    if !peer.publications.contains(&want.flow.publication) {
        return block(format!(
            "publication {} does not exist on {publisher} yet; reconcile {publisher} first",
            want.flow.publication
        ));
    }
    if let Some(slot) = peer.slots.get(&want.flow.slot) {
        if slot.active {
            return block(format!(
                "slot {} on {publisher} is in use by another subscriber; two nodes claim the name {}",
                want.flow.slot, want.flow.to
            ));
        }
        // Left over from a create that failed after the slot was made: no data was copied
        // through it, so it is safe to drop.
        steps.push(Step {
            why: format!(
                "drop slot {} left on {publisher} by an interrupted create",
                want.flow.slot
            ),
            action: Action::PeerSql {
                peer: publisher.clone(),
                conninfo: want.conninfo.clone(),
                sql: format!(
                    "SELECT pg_drop_replication_slot({})",
                    literal(&want.flow.slot)
                ),
            },
        });
    }
    steps.push(Step {
        why: format!("subscribe to {} on {publisher} (group {})", want.flow.publication, want.flow.group),
        action: Action::Sql(format!(
            "CREATE SUBSCRIPTION {} CONNECTION {} PUBLICATION {} WITH (copy_data = {copy_data}, create_slot = true, slot_name = {}, {})",
            ident(name),
            literal(&want.conninfo),
            ident(&want.flow.publication),
            literal(&want.flow.slot),
            subscription_options_sql(want)
        )),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Topology;

    fn topo() -> Topology {
        Topology::from_toml(
            r#"
[[nodes]]
name = "us-east"
kind = "regional"
region = "us-east"
admin = "host=127.0.0.1 port=1 dbname=agog user=postgres"
[[nodes]]
name = "la"
kind = "edge"
region = "us-east"
facility = "facility-la-001"
tenant = "tenant-foo-inc"
admin = "host=127.0.0.1 port=2 dbname=agog user=postgres"
[[flows]]
from = "la"
to = "us-east"
group = "operational"
"#,
        )
        .unwrap()
    }

    #[test]
    fn fresh_edge_plan_migrates_then_publishes() {
        let t = topo();
        let la = NodeName::parse("la").unwrap();
        let d = DesiredNode::derive(&t, &la).unwrap();
        let p = plan(
            &d,
            &Catalog {
                database: "agog".into(),
                ..Default::default()
            },
            &PeerViews::new(),
        );
        let text = p.to_string();
        assert!(
            matches!(p.steps[0].action, Action::Migrate { version: 1, .. }),
            "{text}"
        );
        assert!(
            text.contains("CREATE PUBLICATION \"pub_operational_facility_la_001\" FOR TABLE "),
            "{text}"
        );
        assert!(
            text.contains(
                "\"public\".\"inventory_levels\" WHERE (\"facility_id\" = 'facility-la-001')"
            ),
            "{text}"
        );
        assert!(
            text.contains("WITH (publish = 'insert, update, delete')"),
            "{text}"
        );
    }

    #[test]
    fn subscription_waits_for_an_unreachable_publisher() {
        let t = topo();
        let us = NodeName::parse("us-east").unwrap();
        let d = DesiredNode::derive(&t, &us).unwrap();
        let mut peers = PeerViews::new();
        peers.insert(
            NodeName::parse("la").unwrap(),
            Err("connection refused".into()),
        );
        let p = plan(&d, &Catalog::default(), &peers);
        assert_eq!(p.blocked.len(), 1);
        assert!(p.blocked[0]
            .reason
            .contains("cannot reach publisher la: connection refused"));
        assert!(!p.to_string().contains("CREATE SUBSCRIPTION"));
    }

    /// The shared layout during a restore: us-east sends master data and the restore to la.
    fn restore_topo() -> Topology {
        Topology::from_toml(
            r#"
[[nodes]]
name = "us-east"
kind = "regional"
region = "us-east"
admin = "host=127.0.0.1 port=1 dbname=agog user=postgres"
[[nodes]]
name = "la"
kind = "edge"
region = "us-east"
facility = "facility-la-001"
tenant = "tenant-foo-inc"
admin = "host=127.0.0.1 port=2 dbname=agog user=postgres"
[[flows]]
from = "us-east"
to = "la"
group = "master"
[[flows]]
from = "us-east"
to = "la"
group = "restore"
[[flows]]
from = "la"
to = "us-east"
group = "operational"
"#,
        )
        .unwrap()
    }

    fn peer_with(publications: &[&str], empty: &[&str]) -> PeerView {
        PeerView {
            schema_version: Some(schema::latest_version()),
            publications: publications.iter().map(|p| p.to_string()).collect(),
            empty_publications: empty.iter().map(|p| p.to_string()).collect(),
            slots: BTreeMap::new(),
        }
    }

    fn subscription(publication: &str, slot: &str) -> SubscriptionState {
        SubscriptionState {
            enabled: true,
            conninfo: "host=127.0.0.1 port=1 dbname=agog user=postgres".into(),
            slot_name: Some(slot.into()),
            publications: vec![publication.into()],
            synchronous_commit: "off".into(),
            origin: "none".into(),
            streaming: "t".into(),
            tables: BTreeMap::new(),
        }
    }

    #[test]
    fn a_restore_is_a_second_transient_subscription_from_the_same_publisher() {
        let t = restore_topo();
        let la = NodeName::parse("la").unwrap();
        let d = DesiredNode::derive(&t, &la).unwrap();
        let restore = &d.subscriptions["la_from_us_east_tmp"];
        assert!(restore.transient);
        assert_eq!(restore.flow.slot, "la_from_us_east_tmp_slot");
        assert_eq!(restore.flow.publication, "pub_restore_facility_la_001");
        assert!(restore.tables.contains("agog_sync.ownership_overrides"));
        assert!(d.subscriptions.contains_key("la_from_us_east"));
        let us = NodeName::parse("us-east").unwrap();
        let mut peers = PeerViews::new();
        peers.insert(
            us.clone(),
            Ok(peer_with(&["pub_master_tenant_foo_inc"], &[])),
        );
        // Published: subscribe, with a copy, origin none.
        let catalog = Catalog {
            database: "agog".into(),
            ..Default::default()
        };
        peers.insert(
            us.clone(),
            Ok(peer_with(
                &["pub_master_tenant_foo_inc", "pub_restore_facility_la_001"],
                &[],
            )),
        );
        let text = plan(&d, &catalog, &peers).to_string();
        assert!(
            text.contains("CREATE SUBSCRIPTION \"la_from_us_east_tmp\"")
                && text
                    .contains("PUBLICATION \"pub_restore_facility_la_001\" WITH (copy_data = true")
                && text.contains("origin = none"),
            "{text}"
        );
        // Not published (not yet, or over): nothing to do, nothing blocked.
        peers.insert(
            us.clone(),
            Ok(peer_with(&["pub_master_tenant_foo_inc"], &[])),
        );
        let p = plan(&d, &catalog, &peers);
        assert!(!p.to_string().contains("la_from_us_east_tmp"), "{p}");
        assert!(p.blocked.is_empty(), "{p}");
        // Publisher unreachable: a transient flow never blocks.
        peers.insert(us.clone(), Err("connection refused".into()));
        let p = plan(&d, &catalog, &peers);
        assert!(
            p.blocked.iter().all(|b| !b.object.contains("_tmp")),
            "{:?}",
            p.blocked
        );
        // Emptied by the publisher: the subscription leaves, detached from its slot first.
        let mut catalog = catalog;
        catalog.subscriptions.insert(
            "la_from_us_east_tmp".into(),
            subscription("pub_restore_facility_la_001", "la_from_us_east_tmp_slot"),
        );
        peers.insert(
            us.clone(),
            Ok(peer_with(
                &["pub_master_tenant_foo_inc", "pub_restore_facility_la_001"],
                &["pub_restore_facility_la_001"],
            )),
        );
        let text = plan(&d, &catalog, &peers).to_string();
        let detach = text
            .find("ALTER SUBSCRIPTION \"la_from_us_east_tmp\" SET (slot_name = NONE)")
            .expect(&text);
        let drop = text
            .find("DROP SUBSCRIPTION \"la_from_us_east_tmp\"")
            .expect(&text);
        assert!(detach < drop, "{text}");
    }

    #[test]
    fn an_ending_flow_empties_its_publication_and_keeps_its_slot() {
        let mut t = restore_topo();
        for f in t.flows.iter_mut().filter(|f| f.group == "restore") {
            f.ending = true;
        }
        let us = NodeName::parse("us-east").unwrap();
        let d = DesiredNode::derive(&t, &us).unwrap();
        assert!(d.publications["pub_restore_facility_la_001"]
            .tables
            .is_empty());
        assert!(d.slots.contains("la_from_us_east_tmp_slot"));
        let mut catalog = Catalog {
            database: "agog".into(),
            ..Default::default()
        };
        let mut tables = BTreeMap::new();
        tables.insert(
            "public.orders".to_string(),
            Some("(facility_id = 'facility-la-001'::text)".to_string()),
        );
        tables.insert(
            "agog_sync.ownership_overrides".to_string(),
            Some("(facility_id = 'facility-la-001'::text)".to_string()),
        );
        catalog.publications.insert(
            "pub_restore_facility_la_001".into(),
            PublicationState {
                all_tables: false,
                insert: true,
                update: true,
                delete: true,
                truncate: false,
                tables,
            },
        );
        let text = plan(&d, &catalog, &PeerViews::new()).to_string();
        assert!(
            text.contains("ALTER PUBLICATION \"pub_restore_facility_la_001\" DROP TABLE \"agog_sync\".\"ownership_overrides\", \"public\".\"orders\""),
            "{text}"
        );
        assert!(!text.contains("DROP PUBLICATION"), "{text}");
        // Created from nothing, an ending publication has no tables.
        catalog.publications.clear();
        let text = plan(&d, &catalog, &PeerViews::new()).to_string();
        assert!(
            text.contains("CREATE PUBLICATION \"pub_restore_facility_la_001\" WITH (publish"),
            "{text}"
        );
    }

    #[test]
    fn a_flow_may_skip_the_initial_copy_but_a_resync_always_copies() {
        let mut t = topo();
        t.flows[0].copy_data = false;
        let us = NodeName::parse("us-east").unwrap();
        let d = DesiredNode::derive(&t, &us).unwrap();
        let la = NodeName::parse("la").unwrap();
        let mut peers = PeerViews::new();
        peers.insert(
            la.clone(),
            Ok(peer_with(&["pub_operational_facility_la_001"], &[])),
        );
        let catalog = Catalog {
            database: "agog".into(),
            ..Default::default()
        };
        let text = plan(&d, &catalog, &peers).to_string();
        assert!(text.contains("WITH (copy_data = false"), "{text}");
        // The slot is gone on the publisher: resync with a copy.
        let mut catalog = catalog;
        catalog.subscriptions.insert(
            "us_east_from_la".into(),
            subscription("pub_operational_facility_la_001", "us_east_from_la_slot"),
        );
        let text = plan(&d, &catalog, &peers).to_string();
        assert!(text.contains("WITH (copy_data = true"), "{text}");
    }
}
