//! What the edge agent and the hub share: validated ids, SQL quoting, the sync schema, the
//! topology spec and the reconciler that applies it to PostgreSQL (spec -> plan -> apply).

pub mod api;
pub mod apply;
pub mod catalog;
pub mod cli;
pub mod connect;
pub mod desired;
pub mod fsutil;
pub mod health;
pub mod ids;
pub mod ipsec;
pub mod migrate;
pub mod plan;
pub mod reconcile;
pub mod schema;
pub mod signal;
pub mod spec;
pub mod sql;
pub mod vpn;
pub mod wg;

pub use connect::connect;
pub use ids::{FacilityId, IdError, NodeName, RegionId, TenantId};
pub use plan::Plan;
pub use reconcile::{plan_node, reconcile_all, reconcile_node, ReconcileError};
pub use spec::Topology;
