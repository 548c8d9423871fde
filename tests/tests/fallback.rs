//! Cloud fallback end to end, on real clusters with the real hub and agent processes: a
//! facility's edge writes orders and stock, the edge is destroyed (process and data directory
//! gone), an operator activates the fallback, its people work in the workspace (and see only
//! their facility), a rebuilt edge enrolls with a restore token and takes every row back, the
//! facility is handed back to it, and writes flow up from it again. Checksums of the facility's
//! rows are equal on the rebuilt edge and the regional, and equal to what was written.
//!
//! The second test does the restore in the separate layout (master data on its own cluster)
//! through the CLI, with the rebuilt edge stopped halfway and the hub killed, and the refusals.

use std::collections::BTreeMap;
use std::time::Duration;

use agog_tests::edge_box::{EdgeBox, EnrollingBoxConfig};
use agog_tests::fleet::{checksum, count, exec, wait_count};
use agog_tests::hub_process::HubProcess;
use agog_tests::pki::{pinned_client, pki, Pki};
use agog_tests::receivers::smtp;
use agog_tests::{cluster, wait_until, Cluster};
use tokio_postgres::Client;

const LA: &str = "facility-la-001";
const NY: &str = "facility-ny-001";
const A: &str = "tenant-foo-inc";
const T: Duration = Duration::from_secs(90);
/// A whole restore on a loaded two-core machine: copy, read-only, handover, cleanup.
const RESTORE: Duration = Duration::from_secs(300);

/// The facility's tables and their keys, as the restore carries them.
const TABLES: &[(&str, &str)] = &[
    ("orders", "id"),
    ("inventory_transactions", "id"),
    ("production_logs", "id"),
    ("quality_inspections", "id"),
    ("inventory_levels", "region, product_id"),
];

fn hub_config(
    regional: &Cluster,
    master: Option<&Cluster>,
    api_port: u16,
    p: &Pki,
    smtp_port: Option<u16>,
) -> String {
    let master = master
        .map(|m| {
            format!(
                "[master]\nnode = \"us-east-master\"\nadmin = \"{}\"\n",
                m.conninfo()
            )
        })
        .unwrap_or_default();
    let email = smtp_port
        .map(|port| {
            format!(
                r#"[[alerts.channels]]
name = "ops-email"
kind = "email"
host = "127.0.0.1"
port = {port}
tls = "none"
from = "AGOG <alerts@agog.test>"
to = ["ops@agog.test"]
retry = {{ max_attempts = 3, initial_backoff_ms = 50, max_backoff_ms = 200, max_total_ms = 5000, request_timeout_ms = 3000 }}
"#
            )
        })
        .unwrap_or_default();
    format!(
        r#"region = "us-east"
database = "{db}"
regional_address = "127.0.0.1"

[monitor]
interval_secs = 1
timeout_secs = 2
offline_after_secs = 30
escalate_after_secs = 3600
tick_ms = 200

[reconcile]
interval_secs = 2

[api]
listen = "127.0.0.1:{api_port}"
tls_cert = "{cert}"
tls_key = "{key}"

[fallback]
copy_wait_secs = 120

{email}
{master}"#,
        db = regional.conninfo(),
        cert = p.hub_cert.display(),
        key = p.hub_key.display(),
    )
}

fn cli_ok(hub: &HubProcess, args: &[&str]) -> anyhow::Result<String> {
    let (code, out, err) = hub.cli(args)?;
    anyhow::ensure!(code == 0, "hub {}: exit {code}\n{err}", args.join(" "));
    Ok(out)
}

fn create_token(hub: &HubProcess, facility: &str) -> anyhow::Result<String> {
    let out = cli_ok(
        hub,
        &[
            "token",
            "create",
            "--facility",
            facility,
            "--tenant",
            A,
            "--name",
            &format!("{facility} plant"),
        ],
    )?;
    Ok(out.trim().to_string())
}

fn new_box(
    node: &str,
    facility: &str,
    token: &str,
    api_port: u16,
    p: &Pki,
) -> anyhow::Result<EdgeBox> {
    EdgeBox::new_enrolling(&EnrollingBoxConfig {
        node,
        facility,
        tenant: A,
        region: "us-east",
        hub_url: format!("https://127.0.0.1:{api_port}"),
        token: token.to_string(),
        ca_cert: p.ca_cert.clone(),
        reconcile_secs: 2,
    })
}

/// The fallback of a facility as `hub fallback status <facility> --json` shows it.
fn status(hub: &HubProcess, facility: &str) -> anyhow::Result<serde_json::Value> {
    let out = cli_ok(hub, &["fallback", "status", facility, "--json"])?;
    Ok(serde_json::from_str(&out)?)
}

