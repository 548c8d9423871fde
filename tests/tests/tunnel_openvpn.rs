//! The same story as `tunnel_wireguard`, over OpenVPN: certificates from a CA of the test's own
//! (the server's for `serverAuth`, the edge's with its facility id as CN for `clientAuth`),
//! TLS with `tls-crypt`, the agent's client watched over its management interface (a unix
//! socket). The OpenVPN server runs beside the hub in the hub's namespace (the operator's part);
//! the hub, with `[tunnel] kind = "openvpn"`, assigns the edge's address and writes the server's
//! client-config file that pushes it. nftables lets only OpenVPN's UDP port and the enrollment
//! API through the underlay. Rows both ways; the link cut: offline, alert, writes go on; back:
//! recovery, catch-up, equal checksums; openvpn killed: the agent starts it again.

use std::process::Stdio;
use std::time::{Duration, Instant};

use agog_tests::edge_box::{EdgeBox, EnrollingBoxConfig};
use agog_tests::fleet::{checksum, count, exec, wait_count};
use agog_tests::hub_process::HubProcess;
use agog_tests::netns::{unique_ifname, veth, Netns};
use agog_tests::pki::{openvpn_pki, pki_for};
use agog_tests::receivers::{slack, Recorder};
use agog_tests::tunnel_e2e::{edge_report, firewall, slack_count, tcp_opens};
use agog_tests::{cluster, wait_until, Cluster};

