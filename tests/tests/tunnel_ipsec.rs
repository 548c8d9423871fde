//! The same story as `tunnel_wireguard`, over IPsec: IKEv2 with raw RSA public keys (the edge's
//! made on the box, only its public half sent at enrollment; the hub's in the enroll answer),
//! strongSwan's charon on both sides, each in its own mount namespace, ESP in userspace through
//! kernel-libipsec (this kernel has no ESP). The charon beside the hub is the operator's part;
//! the hub, with `[tunnel] kind = "ipsec"`, assigns the edge's address and writes and loads that
//! charon's connections. The agent runs and watches its own charon. nftables lets only IKE/NAT-T
//! (UDP 500, 4500) and the enrollment API through the underlay. Rows both ways; the link cut:
//! alert, writes go on; back: recovery, catch-up, equal checksums.

use std::process::Stdio;
use std::time::{Duration, Instant};

use agog_tests::edge_box::{EdgeBox, EnrollingBoxConfig};
use agog_tests::fleet::{checksum, count, exec, wait_count};
use agog_tests::hub_process::HubProcess;
use agog_tests::netns::{veth, Netns};
use agog_tests::pki::pki_for;
use agog_tests::receivers::{slack, Recorder};
use agog_tests::tunnel_e2e::{edge_report, firewall, slack_count, tcp_opens};
use agog_tests::{cluster, wait_until, Cluster};

