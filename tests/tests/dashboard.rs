//! The dashboard as a person sees it, and the read API as a script does.
//!
//! `the_lab_in_a_browser...`: the real lab (two regions, their hubs, three enrolled edges),
//! headless Chromium signs in and reads the fleet table, LA's inventory (LIVE), then after
//! `lab fail` the OFFLINE banner and STALE chips appear without a reload, the alert reaches the
//! lab's sink and the alerts log; after `lab heal` the banner goes. Screenshots of each step in
//! target/test-artifacts/dashboard/.
//!
//! `a_tenant_token_reads_only_its_tenant...`: one hub with `[web]` over a regional database
//! holding two tenants' facilities; tokens, passwords and sessions from the hub's CLI.

use std::time::Duration;

use agog_tests::browser::Browser;
use agog_tests::fleet::exec;
use agog_tests::hub_process::{succeeded, HubProcess};
use agog_tests::lab_process::Lab;
use agog_tests::{cluster, wait_until, Cluster};
use fantoccini::Locator;
use serde_json::Value;

const LA: &str = "facility-la-001";
const T: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lab_in_a_browser_shows_the_fleet_and_an_outage_with_its_banner_and_alert(
) -> anyhow::Result<()> {
    // Short intervals so the outage shows within seconds (the lab's defaults are 5 s / 30 s).
    let lab = Lab::up(&[
        "--check-interval",
        "2",
        "--offline-after",
        "8",
        "--refresh",
        "1",
    ])?;
    let r = in_the_browser(&lab).await;
    if r.is_err() {
        lab.keep_logs();
    }
    r
}

/// Sink messages about LA's going offline (the lab's start may have had one already: an edge
/// is watched from its enrollment, before its PostgreSQL is up).
async fn la_offline_alerts(http: &reqwest::Client, sink: &str) -> anyhow::Result<usize> {
    let m: Vec<Value> = http.get(sink).send().await?.json().await?;
    Ok(m.iter()
        .filter(|m| {
            let t = m["text"].as_str().unwrap_or_default();
            t.contains(LA) && t.contains("OFFLINE")
        })
        .count())
}

