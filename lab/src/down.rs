//! `lab down`: stop every process the lab started (by the pid it recorded, after checking the
//! pid still runs that program), stop its databases, remove its directory.

use std::time::Duration;

use agog_tests::cluster::Cluster;
use agog_tests::process::{runs, stop_pid};

use crate::state::LabState;

pub fn down(st: &LabState, say: &dyn Fn(&str)) -> anyhow::Result<()> {
    for e in &st.edges {
        if let Some(pid) = e.pid {
            stop_pid(pid, "edge-agent", Duration::from_secs(30))?;
        }
        // A server left by an agent that was killed rather than stopped.
        if let Some(pg) = std::fs::read_to_string(e.dir.join("pgdata/postmaster.pid"))
            .ok()
            .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
        {
            stop_pid(pg, "postgres", Duration::from_secs(10))?;
        }
        say(&format!("edge {} stopped", e.facility));
    }
    for r in &st.regions {
        if let Some(pid) = r.hub_pid {
            stop_pid(pid, "hub", Duration::from_secs(15))?;
        }
        Cluster::attach(&r.region, r.db_dir.clone(), r.db_port).destroy();
        say(&format!("hub and database of {} stopped", r.region));
    }
    if let Some(s) = &st.sink {
        if runs(s.pid, "lab") {
            stop_pid(s.pid, "lab", Duration::from_secs(5))?;
        }
    }
    std::fs::remove_dir_all(&st.dir)?;
    say(&format!("removed {}", st.dir.display()));
    Ok(())
}
