//! `lab up`: the sink, two regional databases with their hubs (API, dashboard, monitor, alerts
//! to the sink), operators, master data, then three edges enrolled with tokens through the
//! real enrollment API, their inventory, and a wait until each hub shows its edges online.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use agog_tests::cluster::{free_port, Cluster};
use agog_tests::edge_box::{EdgeBox, EnrollingBoxConfig};
use agog_tests::hub_process::HubProcess;
use agog_tests::pki::{pki, Pki};
use agog_tests::wait_until;
use anyhow::Context;
use chrono::Utc;

use crate::layout::{self, EDGES, REGIONS};
use crate::seed;
use crate::state::{EdgeState, LabState, Login, RegionState, SinkState};
use crate::Progress;

pub struct Options {
    pub check_interval_secs: u64,
    pub offline_after_secs: u64,
    pub refresh_secs: u64,
}

/// A port on 127.0.0.1: `preferred` when free, else any free one.
fn port_near(preferred: u16) -> anyhow::Result<u16> {
    match std::net::TcpListener::bind(("127.0.0.1", preferred)) {
        Ok(_) => Ok(preferred),
        Err(_) => free_port(),
    }
}

fn random_password() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    Alphanumeric.sample_string(&mut rand::thread_rng(), 20)
}

pub async fn up(dir: &Path, opts: &Options, p: &Progress) -> anyhow::Result<LabState> {
    let mut st = LabState {
        dir: dir.to_path_buf(),
        started_at: Utc::now(),
        complete: false,
        check_interval_secs: opts.check_interval_secs,
        offline_after_secs: opts.offline_after_secs,
        sink: None,
        regions: Vec::new(),
        edges: Vec::new(),
        login: None,
    };
    st.save()?;

    // The alert sink: this binary again, as a process of its own.
    let sink_port = free_port()?;
    let sink_pid = crate::spawn_self(
        &["sink", "--port", &sink_port.to_string()],
        &dir.join("sink.log"),
    )?;
    st.sink = Some(SinkState {
        pid: sink_pid,
        port: sink_port,
    });
    st.save()?;
    let sink_url = st.sink.as_ref().expect("just set").url();
    let http = agog_tests::http_client();
    wait_until(
        "the alert sink answers",
        Duration::from_secs(20),
        || async { Ok(http.get(format!("{sink_url}/messages")).send().await.ok()) },
    )
    .await?;
    p.step(&format!("alert sink (Slack-style webhook) on {sink_url}"));

    let pki_dir = dir.join("pki");
    std::fs::create_dir_all(&pki_dir)?;
    let pki: Pki = pki(&pki_dir)?;

    // Regional databases.
    for r in REGIONS {
        let db_dir = dir.join(format!("{}-db", r.region));
        let cluster = Cluster::start_in(r.region, db_dir.clone())
            .with_context(|| format!("start the {} database", r.region))?;
        st.regions.push(RegionState {
            region: r.region.to_string(),
            db_dir,
            db_port: cluster.port,
            hub_dir: dir.join(format!("{}-hub", r.region)),
            hub_pid: None,
            api_port: free_port()?,
            web_port: port_near(r.preferred_web_port)?,
        });
        st.save()?;
        p.step(&format!(
            "regional database {} (PostgreSQL 16) on port {}",
            r.region, cluster.port
        ));
    }

    // The static part of every hub's topology: both regionals and the global flows between them.
    let spec_path = dir.join("regions.toml");
    std::fs::write(&spec_path, regions_spec(&st))?;

    // Hubs.
    let mut hubs = Vec::new();
    for i in 0..st.regions.len() {
        let config = hub_config(&st.regions[i], &pki, &spec_path, &sink_url, opts);
        let r = &mut st.regions[i];
        let mut hub = HubProcess::new_in(r.hub_dir.clone(), &format!("lab-{}", r.region), &config)?;
        r.hub_pid = Some(hub.start_detached()?);
        st.save()?;
        hubs.push(hub);
    }
    for (r, hub) in st.regions.iter().zip(&hubs) {
        let url = format!("{}/login", r.dashboard_url());
        wait_until(
            &format!("the {} hub's dashboard", r.region),
            Duration::from_secs(60),
            || async {
                Ok(http
                    .get(&url)
                    .send()
                    .await
                    .ok()
                    .filter(|r| r.status().is_success()))
            },
        )
        .await
        .map_err(|e| {
            e.context(format!(
                "hub log {}:\n{}",
                hub.dir.join("hub.log").display(),
                tail(&hub.log(), 30)
            ))
        })?;
        p.step(&format!(
            "hub {}: enrollment API {}, dashboard {}",
            r.region,
            r.api_url(),
            r.dashboard_url()
        ));
    }

    // Operators: the same logins on both hubs; a token for the read API.
    let login = Login {
        operator: layout::ADMIN.into(),
        password: random_password(),
        tenant_operator: layout::TENANT_OPERATOR.into(),
        tenant: layout::TENANT_OPERATOR_TENANT.into(),
        tenant_password: random_password(),
        token: String::new(),
    };
    let mut token = String::new();
    for (i, hub) in hubs.iter().enumerate() {
        hub_ok(hub.cli_with_input(
            &["operator", "add", &login.operator, "--password-stdin"],
            &format!("{}\n", login.password),
        )?)?;
        hub_ok(hub.cli_with_input(
            &[
                "operator",
                "add",
                &login.tenant_operator,
                "--tenant",
                &login.tenant,
                "--password-stdin",
            ],
            &format!("{}\n", login.tenant_password),
        )?)?;
        if i == 0 {
            token = hub_ok(hub.cli(&[
                "operator",
                "token",
                &login.operator,
                "--expires",
                "30d",
                "--label",
                "lab",
            ])?)?
            .trim()
            .to_string();
        }
    }
    st.login = Some(Login { token, ..login });
    st.save()?;
    p.step("operators admin (every tenant) and foo-viewer (tenant-foo-inc) on both hubs");

    // Edges: a token from their region's hub each, then the real agent enrolls with it.
    let mut boxes = Vec::new();
    for e in EDGES {
        let (ri, r) = st
            .regions
            .iter()
            .enumerate()
            .find(|(_, r)| r.region == e.region)
            .expect("every edge's region is in REGIONS");
        let token = hub_ok(hubs[ri].cli(&[
            "token",
            "create",
            "--facility",
            e.facility,
            "--tenant",
            e.tenant,
            "--name",
            e.name,
            "--expires",
            "1h",
        ])?)?
        .trim()
        .to_string();
        let mut b = EdgeBox::new_enrolling_in(
            dir.join(format!("edge-{}", e.node)),
            &EnrollingBoxConfig {
                node: e.node,
                facility: e.facility,
                tenant: e.tenant,
                region: e.region,
                hub_url: r.api_url(),
                token,
                ca_cert: pki.ca_cert.clone(),
                reconcile_secs: 5,
            },
        )?;
        let pid = b.start_detached()?;
        st.edges.push(EdgeState {
            node: e.node.into(),
            facility: e.facility.into(),
            tenant: e.tenant.into(),
            region: e.region.into(),
            dir: b.dir.clone(),
            pg_port: b.pg_port,
            health_port: b.health_port,
            pid: Some(pid),
            failed: false,
        });
        st.save()?;
        p.step(&format!(
            "edge {} ({}, {}) started; enrolling with the {} hub",
            e.facility, e.name, e.tenant, e.region
        ));
        boxes.push(b);
    }
    for (b, e) in boxes.iter().zip(&st.edges) {
        b.wait_status("healthy", Duration::from_secs(240)).await?;
        let db = seed::connect(&e.conninfo(), Duration::from_secs(30)).await?;
        seed::inventory(&db, e).await?;
        p.step(&format!(
            "edge {} enrolled, healthy, inventory seeded",
            e.facility
        ));
    }

    // Master data, once each hub's reconcile has made its regional the owner (it publishes
    // master data to its edges now).
    for r in &st.regions {
        let db = seed::connect(&r.conninfo(), Duration::from_secs(30)).await?;
        seed::wait_owns_master(
            &db,
            &format!("the {} regional", r.region),
            Duration::from_secs(120),
        )
        .await?;
        seed::master_data(&db).await?;
    }
    p.step("master data: 2 tenants, 9 products, 3 customers in each region");

    // Each hub shows its edges online.
    for r in &st.regions {
        let want = st.edges.iter().filter(|e| e.region == r.region).count() as i64;
        let db = seed::connect(&r.conninfo(), Duration::from_secs(30)).await?;
        agog_tests::fleet::wait_count(
            &db,
            "SELECT 1 FROM agog_hub.edges WHERE state = 'online'",
            want,
            Duration::from_secs(120),
        )
        .await
        .with_context(|| format!("the {} hub shows its edges online", r.region))?;
    }
    p.step("both hubs show their edges online");
    st.complete = true;
    st.save()?;
    Ok(st)
}