async fn in_the_browser(lab: &Lab) -> anyhow::Result<()> {
    let status = lab.status()?;
    let dashboard = status["dashboard_url"].as_str().unwrap().to_string();
    let login = &status["login"];
    assert_eq!(status["complete"], true);
    assert_eq!(status["edges"].as_array().unwrap().len(), 3);
    for e in status["edges"].as_array().unwrap() {
        assert_eq!(e["health"], "healthy", "{e}");
    }

    let b = Browser::start("dashboard").await?;
    // Not signed in: the dashboard asks for a login.
    b.client.goto(&dashboard).await?;
    b.wait_text("h1", &["Sign in"], T).await?;
    b.screenshot("01-sign-in").await?;
    let operator = login["operator"].as_str().unwrap();
    b.sign_in(operator, "not the password").await?;
    b.wait_text("#login-error", &["Wrong operator name or password"], T)
        .await?;
    b.sign_in(operator, login["password"].as_str().unwrap())
        .await?;

    // The fleet: both us-east edges from this hub, Frankfurt from eu-central by replication.
    b.wait_text("h1", &["Fleet"], T).await?;
    let la_row = format!("tr[data-facility='{LA}']");
    let la = b.wait_text(&la_row, &[LA, "us-east", "ONLINE"], T).await?;
    assert!(la.contains("tenant-foo-inc"), "{la}");
    b.wait_text(
        "tr[data-facility='facility-nyc-001']",
        &["us-east", "ONLINE"],
        T,
    )
    .await?;
    b.wait_text(
        "tr[data-facility='facility-frankfurt-001']",
        &["eu-central", "ONLINE"],
        T,
    )
    .await?;
    let header = b.text("table.fleet thead").await?.unwrap_or_default();
    for col in [
        "FACILITY",
        "REGION",
        "STATE",
        "LAST SEEN",
        "LAG UP",
        "LAG DOWN",
        "TUNNEL",
        "AGENT",
        "SCHEMA",
    ] {
        assert!(header.contains(col), "fleet header {header:?} lacks {col}");
    }
    // Agent and schema versions come from the edge itself (heartbeat and /health).
    let la = b
        .wait_text(&la_row, &[env!("CARGO_PKG_VERSION")], T)
        .await?;
    assert!(la.contains("direct"), "no tunnel configured: {la}");
    b.screenshot("02-fleet").await?;
    // A tablet's width: the table scrolls inside its box, the page does not.
    b.client.set_window_size(820, 1180).await?;
    b.wait_text(&la_row, &["ONLINE"], T).await?;
    b.screenshot("02-fleet-tablet").await?;
    b.client.set_window_size(1280, 900).await?;

    // `up` again starts no second fleet; `write` makes traffic everywhere.
    let again = lab.run(&["up"])?;
    assert_eq!(
        lab.status()?["edges"].as_array().unwrap().len(),
        3,
        "{again}"
    );
    let wrote = lab.run(&["write", "--seconds", "3"])?;
    let (writes, refused) = wrote
        .trim()
        .split_once(" writes, ")
        .and_then(|(w, r)| {
            Some((
                w.parse::<u64>().ok()?,
                r.strip_suffix(" refused")?.parse::<u64>().ok()?,
            ))
        })
        .ok_or_else(|| anyhow::anyhow!("lab write said {wrote:?}"))?;
    assert!(writes > 10 && refused == 0, "{wrote}");

    // LA's inventory: LIVE rows, no banner.
    b.client
        .goto(&format!("{dashboard}/facilities/{LA}/inventory"))
        .await?;
    b.wait_text(
        "table.inventory",
        &["Corrugated Box 12x9", "BOX-12x9", "LIVE"],
        T,
    )
    .await?;
    assert!(b.text("#offline-banner").await?.is_none());
    assert!(!b
        .text("table.inventory")
        .await?
        .unwrap_or_default()
        .contains("STALE"));
    b.screenshot("03-inventory-live").await?;

    // The outage: the page changes by itself (no reload), within the offline threshold plus
    // a few checks.
    let sink = status["sink"]["messages_url"].as_str().unwrap().to_string();
    let http = agog_tests::http_client();
    let before = la_offline_alerts(&http, &sink).await?;
    let said = lab.run(&["fail", LA])?;
    assert!(said.contains("stopped"), "{said}");
    let banner = b
        .wait_text(
            "#offline-banner",
            &[
                &format!("{LA} is OFFLINE. Data is cached from "),
                "Cannot place orders to this facility until it comes back online.",
            ],
            T,
        )
        .await
        .map_err(|e| e.context(lab.log("us-east-hub/hub.log")))?;
    assert!(banner.contains("Stale Data - Facility Offline"), "{banner}");
    b.wait_text("table.inventory", &["STALE"], T).await?;
    assert!(!b
        .text("table.inventory")
        .await?
        .unwrap_or_default()
        .contains("LIVE"));
    b.screenshot("04-inventory-offline").await?;

    b.client.goto(&dashboard).await?;
    let la = b.wait_text(&la_row, &["OFFLINE", "since"], T).await?;
    assert!(!la.contains("ONLINE"), "{la}");
    b.screenshot("05-fleet-offline").await?;

    // The alert reached the sink, and the alerts log lists it, newest first, as delivered.
    wait_until("the offline alert in the sink", T, || async {
        Ok((la_offline_alerts(&http, &sink).await? > before).then_some(()))
    })
    .await?;
    b.client.goto(&format!("{dashboard}/alerts")).await?;
    b.wait_text(
        "table.alerts tbody tr:first-child",
        &[LA, "offline", "lab-slack", "delivered"],
        T,
    )
    .await?;
    b.screenshot("06-alerts").await?;

    // The edge detail: slots, subscriptions, the outage still open.
    b.client
        .goto(&format!("{dashboard}/facilities/{LA}"))
        .await?;
    b.wait_text(
        "main",
        &[
            "Replication slots",
            "Subscriptions",
            "STILL OFFLINE",
            "Conflicts resolved",
            "Retained WAL",
        ],
        T,
    )
    .await?;
    b.screenshot("07-edge-detail").await?;

    // Healed: the banner goes by itself.
    b.client
        .goto(&format!("{dashboard}/facilities/{LA}/inventory"))
        .await?;
    b.wait_text("#offline-banner", &["OFFLINE"], T).await?;
    lab.run(&["heal", LA])?;
    b.wait_gone("#offline-banner", T).await?;
    b.wait_text("table.inventory", &["LIVE"], T).await?;
    b.screenshot("08-inventory-healed").await?;
    b.client.goto(&dashboard).await?;
    b.wait_text(&la_row, &["ONLINE"], T).await?;
    b.close().await?;

    // `down` leaves nothing: no process whose command line names the lab's directory (its
    // clusters, hubs, agents and sink all run from it), and no directory.
    let dir = lab.dir.to_string_lossy().into_owned();
    assert!(
        !lab_processes(&dir).is_empty(),
        "the lab's processes are found by their directory"
    );
    lab.run(&["down"])?;
    wait_until("every lab process gone", T, || async {
        Ok(lab_processes(&dir).is_empty().then_some(()))
    })
    .await
    .map_err(|e| e.context(format!("still running: {:?}", lab_processes(&dir))))?;
    assert!(!lab.dir.exists(), "lab down left {}", lab.dir.display());
    Ok(())
}