async fn wait_phase(
    hub: &HubProcess,
    facility: &str,
    phase: &str,
    timeout: Duration,
) -> anyhow::Result<serde_json::Value> {
    let last = std::cell::RefCell::new(serde_json::Value::Null);
    wait_until(&format!("{facility} in phase {phase}"), timeout, || async {
        let s = status(hub, facility)?;
        *last.borrow_mut() = s.clone();
        Ok((s["fallback"]["phase"] == phase).then_some(s))
    })
    .await
    .map_err(|e| {
        e.context(format!(
            "last status: {:#}\n--- hub log (tail) ---\n{}",
            last.borrow(),
            tail(&hub.log(), 60)
        ))
    })
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What the test wrote for one facility, the truth both nodes must hold in the end.
#[derive(Default, Debug, PartialEq, Eq, Clone)]
struct Written {
    /// order_number -> status
    orders: BTreeMap<String, String>,
    /// note -> quantity (inventory_transactions have no natural key: the test puts one in `kind`+quantity)
    picks: BTreeMap<String, String>,
    /// product sku -> quantity
    stock: BTreeMap<String, String>,
}

/// What a node holds of a facility, in the same terms.
async fn holds(c: &Client, facility: &str) -> anyhow::Result<Written> {
    let mut w = Written::default();
    for r in c
        .query(
            "SELECT order_number, status FROM orders WHERE facility_id = $1",
            &[&facility],
        )
        .await?
    {
        w.orders.insert(r.get(0), r.get(1));
    }
    for r in c
        .query(
            "SELECT id::text, quantity::text FROM inventory_transactions WHERE facility_id = $1",
            &[&facility],
        )
        .await?
    {
        w.picks.insert(r.get(0), r.get(1));
    }
    for r in c
        .query(
            "SELECT p.sku, l.quantity::text FROM inventory_levels l JOIN products p ON p.id = l.product_id
              WHERE l.facility_id = $1",
            &[&facility],
        )
        .await?
    {
        w.stock.insert(r.get(0), r.get(1));
    }
    Ok(w)
}

/// Checksums of every restore table of a facility.
async fn sums(c: &Client, facility: &str) -> anyhow::Result<Vec<(i64, String)>> {
    let mut v = Vec::new();
    for (t, key) in TABLES {
        v.push(checksum(c, t, &format!("facility_id = '{facility}'"), key).await?);
    }
    Ok(v)
}

/// Insert an order; returns nothing (the model is updated by the caller).
async fn order(c: &Client, facility: &str, number: &str, total: &str) -> anyhow::Result<()> {
    c.execute(
        "INSERT INTO orders (facility_id, tenant_id, order_number, total) VALUES ($1, $2, $3, $4::text::numeric)",
        &[&facility, &A, &number, &total],
    )
    .await
    .map_err(|e| anyhow::anyhow!("insert order {number}: {}", sync_core::apply::describe(&e)))?;
    Ok(())
}

/// A pick or receipt of product `sku`; returns its id.
async fn movement(c: &Client, facility: &str, sku: &str, qty: &str) -> anyhow::Result<String> {
    let r = c
        .query_one(
            "INSERT INTO inventory_transactions (facility_id, tenant_id, product_id, kind, quantity)
             SELECT $1, $2, id, CASE WHEN $4::text::numeric < 0 THEN 'pick' ELSE 'receipt' END, $4::text::numeric
               FROM products WHERE tenant_id = $2 AND sku = $3 RETURNING id::text",
            &[&facility, &A, &sku, &qty],
        )
        .await
        .map_err(|e| anyhow::anyhow!("insert movement: {}", sync_core::apply::describe(&e)))?;
    Ok(r.get(0))
}

async fn stock(c: &Client, facility: &str, sku: &str, qty: &str) -> anyhow::Result<()> {
    c.execute(
        "INSERT INTO inventory_levels (region, facility_id, tenant_id, product_id, quantity)
         SELECT 'us-east', $1, $2, id, $4::text::numeric FROM products WHERE tenant_id = $2 AND sku = $3
         ON CONFLICT (region, facility_id, product_id) DO UPDATE SET quantity = EXCLUDED.quantity, last_updated = now()",
        &[&facility, &A, &sku, &qty],
    )
    .await
    .map_err(|e| anyhow::anyhow!("set stock: {}", sync_core::apply::describe(&e)))?;
    Ok(())
}

/// The facility's working day on its edge: orders (some updated, one deleted), picks and
/// receipts, stock levels.
async fn a_day_of_work(
    c: &Client,
    facility: &str,
    prefix: &str,
    w: &mut Written,
) -> anyhow::Result<()> {
    for i in 1..=12 {
        let n = format!("{prefix}-{i}");
        order(c, facility, &n, &format!("{i}.50")).await?;
        w.orders.insert(n, "open".into());
    }
    exec(c, &format!("UPDATE orders SET status = 'shipped', updated_at = now() WHERE facility_id = '{facility}' AND order_number IN ('{prefix}-2', '{prefix}-5')")).await?;
    w.orders.insert(format!("{prefix}-2"), "shipped".into());
    w.orders.insert(format!("{prefix}-5"), "shipped".into());
    exec(
        c,
        &format!(
            "DELETE FROM orders WHERE facility_id = '{facility}' AND order_number = '{prefix}-7'"
        ),
    )
    .await?;
    w.orders.remove(&format!("{prefix}-7"));
    for (sku, q) in [("P1", "40.000"), ("P2", "15.000"), ("P1", "-3.000")] {
        let id = movement(c, facility, sku, q).await?;
        w.picks.insert(id, q.into());
    }
    stock(c, facility, "P1", "37.000").await?;
    stock(c, facility, "P2", "15.000").await?;
    w.stock.insert("P1".into(), "37.000".into());
    w.stock.insert("P2".into(), "15.000".into());
    Ok(())
}

async fn wait_holds(c: &Client, facility: &str, want: &Written, what: &str) -> anyhow::Result<()> {
    let last = std::cell::RefCell::new(Written::default());
    wait_until(what, T, || async {
        let h = holds(c, facility).await?;
        *last.borrow_mut() = h.clone();
        Ok((&h == want).then_some(()))
    })
    .await
    .map_err(|e| e.context(format!("holds {:?}\nwant {want:?}", last.borrow())))
}

/// POST an enrollment request by hand: (HTTP status, JSON body).
async fn enroll_by_hand(
    client: &reqwest::Client,
    port: u16,
    token: &str,
    facility: &str,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let body = serde_json::json!({
        "token": token,
        "facility_id": facility,
        "wireguard_public_key": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "replication_password": "a-password-chosen-by-the-edge",
        "health_url": "http://127.0.0.1:9/health",
        "replication_host": "127.0.0.1",
        "replication_port": 9,
        "agent_version": "0.0.0-test",
    });
    let resp = client
        .post(format!("https://127.0.0.1:{port}/api/v1/enroll"))
        .json(&body)
        .send()
        .await?;
    let code = resp.status().as_u16();
    Ok((code, resp.json().await?))
}

/// The workspace role's own connection (the test clusters trust local TCP; the password is
/// checked by the hub's `pg_authid`, not here).
async fn workspace_client(us: &Cluster, role: &str, password: &str) -> anyhow::Result<Client> {
    Ok(sync_core::connect(&format!(
        "host=127.0.0.1 port={} dbname=agog user={role} password={password}",
        us.port
    ))
    .await?)
}

async fn refused(c: &Client, sql: &str) -> String {
    match c.batch_execute(sql).await {
        Ok(()) => format!("NOT REFUSED: {sql}"),
        Err(e) => sync_core::apply::describe(&e),
    }
}

/// The regional's subscription to the edge was made without copying the edge's rows up: a
/// table synchronised by a copy records its sync position (`srsublsn`), one made with
/// `copy_data = false` none.
async fn subscribed_without_copy(us: &Client, subscription: &str) -> anyhow::Result<bool> {
    let r = us
        .query_one(
            "SELECT count(*), count(sr.srsublsn) FROM pg_subscription_rel sr
               JOIN pg_subscription s ON s.oid = sr.srsubid WHERE s.subname = $1",
            &[&subscription],
        )
        .await?;
    Ok(r.get::<_, i64>(0) > 0 && r.get::<_, i64>(1) == 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_destroyed_facility_works_in_the_cloud_and_a_rebuilt_edge_takes_everything_back(
) -> anyhow::Result<()> {
    // The shared layout: the regional publishes master data too, so the rebuilt edge gets two
    // subscriptions from it (master data, and the transient restore).
    let us = Cluster::start("fb-us")?;
    let mail = smtp::start().await;
    let dir = cluster::scratch_dir("fb-pki")?;
    let p = pki(&dir)?;
    let api_port = cluster::free_port()?;
    let mut hub = HubProcess::new(
        "fb-hub",
        &hub_config(&us, None, api_port, &p, Some(mail.addr.port())),
    )?;
    let key = cli_ok(&hub, &["fallback", "grant", "alice@agog.test"])?
        .trim()
        .to_string();
    assert!(key.starts_with("agog_op_"), "{key}");
    let la_token = create_token(&hub, LA)?;
    let ny_token = create_token(&hub, NY)?;
    // A facility that is simply down (not in fallback): its alerts must still go out.
    cli_ok(
        &hub,
        &[
            "edges",
            "add",
            "--facility",
            "facility-gone-001",
            "--tenant",
            A,
            "--health-url",
            "http://127.0.0.1:9/health",
        ],
    )?;
    hub.start()?;
    let mut la = new_box("la", LA, &la_token, api_port, &p)?;
    let mut ny = new_box("ny", NY, &ny_token, api_port, &p)?;
    la.start()?;
    ny.start()?;
    for b in [&la, &ny] {
        b.wait_status("healthy", Duration::from_secs(150))
            .await
            .map_err(|e| e.context(format!("hub log:\n{}", tail(&hub.log(), 40))))?;
    }
    let us_c = us.client().await?;
    exec(&us_c, &format!("INSERT INTO products (tenant_id, sku, name) VALUES ('{A}', 'P1', 'Pallet'), ('{A}', 'P2', 'Crate'), ('tenant-bar-inc', 'X1', 'Not ours')")).await?;
    let (la_c, ny_c) = (la.client().await?, ny.client().await?);
    for c in [&la_c, &ny_c] {
        wait_count(c, "SELECT 1 FROM products", 2, T).await?;
    }

    // A working day at both facilities.
    let mut la_rows = Written::default();
    let mut ny_rows = Written::default();
    a_day_of_work(&la_c, LA, "LA", &mut la_rows).await?;
    a_day_of_work(&ny_c, NY, "NY", &mut ny_rows).await?;
    wait_holds(&us_c, LA, &la_rows, "LA's day in the regional").await?;
    wait_holds(&us_c, NY, &ny_rows, "NY's day in the regional").await?;
    let ny_sums = sums(&us_c, NY).await?;
    // The heartbeat table may still be in its initial copy when the orders already stream.
    let la_beat: chrono::DateTime<chrono::Utc> =
        wait_until("LA's heartbeat in the regional", T, || async {
            Ok(us_c
                .query_opt(
                    "SELECT beat_at FROM edge_heartbeats WHERE facility_id = $1",
                    &[&LA],
                )
                .await?
                .map(|r| r.get(0)))
        })
        .await?;

    // LA burns: the agent and its PostgreSQL die, the disk is gone.
    la.kill();
    let la_dir = la.dir.clone();
    drop(la_c);
    drop(la);
    assert!(!la_dir.exists());

    // The dashboard's confirmation dialog: what it shows, then the activation.
    let api = pinned_client(&p.ca_pem)?;
    let url = |path: &str| format!("https://127.0.0.1:{api_port}/api/v1/fallback{path}");
    let resp = api.get(url(&format!("/{LA}"))).send().await?;
    assert_eq!(resp.status().as_u16(), 401, "no key, no answer");
    let preview: serde_json::Value = api
        .get(url(&format!("/{LA}")))
        .bearer_auth(&key)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(preview["preview"]["facility_id"], LA, "{preview}");
    assert_eq!(preview["preview"]["mode"], "normal", "{preview}");
    let last_data: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(preview["preview"]["last_data_at"].clone())?;
    assert!(last_data >= la_beat, "{last_data} < {la_beat}");
    let resp = api
        .post(url(&format!("/{LA}/activate")))
        .bearer_auth(&key)
        .json(&serde_json::json!({
            "reason": "Fire - building destroyed",
            "expected_duration": "3-6 months rebuild",
            "notify": ["worker1@la.test", "Worker Two <worker2@la.test>"],
        }))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 200);
    let activated: serde_json::Value = resp.json().await?;
    assert_eq!(activated["complete"], true, "{activated}");
    assert_eq!(activated["fallback"]["phase"], "active", "{activated}");
    assert_eq!(activated["fallback"]["mode"], "cloud_fallback");
    assert_eq!(activated["fallback"]["activated_by"], "alice@agog.test");
    let role = activated["workspace_role"].as_str().unwrap().to_string();
    let password = activated["workspace_password"]
        .as_str()
        .unwrap()
        .to_string();
    let address = activated["workspace_address"].as_str().unwrap().to_string();
    assert_eq!(role, "agog_ws_facility_la_001");
    assert_eq!(
        address,
        format!("postgresql://{role}@127.0.0.1:{}/agog", us.port)
    );
    let activated_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(activated["fallback"]["activated_at"].clone())?;
    // Twice: refused, with what to do instead.
    let resp = api
        .post(url(&format!("/{LA}/activate")))
        .bearer_auth(&key)
        .json(&serde_json::json!({"reason": "again", "expected_duration": "?"}))
        .send()
        .await?;
    assert_eq!(resp.status().as_u16(), 409);
    let body: serde_json::Value = resp.json().await?;
    assert_eq!(body["error"], "already_in_fallback", "{body}");
    let msg = body["message"].as_str().unwrap();
    assert!(
        msg.contains("already in cloud fallback")
            && msg.contains("alice@agog.test")
            && msg.contains("hub fallback restore-token"),
        "{msg}"
    );

    // The regional stopped waiting for the dead edge, owns LA's rows, shows the mode.
    assert_eq!(
        count(
            &us_c,
            "SELECT 1 FROM pg_subscription WHERE subname = 'us_east_from_la'"
        )
        .await?,
        0
    );
    assert_eq!(
        count(
            &us_c,
            &format!("SELECT 1 FROM agog_sync.ownership_overrides WHERE facility_id = '{LA}'")
        )
        .await?,
        1
    );
    assert_eq!(count(&us_c, &format!("SELECT 1 FROM facility_status WHERE facility_id = '{LA}' AND mode = 'cloud_fallback'")).await?, 1);
    assert_eq!(
        count(
            &us_c,
            "SELECT 1 FROM pg_roles WHERE rolname = 'agog_edge_facility_la_001'"
        )
        .await?,
        0,
        "the dead box's credentials are revoked"
    );

    // The workers are told where to go, and how current the data is.
    let notice = wait_until("the workers' email", T, || async {
        Ok(mail.accepted().into_iter().find(|m| {
            m.envelope_to.iter().any(|t| t == "worker1@la.test")
                && m.subject.contains("cloud fallback")
        }))
    })
    .await?;
    assert!(
        notice.envelope_to.iter().any(|t| t == "worker2@la.test"),
        "{:?}",
        notice.envelope_to
    );
    let text = notice.text.clone().unwrap_or_default();
    let current = activated["fallback"]["last_data_at"].clone();
    let current: chrono::DateTime<chrono::Utc> = serde_json::from_value(current)?;
    assert!(text.contains(&address), "{text}");
    assert!(
        text.contains(&format!(
            "All data is current as of {}",
            current.format("%Y-%m-%d %H:%M:%S UTC")
        )),
        "{text}"
    );
    assert!(
        text.contains("Fire - building destroyed") && text.contains("3-6 months rebuild"),
        "{text}"
    );

    // The workspace: LA's people read and write LA's rows, and only those.
    let ws = workspace_client(&us, &role, &password).await?;
    assert_eq!(
        holds(&ws, LA).await?,
        la_rows,
        "the workspace sees every LA row"
    );
    assert_eq!(
        count(&ws, "SELECT 1 FROM orders").await?,
        la_rows.orders.len() as i64
    );
    assert_eq!(
        count(
            &ws,
            &format!("SELECT 1 FROM orders WHERE facility_id = '{NY}'")
        )
        .await?,
        0
    );
    assert_eq!(count(&ws, "SELECT 1 FROM inventory_levels").await?, 2);
    assert_eq!(
        count(&ws, "SELECT 1 FROM products").await?,
        2,
        "its tenant's master data only"
    );
    for i in 1..=4 {
        let n = format!("WS-{i}");
        order(&ws, LA, &n, "99.00").await?;
        la_rows.orders.insert(n, "open".into());
    }
    exec(&ws, &format!("UPDATE orders SET status = 'cancelled' WHERE order_number = 'LA-3' AND facility_id = '{LA}'")).await?;
    la_rows.orders.insert("LA-3".into(), "cancelled".into());
    exec(
        &ws,
        &format!("DELETE FROM orders WHERE order_number = 'LA-4' AND facility_id = '{LA}'"),
    )
    .await?;
    la_rows.orders.remove("LA-4");
    let id = movement(&ws, LA, "P2", "-5.000").await?;
    la_rows.picks.insert(id, "-5.000".into());
    stock(&ws, LA, "P2", "10.000").await?;
    la_rows.stock.insert("P2".into(), "10.000".into());
    let e = refused(&ws, &format!("INSERT INTO orders (facility_id, tenant_id, order_number) VALUES ('{NY}', '{A}', 'SNEAK')")).await;
    // Refused twice over: the ownership guard (the override is LA's only) and the policy.
    assert!(
        e.contains("does not own rows of facility facility-ny-001")
            || e.contains("row-level security"),
        "{e}"
    );
    assert_eq!(
        ws.execute(
            &format!("UPDATE orders SET status = 'x' WHERE facility_id = '{NY}'"),
            &[]
        )
        .await?,
        0
    );
    assert_eq!(
        ws.execute(
            &format!("DELETE FROM orders WHERE facility_id = '{NY}'"),
            &[]
        )
        .await?,
        0
    );
    let e = refused(&ws, "SELECT * FROM agog_hub.edges").await;
    assert!(e.contains("permission denied"), "{e}");
    let e = refused(&ws, "SELECT * FROM edge_heartbeats").await;
    assert!(e.contains("permission denied"), "{e}");
    assert_eq!(
        holds(&us_c, LA).await?,
        la_rows,
        "the workspace writes where the regional keeps LA's rows"
    );

    // NY is untouched and keeps replicating.
    assert_eq!(sums(&us_c, NY).await?, ny_sums);
    assert_eq!(holds(&ny_c, NY).await?, ny_rows);
    order(&ny_c, NY, "NY-13", "1.00").await?;
    ny_rows.orders.insert("NY-13".into(), "open".into());
    wait_holds(&us_c, NY, &ny_rows, "NY's new order in the regional").await?;

    // Silenced, not hidden: LA's outage shows in its state, without an alert; the facility that
    // is merely down alerts as ever.
    wait_until("LA shows offline and the other down facility alerted", T, || async {
        let la_offline = count(&us_c, &format!("SELECT 1 FROM agog_hub.edges WHERE facility_id = '{LA}' AND state IN ('offline', 'escalated')")).await? == 1;
        let gone_alerted = count(&us_c, "SELECT 1 FROM agog_hub.alerts WHERE facility_id = 'facility-gone-001' AND event = 'offline'").await? == 1;
        Ok((la_offline && gone_alerted).then_some(()))
    })
    .await?;
    let opened: chrono::DateTime<chrono::Utc> = us_c
        .query_one(
            "SELECT max(opened_at) FROM agog_hub.incidents WHERE facility_id = $1",
            &[&LA],
        )
        .await?
        .get(0);
    assert!(
        opened > activated_at,
        "LA went offline during the fallback ({opened} > {activated_at})"
    );
    assert_eq!(
        us_c.query_one(
            "SELECT count(*) FROM agog_hub.alerts WHERE facility_id = $1 AND created_at >= $2",
            &[&LA, &activated_at]
        )
        .await?
        .get::<_, i64>(0),
        0,
        "no alert for a facility in fallback"
    );
    let s = status(&hub, LA)?;
    assert_eq!(s["fallback"]["alerts_silenced"], true);

    // Restoring: refused for a facility that is not in fallback, and a restore token used by a
    // box of another facility, and a bootstrap token for the facility in fallback.
    let (code, _, err) = hub.cli(&[
        "fallback",
        "restore-token",
        NY,
        "--operator",
        "alice@agog.test",
    ])?;
    assert_eq!(code, 1);
    assert!(
        err.contains("facility-ny-001 is not in cloud fallback")
            && err.contains("hub token create"),
        "{err}"
    );
    let restore_token = cli_ok(
        &hub,
        &[
            "fallback",
            "restore-token",
            LA,
            "--operator",
            "alice@agog.test",
        ],
    )?
    .trim()
    .to_string();
    assert!(restore_token.starts_with("agog_bt_"));
    let (code, body) = enroll_by_hand(&api, api_port, &restore_token, NY).await?;
    assert_eq!(
        (code, body["error"].as_str()),
        (403, Some("facility_mismatch")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("restores facility-la-001, not facility-ny-001"),
        "{body}"
    );
    let plain = create_token(&hub, LA)?;
    let (code, body) = enroll_by_hand(&api, api_port, &plain, LA).await?;
    assert_eq!(
        (code, body["error"].as_str()),
        (409, Some("facility_in_fallback")),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("hub fallback restore-token"),
        "{body}"
    );

    // Months later: a new box, flashed, enrolls with the restore token in its first boot.
    let mut la2 = new_box("la", LA, &restore_token, api_port, &p)?;
    la2.start()?;
    let done = wait_phase(&hub, LA, "restored", RESTORE)
        .await
        .map_err(|e| {
            e.context(format!(
                "--- new LA agent (tail) ---\n{}",
                tail(&la2.log(), 60)
            ))
        })?;
    let steps: Vec<(String, String)> = done["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["step"].as_str().unwrap().to_string(),
                e["actor"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let order_of = |step: &str| {
        steps
            .iter()
            .position(|(s, _)| s == step)
            .unwrap_or_else(|| panic!("no step {step:?} in {steps:?}"))
    };
    let sequence = [
        "activation requested",
        "regional subscription removed",
        "ownership moved to the regional",
        "workspace opened",
        "active",
        "restore token issued",
        "restoring",
        "read_only",
        "workspace read-only",
        "handing_over",
        "regional subscribes to the rebuilt edge",
        "ownership handed back to the edge",
        "closing",
        "workspace closed",
        "restored",
    ];
    for w in sequence.windows(2) {
        assert!(
            order_of(w[0]) < order_of(w[1]),
            "{} before {}: {steps:?}",
            w[0],
            w[1]
        );
    }
    assert_eq!(steps[order_of("activation requested")].1, "alice@agog.test");
    assert!(
        steps[order_of("restoring")].1.starts_with("node la from"),
        "{steps:?}"
    );
    assert!(
        steps[order_of("restored")].1.starts_with("hub fb-hub"),
        "{steps:?}"
    );
    assert_eq!(
        steps
            .iter()
            .filter(|(s, _)| s == "workers notified")
            .count(),
        2,
        "{steps:?}"
    );

    // Every row of LA, the workspace's included, on the new edge, once; and the same in the regional.
    let la2_c = la2.client().await?;
    assert_eq!(holds(&la2_c, LA).await?, la_rows);
    assert_eq!(holds(&us_c, LA).await?, la_rows);
    assert_eq!(sums(&la2_c, LA).await?, sums(&us_c, LA).await?);
    // The regional subscribes to the new edge without having copied anything up.
    assert!(subscribed_without_copy(&us_c, "us_east_from_la").await?);
    // Ownership is the edge's again, and only the edge's.
    assert_eq!(
        count(&us_c, "SELECT 1 FROM agog_sync.ownership_overrides").await?,
        0
    );
    assert_eq!(
        count(&la2_c, "SELECT 1 FROM agog_sync.ownership_overrides").await?,
        0
    );
    let e = refused(&us_c, &format!("INSERT INTO orders (facility_id, tenant_id, order_number) VALUES ('{LA}', '{A}', 'LATE')")).await;
    assert!(
        e.contains("does not own rows of facility facility-la-001"),
        "{e}"
    );
    assert_eq!(
        count(
            &us_c,
            &format!("SELECT 1 FROM pg_roles WHERE rolname = '{role}'")
        )
        .await?,
        0,
        "the workspace is gone"
    );
    assert_eq!(
        count(
            &us_c,
            &format!(
                "SELECT 1 FROM facility_status WHERE facility_id = '{LA}' AND mode = 'normal'"
            )
        )
        .await?,
        1
    );
    let back = wait_until("the workers' second email", T, || async {
        Ok(mail.accepted().into_iter().find(|m| {
            m.envelope_to.iter().any(|t| t == "worker1@la.test") && m.subject.contains("restored")
        }))
    })
    .await?;
    assert!(back
        .text
        .unwrap_or_default()
        .contains("All cloud workspace data has been synced to the new edge"));

    // Writes on the new edge flow up.
    order(&la2_c, LA, "LA-NEW-1", "12.00").await?;
    la_rows.orders.insert("LA-NEW-1".into(), "open".into());
    exec(&la2_c, &format!("UPDATE orders SET status = 'shipped' WHERE facility_id = '{LA}' AND order_number = 'WS-1'")).await?;
    la_rows.orders.insert("WS-1".into(), "shipped".into());
    wait_holds(&us_c, LA, &la_rows, "the new edge's writes in the regional").await?;
    assert_eq!(sums(&la2_c, LA).await?, sums(&us_c, LA).await?);
    assert_eq!(holds(&la2_c, LA).await?, la_rows);

    // The restore stream is gone on both sides; the new edge is healthy.
    wait_count(
        &la2_c,
        "SELECT 1 FROM pg_subscription WHERE subname = 'la_from_us_east_tmp'",
        0,
        T,
    )
    .await?;
    wait_count(
        &us_c,
        "SELECT 1 FROM pg_publication WHERE pubname = 'pub_restore_facility_la_001'",
        0,
        T,
    )
    .await?;
    wait_count(
        &us_c,
        "SELECT 1 FROM pg_replication_slots WHERE slot_name = 'la_from_us_east_tmp_slot'",
        0,
        T,
    )
    .await?;
    la2.wait_status("healthy", T).await?;
    // NY never noticed.
    assert_eq!(holds(&us_c, NY).await?, ny_rows);
    assert_eq!(sums(&us_c, NY).await?, sums(&ny_c, NY).await?);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_restore_in_the_separate_layout_finishes_and_refusals_are_clear(
) -> anyhow::Result<()> {
    // Master data on a cluster of its own: the rebuilt edge gets a role on the regional for its
    // restore, next to its master-data role.
    let us = Cluster::start("fbi-us")?;
    let usm = Cluster::start("fbi-usm")?;
    let dir = cluster::scratch_dir("fbi-pki")?;
    let p = pki(&dir)?;
    let api_port = cluster::free_port()?;
    let mut hub = HubProcess::new("fbi-hub", &hub_config(&us, Some(&usm), api_port, &p, None))?;
    let token = create_token(&hub, LA)?;
    hub.start()?;
    let mut la = new_box("la", LA, &token, api_port, &p)?;
    la.start()?;
    la.wait_status("healthy", Duration::from_secs(150))
        .await
        .map_err(|e| e.context(format!("hub log:\n{}", tail(&hub.log(), 40))))?;
    let (us_c, usm_c) = (us.client().await?, usm.client().await?);
    exec(&usm_c, &format!("INSERT INTO products (tenant_id, sku, name) VALUES ('{A}', 'P1', 'Pallet'), ('{A}', 'P2', 'Crate')")).await?;
    let la_c = la.client().await?;
    wait_count(&la_c, "SELECT 1 FROM products", 2, T).await?;
    let mut la_rows = Written::default();
    a_day_of_work(&la_c, LA, "LA", &mut la_rows).await?;
    wait_count(
        &us_c,
        &format!("SELECT 1 FROM orders WHERE facility_id = '{LA}'"),
        la_rows.orders.len() as i64,
        T,
    )
    .await?;
    let written_orders = la_rows.orders.clone();
    la.kill();
    drop(la_c);
    drop(la);

    // Only operators with the right may act, and the CLI says how to get it.
    let activate = |operator: &str| {
        hub.cli(&[
            "fallback",
            "activate",
            LA,
            "--reason",
            "Flood",
            "--expected",
            "2 months",
            "--operator",
            operator,
        ])
    };
    let (code, _, err) = activate("bob")?;
    assert_eq!(code, 1);
    assert!(
        err.contains("operator bob may not") && err.contains("hub fallback grant bob"),
        "{err}"
    );
    assert_eq!(
        count(&us_c, "SELECT 1 FROM agog_hub.fallbacks").await?,
        0,
        "a refusal records nothing"
    );
    cli_ok(&hub, &["fallback", "grant", "bob"])?;
    let (code, out, err) = activate("bob")?;
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("workspace: postgresql://agog_ws_facility_la_001@127.0.0.1"),
        "{out}"
    );
    let password = out
        .lines()
        .find_map(|l| l.split("password: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_string();
    // Twice: refused.
    let (code, _, err) = activate("bob")?;
    assert_eq!(code, 1);
    assert!(
        err.contains("facility-la-001 is already in cloud fallback") && err.contains("bob"),
        "{err}"
    );
    // Restoring a facility that is not in fallback (or not known at all): refused.
    for f in [NY, "facility-zz-001"] {
        let (code, _, err) = hub.cli(&["fallback", "restore-token", f, "--operator", "bob"])?;
        assert_eq!(code, 1);
        assert!(
            err.contains(&format!("{f} is not in cloud fallback")),
            "{err}"
        );
    }
    assert_eq!(
        count(
            &us_c,
            "SELECT 1 FROM agog_hub.bootstrap_tokens WHERE purpose = 'restore'"
        )
        .await?,
        0
    );

    // A day in the workspace (orders: in this layout the regional has no master data).
    let ws = workspace_client(&us, "agog_ws_facility_la_001", &password).await?;
    for i in 1..=3 {
        let n = format!("WS-{i}");
        order(&ws, LA, &n, "5.00").await?;
        la_rows.orders.insert(n, "open".into());
    }
    exec(&ws, &format!("UPDATE orders SET status = 'cancelled' WHERE facility_id = '{LA}' AND order_number = 'LA-1'")).await?;
    la_rows.orders.insert("LA-1".into(), "cancelled".into());
    assert_ne!(la_rows.orders, written_orders);

    // The rebuilt box enrolls; the hub dies right after. The box starts its restore on its own
    // (the regional already publishes it), refuses local writes while the cloud owns the
    // facility, and loses power in the middle. Then both come back.
    let restore_token = cli_ok(
        &hub,
        &["fallback", "restore-token", LA, "--operator", "bob"],
    )?
    .trim()
    .to_string();
    let mut la2 = new_box("la", LA, &restore_token, api_port, &p)?;
    la2.start()?;
    let state = la2.state_dir().join("enrollment.json");
    wait_until("the rebuilt box enrolled", T, || async {
        Ok(state.exists().then_some(()))
    })
    .await?;
    hub.kill();
    let s = status(&hub, LA)?;
    assert_eq!(s["fallback"]["phase"], "restoring", "{s}");
    let enrolled: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&state)?)?;
    let restore_conninfo = enrolled["response"]["restore_conninfo"].as_str().unwrap();
    assert!(
        restore_conninfo.contains(&format!("port={}", us.port))
            && restore_conninfo.contains("agog_edge_facility_la_001"),
        "the restore reads the regional with the edge's own role: {restore_conninfo}"
    );
    let la2_c = wait_until("the rebuilt edge's restore subscription", T, || async {
        let Ok(c) = la2.client().await else {
            return Ok(None);
        };
        let overridden = count(
            &c,
            &format!("SELECT 1 FROM agog_sync.ownership_overrides WHERE facility_id = '{LA}'"),
        )
        .await
        .unwrap_or(0);
        Ok((overridden == 1).then_some(c))
    })
    .await
    .map_err(|e| e.context(tail(&la2.log(), 40)))?;
    let e = refused(
        &la2_c,
        &format!("INSERT INTO orders (facility_id, tenant_id, order_number) VALUES ('{LA}', '{A}', 'TOO-EARLY')"),
    )
    .await;
    assert!(
        e.contains("is served from its cloud workspace until the restore onto this edge completes"),
        "{e}"
    );
    drop(la2_c);
    // Power loss: the agent and its PostgreSQL die at once.
    let pg = la2.postgres_pid();
    la2.kill();
    if let Some(pid) = pg {
        // SAFETY: signalling the box's own server process.
        unsafe { libc::kill(pid, libc::SIGQUIT) };
        wait_until("the box's PostgreSQL is down", T, || async {
            Ok((unsafe { libc::kill(pid, 0) } != 0).then_some(()))
        })
        .await?;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(status(&hub, LA)?["fallback"]["phase"], "restoring");
    hub.start()?;
    la2.start()?;
    wait_phase(&hub, LA, "restored", RESTORE)
        .await
        .map_err(|e| {
            e.context(format!(
                "--- new LA agent (tail) ---\n{}",
                tail(&la2.log(), 60)
            ))
        })?;

    let la2_c = la2.client().await?;
    assert_eq!(holds(&la2_c, LA).await?.orders, la_rows.orders);
    assert_eq!(holds(&us_c, LA).await?.orders, la_rows.orders);
    assert_eq!(sums(&la2_c, LA).await?, sums(&us_c, LA).await?);
    assert!(subscribed_without_copy(&us_c, "us_east_from_la").await?);
    // The restore access is taken back; the role stays (the agent still looks for restores).
    let r = us_c
        .query_one(
            "SELECT has_table_privilege('agog_edge_facility_la_001', 'public.orders', 'SELECT')",
            &[],
        )
        .await?;
    assert!(!r.get::<_, bool>(0));
    assert_eq!(count(&us_c, "SELECT 1 FROM pg_policy WHERE polname LIKE 'agog_restore_%' OR polname LIKE 'agog_ws_%'").await?, 0);
    // New writes flow up.
    order(&la2_c, LA, "LA-NEW-1", "1.00").await?;
    la_rows.orders.insert("LA-NEW-1".into(), "open".into());
    wait_until("the rebuilt edge's order in the regional", T, || async {
        Ok((holds(&us_c, LA).await?.orders == la_rows.orders).then_some(()))
    })
    .await?;
    assert_eq!(sums(&la2_c, LA).await?, sums(&us_c, LA).await?);
    // A restored facility cannot be restored again.
    let (code, _, err) = hub.cli(&["fallback", "restore-token", LA, "--operator", "bob"])?;
    assert_eq!(code, 1);
    assert!(err.contains("is not in cloud fallback"), "{err}");
    la2.wait_status("healthy", T).await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
