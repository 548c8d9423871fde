//! The hub's state schema (`agog_hub`, in the regional database) and connections to it.

use sync_core::migrate::{Migration, MigrationSet};

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "edges, incidents and the alert outbox",
        sql: include_str!("0001_hub_state.sql"),
    },
    Migration {
        version: 2,
        name: "bootstrap tokens and enrollment",
        sql: include_str!("0002_enrollment.sql"),
    },
    Migration {
        version: 3,
        name: "lag, per-facility contacts and routes, miss counts",
        sql: include_str!("0003_lag_contacts.sql"),
    },
    Migration {
        version: 5,
        name: "operators, their tokens and sessions; the last /health of each edge",
        sql: include_str!("0005_web.sql"),
    },
    Migration {
        version: 7,
        name: "cloud fallback: fallbacks, their log, operators, restore tokens",
        sql: include_str!("0007_fallback.sql"),
    },
    Migration {
        version: 9,
        name: "self-service provisioning requests and their jobs",
        sql: include_str!("0009_provisioning.sql"),
    },
    // 10, not 8: a database main already took to 9 would never apply an 8 (only versions
    // above the current one run).
    Migration {
        version: 10,
        name: "each edge's tunnel address",
        sql: include_str!("0010_tunnel.sql"),
    },
    Migration {
        version: 11,
        name: "tunnel addresses reserved at provisioning",
        sql: include_str!("0011_tunnel_reservation.sql"),
    },
];

pub const HUB: MigrationSet = MigrationSet {
    schema: "agog_hub",
    migrations: MIGRATIONS,
};

/// Connect to the regional database and bring the hub schema up to date.
pub async fn connect_and_migrate(conninfo: &str) -> anyhow::Result<tokio_postgres::Client> {
    let mut client = sync_core::connect(conninfo).await.map_err(|e| {
        anyhow::anyhow!(
            "connect to the regional database: {}",
            sync_core::apply::describe(&e)
        )
    })?;
    let applied = HUB.migrate(&mut client).await.map_err(|e| {
        anyhow::anyhow!("migrate the hub schema: {}", sync_core::apply::describe(&e))
    })?;
    if !applied.is_empty() {
        tracing::info!(?applied, "hub schema migrated");
    }
    Ok(client)
}