const LA: &str = "facility-la-001";
const A: &str = "tenant-foo-inc";
const T: Duration = Duration::from_secs(60);
const HUB_UNDERLAY: &str = "192.0.2.1";
const EDGE_UNDERLAY: &str = "192.0.2.2";
const API_PORT: u16 = 8443;
const VPN_PORT: u16 = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_syncs_with_its_region_only_through_its_ipsec_tunnel() -> anyhow::Result<()> {
    let started = Instant::now();
    let hub_ns = Netns::new("ihub")?;
    let edge_ns = Netns::new("iedge")?;
    let (hub_if, edge_if) = veth(
        &hub_ns,
        &format!("{HUB_UNDERLAY}/24"),
        &edge_ns,
        &format!("{EDGE_UNDERLAY}/24"),
    )?;
    firewall(
        &hub_ns,
        &hub_if,
        &format!("udp dport {{ 500, 4500 }} accept\n    tcp dport {API_PORT} accept"),
    )?;
    firewall(&edge_ns, &edge_if, "udp sport { 500, 4500 } accept")?;

    let us = Cluster::start_in_netns("ip-us", &hub_ns.name, &[])?;
    let recorder = Recorder::new();
    let listener = tokio::net::TcpListener::from_std(hub_ns.bind_tcp("127.0.0.1:0")?)?;
    let slack_port = listener.local_addr()?.port();
    let app = slack::router(recorder.clone());
    let _sink = AbortOnDrop(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }));

    // The charon beside the hub (the operator's), with its own swanctl directory.
    let dir = cluster::scratch_dir("ip-files")?;
    let p = pki_for(&dir, &[HUB_UNDERLAY])?;
    let swan = dir.join("hub-swanctl");
    std::fs::create_dir_all(swan.join("run"))?;
    let swan_conf = swan.join("strongswan.conf");
    let vici = swan.join("charon.vici");
    std::fs::write(&swan_conf, sync_core::ipsec::strongswan_conf(&vici))?;
    hub_ns.ip(&["addr", "add", "10.95.0.1/32", "dev", "lo"])?;
    let server_log = std::fs::File::create(dir.join("server.log"))?;
    let mut server = hub_ns
        .command("unshare")
        .args([
            "-m",
            "sh",
            "-c",
            &format!(
                "mount --bind {} /run && exec /usr/sbin/charon-systemd",
                swan.join("run").display()
            ),
        ])
        .env("STRONGSWAN_CONF", &swan_conf)
        .stdout(server_log.try_clone()?)
        .stderr(server_log)
        .stdin(Stdio::null())
        .spawn()?;
    let server_log = || std::fs::read_to_string(swan.join("charon-ike.log")).unwrap_or_default();
    wait_until("the hub-side charon", T, || async {
        Ok(vici.exists().then_some(()))
    })
    .await?;

    let config = format!(
        r#"region = "us-east"
database = "{db}"
regional_address = "10.95.0.1"

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
replication = "host=10.95.0.1 port={port} dbname=agog"

[api]
listen = "{HUB_UNDERLAY}:{API_PORT}"
tls_cert = "{cert}"
tls_key = "{key}"

[tunnel]
kind = "ipsec"
ipsec_dir = "{swan}"
ipsec_strongswan_conf = "{swan_conf}"
private_key_file = "{dir}/hub-ipsec.key"
range = "10.95.0.0/24"
endpoint = "{HUB_UNDERLAY}:{VPN_PORT}"
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
        swan = swan.display(),
        swan_conf = swan_conf.display(),
        dir = dir.display(),
        path = slack::WEBHOOK_PATH,
    );
    let mut hub = HubProcess::new("ip-hub", &config)?;
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
    edge.append_config("[tunnel]\nkind = \"ipsec\"\ncheck_interval_secs = 1\n")?;
    let edge_started = Instant::now();
    edge.start()?;
    let healthy = wait_until(
        "the edge healthy through IPsec",
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
            "{e:#}\nstatus: {:?}\n--- agent log ---\n{}\n--- hub log ---\n{}\n--- hub charon ---\n{}\n--- edge charon ---\n{}",
            edge.cli(&["status"]).ok(),
            edge.log(),
            hub.log(),
            server_log(),
            std::fs::read_to_string(edge.state_dir().join("tunnel/ipsec/charon-ike.log")).unwrap_or_default()
        );
    }
    let to_healthy = edge_started.elapsed();
    let r = edge_report(&edge).await?;
    assert_eq!(r["tunnel"]["kind"], "ipsec", "{r}");
    assert_eq!(r["tunnel"]["up"], true, "{r}");
    assert_eq!(r["tunnel"]["address"], "10.95.0.2/24", "{r}");
    assert!(r["tunnel"]["last_handshake_at"].is_string(), "{r}");
    // Only the public key travelled: the hub holds the edge's PEM public key, and the private
    // key stays on the box (0600).
    let us_c = us.client().await?;
    let stored: String = us_c
        .query_one(
            "SELECT ipsec_public_key FROM agog_hub.edges WHERE facility_id = $1",
            &[&LA],
        )
        .await?
        .get(0);
    assert!(stored.starts_with("-----BEGIN PUBLIC KEY-----"), "{stored}");
    use std::os::unix::fs::PermissionsExt;
    let key = edge.state_dir().join("ipsec.key");
    assert_eq!(std::fs::metadata(&key)?.permissions().mode() & 0o777, 0o600);
    assert!(!stored.contains(std::fs::read_to_string(&key)?.lines().nth(1).unwrap()));
    let (_, doctor) = edge.cli(&["doctor"])?;
    assert!(
        doctor.contains("IPsec SA agog-facility-la-001 established with 192.0.2.1:500"),
        "{doctor}"
    );

    // Only through the tunnel.
    assert!(tcp_opens(&edge_ns, "10.95.0.1", us.port));
    assert!(!tcp_opens(&edge_ns, HUB_UNDERLAY, us.port));
    assert!(tcp_opens(&hub_ns, "10.95.0.2", edge.health_port));
    assert!(!tcp_opens(&hub_ns, EDGE_UNDERLAY, edge.health_port));

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

    let offline_before = slack_count(&recorder, LA, "OFFLINE");
    let recovered_before = slack_count(&recorder, LA, "RECOVERED");
    edge_ns.ip(&["link", "set", &edge_if, "down"])?;
    let cut = Instant::now();
    wait_until("the OFFLINE alert", T, || async {
        Ok((slack_count(&recorder, LA, "OFFLINE") == offline_before + 1).then_some(()))
    })
    .await
    .map_err(|e| e.context(format!("hub log:\n{}", hub.log())))?;
    let to_alert = cut.elapsed();
    assert_eq!(hub.edge_state(LA)?, "offline");
    for i in 2..=51 {
        exec(&edge_c, &format!("INSERT INTO orders (facility_id, tenant_id, order_number) VALUES ('{LA}', '{A}', 'LA-{i}')")).await?;
    }
    assert!(count(&us_c, "SELECT 1 FROM orders").await? < 51);

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

    eprintln!(
        "tunnel_ipsec: agent start -> healthy {to_healthy:.1?}, -> first operational row at the regional {to_first_row:.1?}, \
         edge insert -> regional {first_row:.2?}; link cut -> alert {to_alert:.1?}; link back -> RECOVERED {to_recovered:.1?}, \
         -> 50 rows caught up {to_caught_up:.1?}; whole test {:.1?}",
        started.elapsed()
    );
    edge.stop()?;
    hub.stop();
    // SAFETY: our own child.
    unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