/// stdout of a successful CLI call, or its stderr as the error.
fn hub_ok((code, out, err): (i32, String, String)) -> anyhow::Result<String> {
    anyhow::ensure!(code == 0, "hub CLI failed ({code}): {err}");
    Ok(out)
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn regions_spec(st: &LabState) -> String {
    let mut s =
        String::from("# Written by the lab: the regionals and the global flows between them.\n\n");
    for r in &st.regions {
        let _ = writeln!(
            s,
            "[[nodes]]\nname = \"{0}\"\nkind = \"regional\"\nregion = \"{0}\"\nadmin = \"{1}\"\n",
            r.region,
            r.conninfo()
        );
    }
    for a in &st.regions {
        for b in st.regions.iter().filter(|b| b.region != a.region) {
            let _ = writeln!(
                s,
                "[[flows]]\nfrom = \"{}\"\nto = \"{}\"\ngroup = \"global\"\n",
                a.region, b.region
            );
        }
    }
    s
}

fn hub_config(r: &RegionState, pki: &Pki, spec: &Path, sink_url: &str, o: &Options) -> String {
    format!(
        r#"region = "{region}"
database = "{db}"
regional_address = "127.0.0.1"

[monitor]
interval_secs = {check}
timeout_secs = 2
offline_after_secs = {offline}
recover_after_checks = 2
tick_ms = 500

[reconcile]
interval_secs = 5
spec = "{spec}"

[api]
listen = "127.0.0.1:{api}"
tls_cert = "{cert}"
tls_key = "{key}"

[web]
listen = "127.0.0.1:{web}"
refresh_secs = {refresh}

[[alerts.channels]]
name = "lab-slack"
kind = "slack"
webhook_url = "{sink_url}{path}"
"#,
        region = r.region,
        db = r.conninfo(),
        check = o.check_interval_secs,
        offline = o.offline_after_secs,
        spec = spec.display(),
        api = r.api_port,
        cert = pki.hub_cert.display(),
        key = pki.hub_key.display(),
        web = r.web_port,
        refresh = o.refresh_secs,
        path = crate::sink::WEBHOOK_PATH,
    )
}
