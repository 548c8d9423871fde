//! `lab fail` and `lab heal`: a facility drops off (its agent stops, and with it its
//! PostgreSQL, as when the box loses power) and comes back (the agent starts again; it is
//! enrolled already, so it just runs).

use std::time::Duration;

use agog_tests::process::{runs, spawn, stop_pid};
use agog_tests::wait_until;

use crate::state::LabState;

pub async fn fail(st: &mut LabState, facility: &str) -> anyhow::Result<String> {
    let e = edge_mut(st, facility)?;
    if let Some(pid) = e.pid.take() {
        stop_pid(pid, "edge-agent", Duration::from_secs(30))?;
    }
    e.failed = true;
    let id = e.facility.clone();
    st.save()?;
    Ok(id)
}

pub async fn heal(st: &mut LabState, facility: &str) -> anyhow::Result<String> {
    let e = edge_mut(st, facility)?;
    if e.pid.is_some_and(|p| runs(p, "edge-agent")) {
        anyhow::bail!("{} runs already", e.facility);
    }
    let child = spawn(
        "edge-agent",
        &e.config(),
        "run",
        &e.dir.join("agent.log"),
        true,
    )?;
    e.pid = Some(child.id());
    e.failed = false;
    let (id, url) = (e.facility.clone(), e.health_url());
    st.save()?;
    let http = agog_tests::http_client();
    wait_until(
        &format!("{id} healthy again"),
        Duration::from_secs(180),
        || async {
            let body: Option<serde_json::Value> = match http.get(&url).send().await {
                Ok(r) => r.json().await.ok(),
                Err(_) => None,
            };
            Ok(body.filter(|b| b["status"] == "healthy").map(|_| ()))
        },
    )
    .await?;
    Ok(id)
}

fn edge_mut<'a>(
    st: &'a mut LabState,
    name: &str,
) -> anyhow::Result<&'a mut crate::state::EdgeState> {
    let known: Vec<String> = st.edges.iter().map(|e| e.facility.clone()).collect();
    st.edges
        .iter_mut()
        .find(|e| e.facility == name || e.node == name)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no facility {name:?} in the lab; it has {}",
                known.join(", ")
            )
        })
}
