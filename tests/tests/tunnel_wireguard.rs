//! An edge and its region on two network namespaces joined by a veth pair, with nothing between
//! them but the WireGuard tunnel the agent brings up after enrolling.
//!
//! Hub side: the regional PostgreSQL (also the master-data publisher) and a real `hub serve`
//! with `[api]` on the underlay and `[tunnel]` (its own userspace WireGuard interface). Edge side:
//! a real agent with its own PostgreSQL and `[tunnel]`. nftables on both ends lets only the
//! WireGuard UDP port and the enrollment API through the underlay, so PostgreSQL and `/health`
//! are reachable through the tunnel only (checked). Then: rows both ways through the tunnel; the
//! link cut (`ip link set down`): the hub marks the edge offline and alerts (a Slack receiver in
//! the hub's namespace), the edge keeps taking writes, `doctor` names the unreachable endpoint;
//! the link back: the recovery notice, catch-up, equal checksums; wireguard-go killed: the agent
//! brings the tunnel up again. Everything made here goes when the test ends, failed or not
//! (the namespaces' Drop kills what is left inside them).

use std::time::{Duration, Instant};

use agog_tests::edge_box::{EdgeBox, EnrollingBoxConfig};
use agog_tests::fleet::{checksum, count, exec, wait_count};
use agog_tests::hub_process::HubProcess;
use agog_tests::netns::{unique_ifname, veth, Netns};
use agog_tests::pki::pki_for;
use agog_tests::receivers::{slack, Recorder};
use agog_tests::tunnel_e2e::{edge_report, firewall, log_field, slack_count, tcp_opens};
use agog_tests::{cluster, wait_until, Cluster};

