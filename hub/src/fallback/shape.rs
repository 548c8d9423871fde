//! How a facility in fallback shapes the regional topology (`regional::build_topology_with`):
//! which of its flows exist in each phase.
//!
//! | phase | edge -> regional (operational) | master -> edge | regional -> edge (restore) |
//! |---|---|---|---|
//! | activating, active | none: the dead edge's subscription is detached and dropped | none | none |
//! | active, restore token issued | none | none | published (for the dead edge's node until the rebuilt one enrolls) |
//! | restoring, read_only | none | yes | yes |
//! | handing_over | yes, created without a copy | yes | yes |
//! | closing | yes | yes | emptied: the edge leaves it, then it goes |
//! | restored | normal | normal | none |

use std::collections::BTreeMap;

use tokio_postgres::GenericClient;

use super::record::{self, Phase};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// No flow to or from the facility's edge.
    Gone,
    Restore {
        /// master -> edge.
        master: bool,
        /// edge -> regional, created with `copy_data = false`.
        up: bool,
        /// The restore publication is emptied so the edge leaves it.
        ending: bool,
    },
}

pub fn shape(phase: Phase, restore_requested: bool) -> Option<Shape> {
    Some(match phase {
        Phase::Activating => Shape::Gone,
        Phase::Active if !restore_requested => Shape::Gone,
        Phase::Active => Shape::Restore {
            master: false,
            up: false,
            ending: false,
        },
        Phase::Restoring | Phase::ReadOnly => Shape::Restore {
            master: true,
            up: false,
            ending: false,
        },
        Phase::HandingOver => Shape::Restore {
            master: true,
            up: true,
            ending: false,
        },
        Phase::Closing => Shape::Restore {
            master: true,
            up: true,
            ending: true,
        },
        Phase::Restored => return None,
    })
}

/// Facility id -> shape, for every open fallback.
pub async fn load(
    db: &impl GenericClient,
) -> Result<BTreeMap<String, Shape>, tokio_postgres::Error> {
    Ok(record::all_open(db)
        .await?
        .into_iter()
        .filter_map(|f| {
            shape(f.phase, f.restore_requested_at.is_some()).map(|s| (f.facility_id, s))
        })
        .collect())
}
