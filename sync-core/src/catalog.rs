//! What PostgreSQL says exists on a node: publications (with their row filters), subscriptions
//! (with their tables), replication slots, the schema version and the node identity.

use std::collections::{BTreeMap, BTreeSet};

use tokio_postgres::GenericClient;

use crate::schema;

/// The row of `agog_sync.node_identity`: who the ownership guard thinks this node is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub node: String,
    pub kind: String,
    pub region: String,
    pub facility_id: Option<String>,
    pub tenant_id: Option<String>,
    pub owns_master: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicationState {
    pub all_tables: bool,
    pub insert: bool,
    pub update: bool,
    pub delete: bool,
    pub truncate: bool,
    /// `schema.table` -> the row filter as PostgreSQL deparses it.
    pub tables: BTreeMap<String, Option<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionState {
    pub enabled: bool,
    pub conninfo: String,
    pub slot_name: Option<String>,
    pub publications: Vec<String>,
    pub synchronous_commit: String,
    pub origin: String,
    /// `substream`: 'f', 't' or 'p' (parallel).
    pub streaming: String,
    /// `schema.table` -> `srsubstate` (i init, d data copy, f finished copy, s synchronized, r ready).
    pub tables: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SlotState {
    pub slot_type: String,
    pub database: Option<String>,
    pub active: bool,
    /// reserved | extended | unreserved | lost
    pub wal_status: Option<String>,
    /// WAL the slot holds back: `pg_current_wal_lsn() - restart_lsn`.
    pub retained_bytes: Option<i64>,
    /// WAL the subscriber has not confirmed yet: `pg_current_wal_lsn() - confirmed_flush_lsn`.
    pub lag_bytes: Option<i64>,
    /// The walsender's `replay_lag` while the slot is in use (NULL once caught up and idle).
    pub replay_lag_seconds: Option<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub database: String,
    pub schema_version: Option<i32>,
    pub identity: Option<NodeIdentity>,
    pub publications: BTreeMap<String, PublicationState>,
    pub subscriptions: BTreeMap<String, SubscriptionState>,
    pub slots: BTreeMap<String, SlotState>,
}

impl Catalog {
    pub async fn read(client: &impl GenericClient) -> Result<Self, tokio_postgres::Error> {
        let database: String = client
            .query_one("SELECT current_database()", &[])
            .await?
            .get(0);
        let schema_version = schema::current_version(client).await?;
        let identity = if schema_version.is_some_and(|v| v >= 1) {
            client
                .query_opt(
                    "SELECT node, kind, region, facility_id, tenant_id, owns_master FROM agog_sync.node_identity",
                    &[],
                )
                .await?
                .map(|r| NodeIdentity {
                    node: r.get(0),
                    kind: r.get(1),
                    region: r.get(2),
                    facility_id: r.get(3),
                    tenant_id: r.get(4),
                    owns_master: r.get(5),
                })
        } else {
            None
        };

        let mut publications = BTreeMap::new();
        for r in client
            .query(
                "SELECT pubname::text, puballtables, pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication",
                &[],
            )
            .await?
        {
            publications.insert(
                r.get::<_, String>(0),
                PublicationState {
                    all_tables: r.get(1),
                    insert: r.get(2),
                    update: r.get(3),
                    delete: r.get(4),
                    truncate: r.get(5),
                    tables: BTreeMap::new(),
                },
            );
        }
        for r in client
            .query(
                "SELECT p.pubname::text, n.nspname || '.' || c.relname, pg_get_expr(pr.prqual, pr.prrelid)
                   FROM pg_publication_rel pr
                   JOIN pg_publication p ON p.oid = pr.prpubid
                   JOIN pg_class c ON c.oid = pr.prrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace",
                &[],
            )
            .await?
        {
            if let Some(p) = publications.get_mut(&r.get::<_, String>(0)) {
                p.tables.insert(r.get(1), r.get(2));
            }
        }

        let mut subscriptions = BTreeMap::new();
        for r in client
            .query(
                "SELECT subname::text, subenabled, subconninfo, subslotname::text, subpublications,
                        subsynccommit, suborigin, substream::text
                   FROM pg_subscription
                  WHERE subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
                &[],
            )
            .await?
        {
            subscriptions.insert(
                r.get::<_, String>(0),
                SubscriptionState {
                    enabled: r.get(1),
                    conninfo: r.get(2),
                    slot_name: r.get(3),
                    publications: r.get(4),
                    synchronous_commit: r.get(5),
                    origin: r.get(6),
                    streaming: r.get(7),
                    tables: BTreeMap::new(),
                },
            );
        }
        for r in client
            .query(
                "SELECT s.subname::text, n.nspname || '.' || c.relname, sr.srsubstate::text
                   FROM pg_subscription_rel sr
                   JOIN pg_subscription s ON s.oid = sr.srsubid
                   JOIN pg_class c ON c.oid = sr.srrelid
                   JOIN pg_namespace n ON n.oid = c.relnamespace",
                &[],
            )
            .await?
        {
            if let Some(s) = subscriptions.get_mut(&r.get::<_, String>(0)) {
                s.tables.insert(r.get(1), r.get(2));
            }
        }

        let slots = read_slots(client).await?;
        Ok(Catalog {
            database,
            schema_version,
            identity,
            publications,
            subscriptions,
            slots,
        })
    }
}

pub async fn read_slots(
    client: &impl GenericClient,
) -> Result<BTreeMap<String, SlotState>, tokio_postgres::Error> {
    let mut slots = BTreeMap::new();
    for r in client
        .query(
            "SELECT s.slot_name::text, s.slot_type, s.database::text, s.active, s.wal_status,
                    CASE WHEN pg_is_in_recovery() OR s.restart_lsn IS NULL THEN NULL
                         ELSE pg_wal_lsn_diff(pg_current_wal_lsn(), s.restart_lsn)::bigint END,
                    CASE WHEN pg_is_in_recovery() OR s.confirmed_flush_lsn IS NULL THEN NULL
                         ELSE greatest(pg_wal_lsn_diff(pg_current_wal_lsn(), s.confirmed_flush_lsn), 0)::bigint END,
                    extract(epoch FROM r.replay_lag)::float8
               FROM pg_replication_slots s
               LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid",
            &[],
        )
        .await?
    {
        slots.insert(
            r.get::<_, String>(0),
            SlotState {
                slot_type: r.get(1),
                database: r.get(2),
                active: r.get(3),
                wal_status: r.get(4),
                retained_bytes: r.get(5),
                lag_bytes: r.get(6),
                replay_lag_seconds: r.get(7),
            },
        );
    }
    Ok(slots)
}

/// What a subscriber needs to know about its publisher before it creates a subscription.
#[derive(Debug, Clone, Default)]
pub struct PeerView {
    pub schema_version: Option<i32>,
    pub publications: BTreeSet<String>,
    /// Publications that publish no table: a transient flow the publisher has ended.
    pub empty_publications: BTreeSet<String>,
    pub slots: BTreeMap<String, SlotState>,
}

impl PeerView {
    pub async fn read(client: &impl GenericClient) -> Result<Self, tokio_postgres::Error> {
        let schema_version = schema::current_version(client).await?;
        let publications = client
            .query("SELECT pubname::text FROM pg_publication", &[])
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let empty_publications = client
            .query(
                "SELECT p.pubname::text FROM pg_publication p
                  WHERE NOT p.puballtables
                    AND NOT EXISTS (SELECT 1 FROM pg_publication_rel r WHERE r.prpubid = p.oid)
                    AND NOT EXISTS (SELECT 1 FROM pg_publication_namespace n WHERE n.pnpubid = p.oid)",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let slots = read_slots(client).await?;
        Ok(PeerView {
            schema_version,
            publications,
            empty_publications,
            slots,
        })
    }
}