/// Processes (pid, command line) whose command line mentions `dir`.
fn lab_processes(dir: &str) -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let raw = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
            // A zombie has an empty command line and holds nothing.
            (pid != std::process::id() && cmd.contains(dir)).then_some((pid, cmd))
        })
        .collect()
}

/// Rows as replication brings them from other regions (the ownership guard does not fire for
/// replicated rows, and this regional owns neither facility).
async fn replicated_fixture(db: &tokio_postgres::Client) -> anyhow::Result<()> {
    exec(
        db,
        "SET session_replication_role = replica;
         INSERT INTO public.products (tenant_id, id, sku, name) VALUES
           ('tenant-a', '00000000-0000-0000-0000-00000000000a', 'A-1', 'Product of A'),
           ('tenant-b', '00000000-0000-0000-0000-00000000000b', 'B-1', 'Secret product of B');
         INSERT INTO public.facility_status (region, facility_id, tenant_id, online, last_sync, offline_since) VALUES
           ('eu-central', 'facility-a', 'tenant-a', true, now(), NULL),
           ('eu-central', 'facility-b', 'tenant-b', false, now() - interval '2 hours', now() - interval '2 hours');
         INSERT INTO public.inventory_levels (region, facility_id, product_id, tenant_id, quantity, last_updated) VALUES
           ('eu-central', 'facility-a', '00000000-0000-0000-0000-00000000000a', 'tenant-a', 1247, now()),
           ('eu-central', 'facility-b', '00000000-0000-0000-0000-00000000000b', 'tenant-b', 583, now() - interval '2 hours');
         SET session_replication_role = origin;",
    )
    .await
}

