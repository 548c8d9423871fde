//! `lab status`: every node, whether it runs, its ports and URLs; `--json` for scripts.

use std::time::Duration;

use agog_tests::cluster::Cluster;
use agog_tests::process::runs;
use serde_json::{json, Value};

use crate::state::LabState;

pub async fn report(st: &LabState) -> Value {
    let http = agog_tests::http_client();
    let mut edges = Vec::new();
    for e in &st.edges {
        let health = match http
            .get(e.health_url())
            .timeout(Duration::from_secs(2))
            .send()
            .await
        {
            Ok(r) => r
                .json::<Value>()
                .await
                .ok()
                .and_then(|v| v["status"].as_str().map(String::from))
                .unwrap_or_else(|| "unreadable".into()),
            Err(_) => "no answer".into(),
        };
        edges.push(json!({
            "facility": e.facility,
            "node": e.node,
            "tenant": e.tenant,
            "region": e.region,
            "agent_pid": e.pid,
            "agent_running": e.pid.is_some_and(|p| runs(p, "edge-agent")),
            "failed": e.failed,
            "postgres_port": e.pg_port,
            "health_url": e.health_url(),
            "health": health,
            "dir": e.dir,
            "log": e.dir.join("agent.log"),
        }));
    }
    let regions: Vec<Value> = st
        .regions
        .iter()
        .map(|r| {
            let db = Cluster::attach(&r.region, r.db_dir.clone(), r.db_port);
            json!({
                "region": r.region,
                "database": {
                    "port": r.db_port,
                    "conninfo": r.conninfo(),
                    "running": db.running(),
                    "dir": r.db_dir,
                },
                "hub": {
                    "pid": r.hub_pid,
                    "running": r.hub_pid.is_some_and(|p| runs(p, "hub")),
                    "api_url": r.api_url(),
                    "dashboard_url": r.dashboard_url(),
                    "config": r.hub_config(),
                    "log": r.hub_dir.join("hub.log"),
                },
            })
        })
        .collect();
    json!({
        "dir": st.dir,
        "complete": st.complete,
        "started_at": st.started_at,
        "check_interval_secs": st.check_interval_secs,
        "offline_after_secs": st.offline_after_secs,
        "dashboard_url": st.regions.first().map(|r| r.dashboard_url()),
        "login": st.login,
        "sink": st.sink.as_ref().map(|s| json!({
            "pid": s.pid,
            "running": runs(s.pid, "lab"),
            "url": s.url(),
            "messages_url": format!("{}/messages", s.url()),
        })),
        "regions": regions,
        "edges": edges,
    })
}

pub fn print(v: &Value) {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    let up = |b: &Value| {
        if b.as_bool() == Some(true) {
            "running"
        } else {
            "STOPPED"
        }
    };
    println!(
        "lab in {}{}",
        s(&v["dir"]),
        if v["complete"] == true {
            ""
        } else {
            " (start not finished)"
        }
    );
    for r in v["regions"].as_array().into_iter().flatten() {
        println!(
            "  {:<11} database :{} {:<8} hub {:<8} dashboard {}  api {}",
            s(&r["region"]),
            r["database"]["port"],
            up(&r["database"]["running"]),
            up(&r["hub"]["running"]),
            s(&r["hub"]["dashboard_url"]),
            s(&r["hub"]["api_url"]),
        );
    }
    for e in v["edges"].as_array().into_iter().flatten() {
        println!(
            "  {:<24} {:<11} agent {:<8} /health {:<10} {}{}",
            s(&e["facility"]),
            s(&e["region"]),
            up(&e["agent_running"]),
            s(&e["health"]),
            s(&e["health_url"]),
            if e["failed"] == true {
                "  (lab fail)"
            } else {
                ""
            },
        );
    }
    if let Some(sink) = v["sink"].as_object() {
        println!("  alert sink {} {}", s(&sink["url"]), up(&sink["running"]));
    }
    if let Some(l) = v["login"].as_object() {
        println!(
            "  sign in: {} / {}  (tenant view: {} / {})",
            s(&l["operator"]),
            s(&l["password"]),
            s(&l["tenant_operator"]),
            s(&l["tenant_password"])
        );
    }
}