const LA: &str = "facility-la-001";
const A: &str = "tenant-foo-inc";
const T: Duration = Duration::from_secs(60);
const HUB_UNDERLAY: &str = "192.0.2.1";
const EDGE_UNDERLAY: &str = "192.0.2.2";
const API_PORT: u16 = 8443;
const WG_PORT: u16 = 51820;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_syncs_with_its_region_only_through_the_wireguard_tunnel_it_brought_up(
) -> anyhow::Result<()> {
    let started = Instant::now();
    // Declared first, dropped last: everything inside is stopped before they go.
    let hub_ns = Netns::new("hub")?;
    let edge_ns = Netns::new("edge")?;
    let (hub_if, edge_if) = veth(
        &hub_ns,
        &format!("{HUB_UNDERLAY}/24"),
        &edge_ns,
        &format!("{EDGE_UNDERLAY}/24"),
    )?;
    firewall(
        &hub_ns,
        &hub_if,
        &format!("udp dport {WG_PORT} accept\n    tcp dport {API_PORT} accept"),
    )?;
    firewall(&edge_ns, &edge_if, &format!("udp sport {WG_PORT} accept"))?;

    // The region: its database in the hub's namespace, its alert sink there too.
    let us = Cluster::start_in_netns("wg-us", &hub_ns.name, &[])?;
    let recorder = Recorder::new();
    let listener = tokio::net::TcpListener::from_std(hub_ns.bind_tcp("127.0.0.1:0")?)?;
    let slack_port = listener.local_addr()?.port();
    let app = slack::router(recorder.clone());
    let sink = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let _sink = AbortOnDrop(sink);

    let dir = cluster::scratch_dir("wg-hub-files")?;
    let p = pki_for(&dir, &[HUB_UNDERLAY])?;
    let hub_wg = unique_ifname("wgh");
    let edge_wg = unique_ifname("wge");
    let config = format!(
        r#"region = "us-east"
database = "{db}"
regional_address = "10.99.0.1"

[monitor]
interval_secs = 1
timeout_secs = 1
offline_after_secs = 3
escalate_after_secs = 600
recover_after_checks = 2
tick_ms = 200

[reconcile]
interval_secs = 2

[master]
replication = "host=10.99.0.1 port={port} dbname=agog"

[api]
listen = "{HUB_UNDERLAY}:{API_PORT}"
tls_cert = "{cert}"
tls_key = "{key}"

[tunnel]
range = "10.99.0.0/24"
endpoint = "{HUB_UNDERLAY}:{WG_PORT}"
listen_port = {WG_PORT}
interface = "{hub_wg}"
private_key_file = "{dir}/hub-wg.key"
keepalive_secs = 2
backend = "userspace"
sync_secs = 1

[[alerts.channels]]
name = "ops-slack"
kind = "slack"
webhook_url = "http://127.0.0.1:{slack_port}{path}"
"#,
        db = us.conninfo(),
        port = us.port,
        cert = p.hub_cert.display(),
        key = p.hub_key.display(),
        dir = dir.display(),
        path = slack::WEBHOOK_PATH,
    );
    let mut hub = HubProcess::new("wg-hub", &config)?;
    hub.netns = Some(hub_ns.name.clone());
    let (code, token, err) = hub.cli(&[
        "token",
        "create",
        "--facility",
        LA,
        "--tenant",
        A,
        "--name",
        "LA plant",
        "--expires",
        "1h",
    ])?;
    anyhow::ensure!(code == 0, "hub token create: {err}");
    hub.start()?;
    wait_until("the hub's tunnel interface", T, || async {
        Ok(hub_ns
            .run("wg", &["show", &hub_wg, "listen-port"])
            .ok()
            .filter(|o| o.trim() == WG_PORT.to_string())
            .map(|_| ()))
    })
    .await
    .map_err(|e| e.context(format!("hub log:\n{}", hub.log())))?;

    // The edge: enrolls over the underlay, then everything else goes through its tunnel.
    let mut edge = EdgeBox::new_enrolling(&EnrollingBoxConfig {
        node: "la",
        facility: LA,
        tenant: A,
        region: "us-east",
        hub_url: format!("https://{HUB_UNDERLAY}:{API_PORT}"),
        token: token.trim().to_string(),
        ca_cert: p.ca_cert.clone(),
        reconcile_secs: 2,
    })?;
    edge.set_netns(&edge_ns.name)?;
    edge.append_config(&format!(
        "[tunnel]\nkind = \"wireguard\"\ninterface = \"{edge_wg}\"\nbackend = \"userspace\"\ncheck_interval_secs = 1\nhandshake_timeout_secs = 30\n"
    ))?;
    let edge_started = Instant::now();
    edge.start()?;
    let healthy = wait_until(
        "the edge healthy through the tunnel",
        Duration::from_secs(120),
        || async {
            Ok(edge_report(&edge)
                .await
                .ok()
                .filter(|r| r["status"] == "healthy")
                .map(|_| ()))
        },
    )
    .await;
    if let Err(e) = healthy {
        anyhow::bail!(
            "{e:#}\nstatus: {:?}\n--- agent log ---\n{}\n--- hub log ---\n{}",
            edge.cli(&["status"]).ok(),
            edge.log(),
            hub.log()
        );
    }
    let to_healthy = edge_started.elapsed();
    let log = edge.log();
    let bring_up_ms = log_field(&log, "tunnel interface up", "bring_up_ms");
    let handshake_ms = log_field(&log, "tunnel handshake with the hub", "since_up_ms");

    // The tunnel as /health reports it, and what the hub assigned.
    let r = edge_report(&edge).await?;
    let t = &r["tunnel"];
    assert_eq!(t["kind"], "wireguard", "{r}");
    assert_eq!(t["up"], true, "{r}");
    assert_eq!(t["backend"], "userspace", "{r}");
    assert_eq!(t["address"], "10.99.0.2/24", "{r}");
    assert!(t["last_handshake_at"].is_string(), "{r}");
    let (_, status_text) = edge.cli(&["status"])?;
    assert!(
        status_text.contains(&format!(
            "tunnel     wireguard up on {edge_wg} (10.99.0.2/24 -> {HUB_UNDERLAY}:{WG_PORT})"
        )),
        "{status_text}"
    );
    let us_c = us.client().await?;
    let row = us_c
        .query_one(
            "SELECT host(tunnel_address), replication_conninfo, wireguard_public_key
               FROM agog_hub.edges WHERE facility_id = $1",
            &[&LA],
        )
        .await?;
    assert_eq!(row.get::<_, String>(0), "10.99.0.2");
    assert!(
        row.get::<_, String>(1).contains("host='10.99.0.2' "),
        "{}",
        row.get::<_, String>(1)
    );
    let edge_key: String = row.get(2);
    let hub_peers = hub_ns.run("wg", &["show", &hub_wg, "allowed-ips"])?;
    assert!(
        hub_peers.contains(&format!("{edge_key}\t10.99.0.2/32")),
        "{hub_peers}"
    );
    // The rendered configuration holds the key: 0600.
    use std::os::unix::fs::PermissionsExt;
    let conf = edge.state_dir().join(format!("tunnel/{edge_wg}.conf"));
    assert_eq!(
        std::fs::metadata(&conf)?.permissions().mode() & 0o777,
        0o600
    );
    assert!(std::fs::read_to_string(&conf)?.contains("Address = 10.99.0.2/24"));

    // No way around the tunnel: the regional's PostgreSQL and the edge's /health answer on the
    // tunnel addresses only.
    assert!(tcp_opens(&edge_ns, "10.99.0.1", us.port));
    assert!(!tcp_opens(&edge_ns, HUB_UNDERLAY, us.port));
    assert!(tcp_opens(&hub_ns, "10.99.0.2", edge.health_port));
    assert!(!tcp_opens(&hub_ns, EDGE_UNDERLAY, edge.health_port));
    assert!(!tcp_opens(&hub_ns, EDGE_UNDERLAY, edge.pg_port));

    // Rows both ways through the tunnel.
    let edge_c = edge.client().await?;
    exec(&us_c, &format!("INSERT INTO products (tenant_id, sku, name) VALUES ('{A}', 'BOX', 'Box'), ('{A}', 'BAG', 'Bag')")).await?;
    wait_count(&edge_c, "SELECT 1 FROM products", 2, T).await?;
    let first = Instant::now();
    exec(&edge_c, &format!("INSERT INTO orders (facility_id, tenant_id, order_number) VALUES ('{LA}', '{A}', 'LA-1')")).await?;
    wait_count(&us_c, "SELECT 1 FROM orders", 1, T).await?;
    let first_row = first.elapsed();
    let to_first_row = edge_started.elapsed();
    wait_until("la online at the hub", T, || async {
        Ok((hub.edge_state(LA)? == "online").then_some(()))
    })
    .await?;

    // The link cut. (A new edge may have alerted while its first checks failed: count from here.)
    let offline_before = slack_count(&recorder, LA, "OFFLINE");
    let recovered_before = slack_count(&recorder, LA, "RECOVERED");
    edge_ns.ip(&["link", "set", &edge_if, "down"])?;
    let cut = Instant::now();
    wait_until("la offline at the hub", T, || async {
        Ok((hub.edge_state(LA)? == "offline").then_some(()))
    })
    .await?;
    let to_offline = cut.elapsed();
    wait_until("the OFFLINE alert", T, || async {
        Ok((slack_count(&recorder, LA, "OFFLINE") == offline_before + 1).then_some(()))
    })
    .await
    .map_err(|e| e.context(format!("hub log:\n{}", hub.log())))?;
    let to_alert = cut.elapsed();
    // The edge keeps working.
    for i in 2..=51 {
        exec(&edge_c, &format!("INSERT INTO orders (facility_id, tenant_id, order_number) VALUES ('{LA}', '{A}', 'LA-{i}')")).await?;
    }
    assert_eq!(count(&edge_c, "SELECT 1 FROM orders").await?, 51);
    assert!(count(&us_c, "SELECT 1 FROM orders").await? < 51);
    // doctor names what is wrong and what to do.
    let (code, doctor) = edge.cli(&["doctor"])?;
    assert_eq!(code, 1, "{doctor}");
    assert!(
        doctor.contains("endpoint unreachable: no route to the hub's endpoint"),
        "{doctor}"
    );
    assert!(doctor.contains("fix: check this box's uplink"), "{doctor}");

    // The link back: the recovery notice, catch-up, the same rows on both sides.
    edge_ns.ip(&["link", "set", &edge_if, "up"])?;
    let restored = Instant::now();
    wait_until("the RECOVERED notice", T, || async {
        Ok((slack_count(&recorder, LA, "RECOVERED") == recovered_before + 1).then_some(()))
    })
    .await?;
    let to_recovered = restored.elapsed();
    wait_count(&us_c, "SELECT 1 FROM orders", 51, T).await?;
    let to_caught_up = restored.elapsed();
    let filter = format!("facility_id = '{LA}'");
    assert_eq!(
        checksum(&edge_c, "orders", &filter, "facility_id, id").await?,
        checksum(&us_c, "orders", &filter, "facility_id, id").await?
    );
    assert_eq!(
        checksum(&edge_c, "products", "true", "tenant_id, sku").await?,
        checksum(&us_c, "products", "true", "tenant_id, sku").await?
    );
    assert_eq!(slack_count(&recorder, LA, "OFFLINE"), offline_before + 1);

    // wireguard-go killed: the agent brings the tunnel up again by itself.
    let wg_pid = edge_ns
        .pids()
        .into_iter()
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c).replace('\0', " ");
                c.starts_with("wireguard-go") && c.contains(&edge_wg)
            })
        })
        .expect("the edge's wireguard-go");
    // SAFETY: a process inside this test's namespace.
    unsafe { libc::kill(wg_pid, libc::SIGKILL) };
    let killed = Instant::now();
    wait_until("the tunnel back after wireguard-go died", T, || async {
        Ok(edge_report(&edge)
            .await
            .ok()
            .filter(|r| r["tunnel"]["up"] == true && r["tunnel"]["reconnects"].as_u64() >= Some(1))
            .map(|_| ()))
    })
    .await
    .map_err(|e| e.context(edge.log()))?;
    exec(&edge_c, &format!("INSERT INTO orders (facility_id, tenant_id, order_number) VALUES ('{LA}', '{A}', 'LA-52')")).await?;
    wait_count(&us_c, "SELECT 1 FROM orders", 52, T).await?;
    let to_rebuilt = killed.elapsed();
    assert!(edge
        .log()
        .contains("the tunnel interface is gone: bringing it up again"));

    // The hub's wireguard-go killed: the hub brings its interface up again with the fleet's
    // peers, and the edge's keepalives make a new session.
    let hub_wg_pid = hub_ns
        .pids()
        .into_iter()
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c).replace('\0', " ");
                c.starts_with("wireguard-go") && c.contains(&hub_wg)
            })
        })
        .expect("the hub's wireguard-go");
    // SAFETY: a process inside this test's namespace.
    unsafe { libc::kill(hub_wg_pid, libc::SIGKILL) };
    let hub_killed = Instant::now();
    exec(&edge_c, &format!("INSERT INTO orders (facility_id, tenant_id, order_number) VALUES ('{LA}', '{A}', 'LA-53')")).await?;
    wait_count(&us_c, "SELECT 1 FROM orders", 53, T)
        .await
        .map_err(|e| e.context(hub.log()))?;
    let to_hub_rebuilt = hub_killed.elapsed();
    assert!(hub
        .log()
        .contains("the tunnel interface is gone: bringing it up again"));
    let hub_peers = hub_ns.run("wg", &["show", &hub_wg, "allowed-ips"])?;
    assert!(
        hub_peers.contains(&format!("{edge_key}\t10.99.0.2/32")),
        "{hub_peers}"
    );

    eprintln!(
        "tunnel_wireguard: bring-up {bring_up_ms:?} ms, first handshake {handshake_ms:?} ms after bring-up, \
         agent start -> healthy {to_healthy:.1?}, agent start -> first operational row at the regional {to_first_row:.1?}, \
         edge insert -> regional {first_row:.2?}; link cut -> offline {to_offline:.1?}, -> alert {to_alert:.1?}; \
         link back -> RECOVERED {to_recovered:.1?}, -> 50 rows caught up {to_caught_up:.1?}; \
         wireguard-go killed -> tunnel back and a row through {to_rebuilt:.1?}; \
         the hub's wireguard-go killed -> a row through {to_hub_rebuilt:.1?}; whole test {:.1?}",
        started.elapsed()
    );
    edge.stop()?;
    hub.stop();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