fn no_redirects() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_token_reads_only_its_tenant_and_sessions_expire_and_end() -> anyhow::Result<()> {
    let regional = Cluster::start("web-us")?;
    let web_port = cluster::free_port()?;
    let mut hub = HubProcess::new(
        "web-hub",
        &format!(
            "region = \"us-east\"\ndatabase = \"{}\"\n\n[reconcile]\ninterval_secs = 2\n\n[web]\nlisten = \"127.0.0.1:{web_port}\"\n",
            regional.conninfo()
        ),
    )?;
    hub.start()?;
    let db = regional.client().await?;
    // The hub's reconcile gives the regional its sync schema.
    wait_until("the regional's sync schema", T, || async {
        Ok(db
            .query_opt("SELECT 1 FROM agog_sync.node_identity", &[])
            .await
            .ok()
            .flatten()
            .map(|_| ()))
    })
    .await
    .map_err(|e| e.context(hub.log()))?;
    replicated_fixture(&db).await?;

    succeeded(hub.cli(&[
        "operator",
        "add",
        "ops-a",
        "--tenant",
        "tenant-a",
        "--no-password",
    ])?)?;
    succeeded(hub.cli_with_input(
        &["operator", "add", "root", "--password-stdin"],
        "a long root password\n",
    )?)?;
    succeeded(hub.cli_with_input(
        &[
            "operator",
            "add",
            "viewer-a",
            "--tenant",
            "tenant-a",
            "--password-stdin",
        ],
        "viewer a password\n",
    )?)?;
    // Too short a password is refused and adds nobody.
    let (code, _, err) =
        hub.cli_with_input(&["operator", "add", "weak", "--password-stdin"], "short\n")?;
    assert_ne!(code, 0);
    assert!(err.contains("at least 12"), "{err}");
    let token_a = succeeded(hub.cli(&["operator", "token", "ops-a", "--expires", "1h"])?)?;
    let token_root = succeeded(hub.cli(&["operator", "token", "root"])?)?;
    assert!(token_a.starts_with("agog_ot_"));
    // Only hashes are stored.
    let stored: i64 = db
        .query_one(
            "SELECT count(*) FROM agog_hub.operator_tokens WHERE token_sha256 IN ($1, $2)",
            &[&token_a, &token_root],
        )
        .await?
        .get(0);
    assert_eq!(stored, 0);

    let base = format!("http://127.0.0.1:{web_port}");
    let http = no_redirects();
    wait_until("the dashboard answers", T, || async {
        Ok(http.get(format!("{base}/login")).send().await.ok())
    })
    .await?;
    let get = |path: String, token: Option<String>| {
        let http = http.clone();
        let url = format!("{base}{path}");
        async move {
            let mut r = http.get(url);
            if let Some(t) = token {
                r = r.bearer_auth(t);
            }
            let resp = r.send().await?;
            let code = resp.status().as_u16();
            let www = resp.headers().get("www-authenticate").is_some();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            anyhow::Ok((code, www, body))
        }
    };
    let inv = |f: &str| format!("/api/v1/facilities/{f}/inventory");

    // Without a token, or with a wrong one: 401 and a Bearer challenge.
    let (code, www, _) = get(inv("facility-a"), None).await?;
    assert_eq!((code, www), (401, true));
    let (code, _, _) = get(inv("facility-a"), Some("agog_ot_not-a-real-token".into())).await?;
    assert_eq!(code, 401);

    // Tenant A's token: its facility, with the design's freshness.
    let (code, _, a) = get(inv("facility-a"), Some(token_a.clone())).await?;
    assert_eq!(code, 200, "{a}");
    assert_eq!(a["tenant_id"], "tenant-a");
    assert_eq!(a["items"][0]["product_name"], "Product of A");
    assert_eq!(a["items"][0]["quantity"], 1247.0);
    let f = &a["items"][0]["data_freshness"];
    assert_eq!(f["is_stale"], false, "{f}");
    assert_eq!(f["facility_online"], true);
    assert!(f["age_seconds"].as_f64().unwrap() < 60.0);
    assert!(f["warning"].is_null());
    // ... never tenant B's: the same answer as for a facility that does not exist.
    let (code, _, b_as_a) = get(inv("facility-b"), Some(token_a.clone())).await?;
    assert_eq!(code, 404, "{b_as_a}");
    let (_, _, missing) = get(inv("facility-zzz"), Some(token_a.clone())).await?;
    assert_eq!(b_as_a, missing);
    assert!(!b_as_a.to_string().contains("tenant-b"));
    let (code, _, list) = get("/api/v1/facilities".into(), Some(token_a.clone())).await?;
    assert_eq!(code, 200);
    let ids: Vec<&str> = list["facilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["facility_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["facility-a"]);

    // An all-tenants operator reads B, offline for two hours: stale, with the warning.
    let (code, _, b) = get(inv("facility-b"), Some(token_root.clone())).await?;
    assert_eq!(code, 200, "{b}");
    let f = &b["data_freshness"];
    assert_eq!(f["is_stale"], true);
    assert_eq!(f["facility_online"], false);
    assert!(f["age_seconds"].as_f64().unwrap() > 7000.0);
    let warning = f["warning"].as_str().unwrap();
    assert!(
        warning.starts_with("facility-b is OFFLINE. Data is cached from 20")
            && warning.ends_with("Z."),
        "{warning}"
    );
    assert_eq!(b["items"][0]["data_freshness"]["is_stale"], true);

    // A revoked token stops working at once.
    let id = db
        .query_one(
            "SELECT t.id FROM agog_hub.operator_tokens t JOIN agog_hub.operators o ON o.id = t.operator_id WHERE o.name = 'ops-a'",
            &[],
        )
        .await?
        .get::<_, i64>(0);
    succeeded(hub.cli(&["operator", "revoke", &id.to_string()])?)?;
    let (code, _, _) = get(inv("facility-a"), Some(token_a.clone())).await?;
    assert_eq!(code, 401);

    // Sessions: a wrong password signs nobody in; a right one sets a strict, HTTP-only cookie.
    let post = |path: &str, form: &[(&str, &str)], origin: Option<&str>| {
        let mut r = http.post(format!("{base}{path}")).form(form);
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r.send()
    };
    let r = post(
        "/login",
        &[("name", "viewer-a"), ("password", "wrong password!")],
        None,
    )
    .await?;
    assert_eq!(r.status().as_u16(), 303);
    assert!(r.headers()["location"]
        .to_str()?
        .starts_with("/login?failed="));
    assert!(r.headers().get("set-cookie").is_none());
    let r = post(
        "/login",
        &[
            ("name", "viewer-a"),
            ("password", "viewer a password"),
            ("next", "/alerts"),
        ],
        Some(&base),
    )
    .await?;
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(r.headers()["location"], "/alerts");
    let cookie = r.headers()["set-cookie"].to_str()?.to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let page = |path: &str| {
        http.get(format!("{base}{path}"))
            .header("cookie", session.clone())
            .send()
    };
    let r = page("/").await?;
    assert_eq!(r.status().as_u16(), 200);
    let html = r.text().await?;
    assert!(
        html.contains("facility-a") && html.contains("viewer-a"),
        "{html}"
    );
    assert!(
        !html.contains("facility-b"),
        "a tenant-a operator sees facility-b:\n{html}"
    );
    let r = page("/facilities/facility-b/inventory").await?;
    assert_eq!(r.status().as_u16(), 404);
    let r = page("/facilities/facility-a/inventory").await?;
    let html = r.text().await?;
    assert!(
        html.contains("Product of A") && html.contains("LIVE"),
        "{html}"
    );

    // A sign-in posted from another site is refused.
    let r = post(
        "/login",
        &[("name", "viewer-a"), ("password", "viewer a password")],
        Some("https://evil.example"),
    )
    .await?;
    assert_eq!(r.status().as_u16(), 403);

    // The session ends at its expiry: pages go to the sign-in, the refresh script gets 401.
    exec(
        &db,
        "UPDATE agog_hub.operator_sessions SET expires_at = now() - interval '1 second'",
    )
    .await?;
    let r = page("/").await?;
    assert_eq!(r.status().as_u16(), 303);
    assert!(r.headers()["location"]
        .to_str()?
        .starts_with("/login?next="));
    assert_eq!(page("/?fragment=1").await?.status().as_u16(), 401);

    // Signing out ends a session for good.
    let r = post(
        "/login",
        &[("name", "root"), ("password", "a long root password")],
        None,
    )
    .await?;
    let session2 = r.headers()["set-cookie"]
        .to_str()?
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let with = |c: String| http.get(format!("{base}/")).header("cookie", c).send();
    assert_eq!(with(session2.clone()).await?.status().as_u16(), 200);
    let r = http
        .post(format!("{base}/logout"))
        .header("cookie", session2.clone())
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 303);
    assert_eq!(with(session2).await?.status().as_u16(), 303);
    hub.stop();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloud_fallback_is_activated_from_the_dashboard_dialog_by_an_operator_with_the_right(
) -> anyhow::Result<()> {
    let regional = Cluster::start("web-fb")?;
    let mail = agog_tests::receivers::smtp::start().await;
    let web_port = cluster::free_port()?;
    let mut hub = HubProcess::new(
        "web-fb-hub",
        &format!(
            r#"region = "us-east"
database = "{db}"
regional_address = "127.0.0.1"

[monitor]
interval_secs = 1
timeout_secs = 1
offline_after_secs = 3
tick_ms = 200

[reconcile]
interval_secs = 2

[web]
listen = "127.0.0.1:{web_port}"

[[alerts.channels]]
name = "ops-email"
kind = "email"
host = "127.0.0.1"
port = {smtp}
tls = "none"
from = "AGOG <alerts@agog.test>"
to = ["ops@agog.test"]
retry = {{ max_attempts = 3, initial_backoff_ms = 50, max_backoff_ms = 200, max_total_ms = 5000, request_timeout_ms = 3000 }}
"#,
            db = regional.conninfo(),
            smtp = mail.addr.port(),
        ),
    )?;
    // LA's box is gone (its /health never answers); NY is another facility of the tenant.
    for f in [LA, "facility-ny-001"] {
        succeeded(hub.cli(&[
            "edges",
            "add",
            "--facility",
            f,
            "--tenant",
            "tenant-foo-inc",
            "--health-url",
            "http://127.0.0.1:9/health",
        ])?)?;
    }
    succeeded(hub.cli_with_input(
        &["operator", "add", "root", "--password-stdin"],
        "a long root password\n",
    )?)?;
    succeeded(hub.cli_with_input(
        &["operator", "add", "viewer", "--password-stdin"],
        "a long viewer password\n",
    )?)?;
    // The one list of the right: the dashboard operator `root` holds it, `viewer` does not.
    succeeded(hub.cli(&["fallback", "grant", "root"])?)?;
    hub.start()?;
    let db = regional.client().await?;
    wait_until("the regional's sync schema", T, || async {
        Ok(db
            .query_opt("SELECT 1 FROM agog_sync.node_identity", &[])
            .await
            .ok()
            .flatten()
            .map(|_| ()))
    })
    .await
    .map_err(|e| e.context(hub.log()))?;
    // LA's last heartbeat, as replication brought it before the fire.
    exec(
        &db,
        &format!(
            "SET session_replication_role = replica;
             INSERT INTO public.edge_heartbeats (facility_id, tenant_id, region, beat_at, agent_version, schema_version)
             VALUES ('{LA}', 'tenant-foo-inc', 'us-east', '2026-11-30 08:15:00+00', '0.1.0', 4);
             SET session_replication_role = origin;"
        ),
    )
    .await?;
    let base = format!("http://127.0.0.1:{web_port}");
    let fallbacks = || async {
        anyhow::Ok(
            db.query_one("SELECT count(*) FROM agog_hub.fallbacks", &[])
                .await?
                .get::<_, i64>(0),
        )
    };

    let b = Browser::start("dashboard-fallback").await?;
    let r = async {
        // An operator without the right sees the facts and why there is no button.
        b.client.goto(&format!("{base}/facilities/{LA}/fallback")).await?;
        b.wait_text("h1", &["Sign in"], T).await?;
        b.sign_in("viewer", "a long viewer password").await?;
        b.wait_text("#no-right", &["hub fallback grant viewer"], T)
            .await?;
        assert!(b.text("form.dialog").await?.is_none());
        b.screenshot("fallback-01-no-right").await?;
        b.client
            .find(Locator::Css(".who button"))
            .await?
            .click()
            .await?;
        b.wait_text("h1", &["Sign in"], T).await?;

        // The operator with the right: from the edge page to the dialog, as in the design.
        b.client.goto(&format!("{base}/facilities/{LA}")).await?;
        b.sign_in("root", "a long root password").await?;
        b.wait_text(".facts", &["OFFLINE"], T).await?;
        b.client
            .find(Locator::Id("fallback-link"))
            .await?
            .click()
            .await?;
        b.wait_text("h1", &["Disaster recovery activation"], T)
            .await?;
        b.wait_text("#last-data", &["2026-11-30 08:15:00 UTC"], T)
            .await?;
        b.screenshot("fallback-02-dialog").await?;

        // A blank reason comes back next to its field, with what was typed kept; nothing is made.
        b.fill("reason", "   ").await?;
        b.fill("expected_duration", "3-6 months rebuild").await?;
        b.fill("notify", "worker@la.test, not-an-address").await?;
        b.client
            .find(Locator::Css("form.dialog button[type='submit']"))
            .await?
            .click()
            .await?;
        b.wait_text("#reason-error", &["Say why"], T).await?;
        b.wait_text("#notify-error", &["not-an-address"], T).await?;
        let kept = b
            .client
            .find(Locator::Id("expected_duration"))
            .await?
            .prop("value")
            .await?;
        assert_eq!(kept.as_deref(), Some("3-6 months rebuild"));
        assert_eq!(fallbacks().await?, 0, "a refused form makes nothing");
        b.screenshot("fallback-03-refused").await?;

        b.fill("reason", "Fire - building destroyed").await?;
        b.fill("notify", "worker@la.test").await?;
        b.client
            .find(Locator::Css("form.dialog button[type='submit']"))
            .await?
            .click()
            .await?;
        b.wait_text("#fallback-state", &["Cloud fallback active"], T)
            .await?;
        let role = b.text("#workspace-role").await?.unwrap_or_default();
        let password = b.text("#workspace-password").await?.unwrap_or_default();
        let address = b.text("#workspace-address").await?.unwrap_or_default();
        assert!(address.contains(&role), "{address} / {role}");
        b.screenshot("fallback-04-activated").await?;

        // Recorded under the dashboard operator's name, as the CLI and API would.
        let row = db
            .query_one(
                "SELECT activated_by, reason, expected_duration, notify, phase FROM agog_hub.fallbacks WHERE facility_id = $1",
                &[&LA],
            )
            .await?;
        assert_eq!(row.get::<_, String>(0), "root");
        assert_eq!(row.get::<_, String>(1), "Fire - building destroyed");
        assert_eq!(row.get::<_, String>(2), "3-6 months rebuild");
        assert_eq!(row.get::<_, Vec<String>>(3), ["worker@la.test"]);
        assert_eq!(row.get::<_, String>(4), "active");

        // The password on the page opens the workspace, which shows LA's rows only.
        let ws_c = sync_core::connect(&format!(
            "host=127.0.0.1 port={} dbname=agog user={role} password={password}",
            regional.port
        ))
        .await?;
        ws_c.execute(
            "INSERT INTO public.orders (facility_id, tenant_id, order_number, total) VALUES ($1, 'tenant-foo-inc', 'LA-CLOUD-1', 10)",
            &[&LA],
        )
        .await?;
        let refused = ws_c
            .execute(
                "INSERT INTO public.orders (facility_id, tenant_id, order_number, total) VALUES ('facility-ny-001', 'tenant-foo-inc', 'NY-X', 1)",
                &[],
            )
            .await;
        assert!(refused.is_err(), "the workspace wrote another facility's order");

        // The workers' email says where to go and how current the data is.
        let notice = wait_until("the workers' email", T, || async {
            Ok(mail.accepted().into_iter().find(|m| {
                m.envelope_to.iter().any(|t| t == "worker@la.test")
                    && m.subject.contains("cloud fallback")
            }))
        })
        .await?;
        let text = notice.text.unwrap_or_default();
        assert!(text.contains(&address), "{text}");
        assert!(text.contains("2026-11-30 08:15:00 UTC"), "{text}");

        // The fleet and the edge page say so; the dialog now shows the state and every step.
        b.client.goto(&base).await?;
        b.wait_text(
            &format!("tr[data-facility='{LA}']"),
            &["CLOUD FALLBACK", "alerts silenced"],
            T,
        )
        .await?;
        b.wait_text(".summary", &["1 in cloud fallback"], T).await?;
        let ny = b
            .text("tr[data-facility='facility-ny-001']")
            .await?
            .unwrap_or_default();
        assert!(!ny.contains("CLOUD FALLBACK"), "{ny}");
        b.screenshot("fallback-05-fleet").await?;
        b.client.goto(&format!("{base}/facilities/{LA}")).await?;
        b.wait_text(".facts", &["CLOUD FALLBACK", "silenced"], T)
            .await?;
        assert!(b.text("#fallback-link").await?.is_none());
        b.client.goto(&format!("{base}/facilities/{LA}/fallback")).await?;
        b.wait_text("#fallback-state", &["Activated by root", "Fire"], T)
            .await?;
        b.wait_text("table.log", &["root", "activation requested"], T)
            .await?;
        assert!(b.text("form.dialog").await?.is_none(), "no second activation");

        // A second activation (a stale tab posting again) is refused with the reason.
        let http = no_redirects();
        let cookie = b
            .client
            .get_named_cookie("agog_session")
            .await?
            .value()
            .to_string();
        let resp = http
            .post(format!("{base}/facilities/{LA}/fallback"))
            .header("cookie", format!("agog_session={cookie}"))
            .form(&[("reason", "again"), ("expected_duration", "1 day"), ("notify", "")])
            .send()
            .await?;
        assert_eq!(resp.status().as_u16(), 409);
        let body = resp.text().await?;
        assert!(body.contains("already in cloud fallback"), "{body}");
        assert_eq!(fallbacks().await?, 1);
        anyhow::Ok(())
    }
    .await;
    if r.is_err() {
        eprintln!("hub log:\n{}", hub.log());
    }
    b.close().await?;
    r
}