const LA: &str = "facility-la-001";
const A: &str = "tenant-foo-inc";
const T: Duration = Duration::from_secs(60);
const HUB_UNDERLAY: &str = "192.0.2.1";
const EDGE_UNDERLAY: &str = "192.0.2.2";
const API_PORT: u16 = 8443;
const VPN_PORT: u16 = 1194;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_syncs_with_its_region_only_through_its_openvpn_tunnel() -> anyhow::Result<()> {
    let started = Instant::now();
    let hub_ns = Netns::new("ohub")?;
    let edge_ns = Netns::new("oedge")?;
    let (hub_if, edge_if) = veth(
        &hub_ns,
        &format!("{HUB_UNDERLAY}/24"),
        &edge_ns,
        &format!("{EDGE_UNDERLAY}/24"),
    )?;
    firewall(
        &hub_ns,
        &hub_if,
        &format!("udp dport {VPN_PORT} accept\n    tcp dport {API_PORT} accept"),
    )?;
    firewall(&edge_ns, &edge_if, &format!("udp sport {VPN_PORT} accept"))?;

    let us = Cluster::start_in_netns("ov-us", &hub_ns.name, &[])?;
    let recorder = Recorder::new();
    let listener = tokio::net::TcpListener::from_std(hub_ns.bind_tcp("127.0.0.1:0")?)?;
    let slack_port = listener.local_addr()?.port();
    let app = slack::router(recorder.clone());
    let _sink = AbortOnDrop(tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    }));

    // Certificates, the tls-crypt key, and the OpenVPN server beside the hub.
    let dir = cluster::scratch_dir("ov-files")?;
    let p = pki_for(&dir, &[HUB_UNDERLAY])?;
    let v = openvpn_pki(&dir, "hub", LA)?;
    let tc = dir.join("tls-crypt.key");
    let gen = std::process::Command::new("openvpn")
        .args(["--genkey", "tls-crypt"])
        .arg(&tc)
        .output()?;
    anyhow::ensure!(gen.status.success(), "openvpn --genkey: {gen:?}");
    let ccd = dir.join("ccd");
    std::fs::create_dir_all(&ccd)?;
    let server_if = unique_ifname("ovs");
    let server_conf = dir.join("server.conf");
    std::fs::write(
        &server_conf,
        format!(
            "mode server
tls-server
proto udp
port {VPN_PORT}
dev {server_if}
dev-type tun
topology subnet
ifconfig 10.96.0.1 255.255.255.0
push \"topology subnet\"
client-config-dir {ccd}
ccd-exclusive
ca {ca}
cert {cert}
key {key}
dh none
tls-crypt {tc}
keepalive 2 10
data-ciphers AES-256-GCM:CHACHA20-POLY1305
management {dir}/server.sock unix
verb 3
",
            ccd = ccd.display(),
            ca = v.ca.display(),
            cert = v.server_cert.display(),
            key = v.server_key.display(),
            tc = tc.display(),
            dir = dir.display(),
        ),
    )?;
    let server_log = std::fs::File::create(dir.join("server.log"))?;
    let mut server = hub_ns
        .command("openvpn")
        .arg("--config")
        .arg(&server_conf)
        .stdout(server_log.try_clone()?)
        .stderr(server_log)
        .stdin(Stdio::null())
        .spawn()?;
    let server_log = || std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();

    let config = format!(
        r#"region = "us-east"
database = "{db}"
regional_address = "10.96.0.1"

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
replication = "host=10.96.0.1 port={port} dbname=agog"

[api]
listen = "{HUB_UNDERLAY}:{API_PORT}"
tls_cert = "{cert}"
tls_key = "{key}"

[tunnel]
kind = "openvpn"
openvpn_ccd_dir = "{ccd}"
range = "10.96.0.0/24"
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
        ccd = ccd.display(),
        path = slack::WEBHOOK_PATH,
    );
    let mut hub = HubProcess::new("ov-hub", &config)?;
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

    let edge_if_name = unique_ifname("ovc");
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
        "[tunnel]\nkind = \"openvpn\"\ninterface = \"{edge_if_name}\"\ncheck_interval_secs = 1\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\ntls_crypt = \"{}\"\nserver_name = \"hub\"\n",
        v.ca.display(),
        v.client_cert.display(),
        v.client_key.display(),
        tc.display()
    ))?;
    let edge_started = Instant::now();
    edge.start()?;
    let healthy = wait_until(
        "the edge healthy through OpenVPN",
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
            "{e:#}\nstatus: {:?}\n--- agent log ---\n{}\n--- hub log ---\n{}\n--- server log ---\n{}\n--- client log ---\n{}",
            edge.cli(&["status"]).ok(),
            edge.log(),
            hub.log(),
            server_log(),
            std::fs::read_to_string(edge.state_dir().join("tunnel/openvpn.log")).unwrap_or_default()
        );
    }
    let to_healthy = edge_started.elapsed();
    let r = edge_report(&edge).await?;
    assert_eq!(r["tunnel"]["kind"], "openvpn", "{r}");
    assert_eq!(r["tunnel"]["up"], true, "{r}");
    assert_eq!(r["tunnel"]["address"], "10.96.0.2/24", "{r}");
    assert!(r["tunnel"]["last_handshake_at"].is_string(), "{r}");
    assert_eq!(
        std::fs::read_to_string(ccd.join(LA))?,
        "ifconfig-push 10.96.0.2 255.255.255.0\n"
    );
    // ccd-exclusive: the server lets in only a client whose certificate CN has a client-config
    // file, so being connected proves the hub wrote it under the facility id. doctor agrees.
    let (_, doctor) = edge.cli(&["doctor"])?;
    assert!(
        doctor.contains("openvpn connected to 192.0.2.1:1194 as 10.96.0.2"),
        "{doctor}"
    );

    // Only through the tunnel.
    assert!(tcp_opens(&edge_ns, "10.96.0.1", us.port));
    assert!(!tcp_opens(&edge_ns, HUB_UNDERLAY, us.port));
    assert!(tcp_opens(&hub_ns, "10.96.0.2", edge.health_port));
    assert!(!tcp_opens(&hub_ns, EDGE_UNDERLAY, edge.health_port));

    let us_c = us.client().await?;
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

    // openvpn killed: the agent starts it again and rows flow.
    let pid = edge_ns
        .pids()
        .into_iter()
        .find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).starts_with("openvpn"))
        })
        .expect("the edge's openvpn");
    // SAFETY: a process inside this test's namespace.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let killed = Instant::now();
    wait_until("openvpn back", T, || async {
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

    eprintln!(
        "tunnel_openvpn: agent start -> healthy {to_healthy:.1?}, -> first operational row at the regional {to_first_row:.1?}, \
         edge insert -> regional {first_row:.2?}; link cut -> alert {to_alert:.1?}; link back -> RECOVERED {to_recovered:.1?}, \
         -> 50 rows caught up {to_caught_up:.1?}; openvpn killed -> back and a row through {to_rebuilt:.1?}; whole test {:.1?}",
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
