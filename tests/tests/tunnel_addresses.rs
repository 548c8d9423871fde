//! The hub's tunnel address management, through its real enrollment API: each edge gets the
//! lowest free address of the region's range (never the hub's, never one another edge has),
//! with the hub's key, endpoint and allowed IPs; the hub then reaches the edge at that address;
//! a re-enrolled facility keeps its address; decommissioning frees it for the next edge; a full
//! range refuses with `tunnel_range_full` and changes nothing.

use std::time::Duration;

use agog_tests::fleet::count;
use agog_tests::hub_process::HubProcess;
use agog_tests::pki::{pinned_client, pki};
use agog_tests::{cluster, wait_until, Cluster};
use base64::Engine;

const A: &str = "tenant-foo-inc";
const T: Duration = Duration::from_secs(60);

fn token(hub: &HubProcess, facility: &str) -> anyhow::Result<String> {
    let (code, out, err) = hub.cli(&[
        "token",
        "create",
        "--facility",
        facility,
        "--tenant",
        A,
        "--name",
        facility,
        "--expires",
        "1h",
    ])?;
    anyhow::ensure!(code == 0, "hub token create: {err}");
    Ok(out.trim().to_string())
}

fn public_key(seed: u8) -> String {
    let secret = x25519_dalek::StaticSecret::from([seed; 32]);
    base64::engine::general_purpose::STANDARD
        .encode(x25519_dalek::PublicKey::from(&secret).as_bytes())
}

async fn enroll(
    client: &reqwest::Client,
    port: u16,
    token: &str,
    facility: &str,
    seed: u8,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let body = serde_json::json!({
        "token": token,
        "facility_id": facility,
        "wireguard_public_key": public_key(seed),
        "replication_password": "a-password-chosen-by-the-edge",
        "health_url": "http://198.51.100.7:4010/health",
        "replication_host": "198.51.100.7",
        "replication_port": 5432,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_edge_gets_its_own_tunnel_address_kept_on_reenrollment_freed_on_decommission(
) -> anyhow::Result<()> {
    let us = Cluster::start("ta-us")?;
    let dir = cluster::scratch_dir("ta-pki")?;
    let p = pki(&dir)?;
    let api_port = cluster::free_port()?;
    let key_file = dir.join("hub-wg.key");
    let mut hub = HubProcess::new(
        "ta-hub",
        &format!(
            r#"region = "us-east"
database = "{db}"
regional_address = "10.98.0.1"

[reconcile]
interval_secs = 2

[api]
listen = "127.0.0.1:{api_port}"
tls_cert = "{cert}"
tls_key = "{key}"

[tunnel]
range = "10.98.0.0/29"
endpoint = "hub.us-east.example:51820"
private_key_file = "{kf}"
keepalive_secs = 15
manage_interface = false
"#,
            db = us.conninfo(),
            cert = p.hub_cert.display(),
            key = p.hub_key.display(),
            kf = key_file.display(),
        ),
    )?;
    let facilities: Vec<String> = (1..=7).map(|i| format!("facility-t{i}-001")).collect();
    let mut tokens = Vec::new();
    for f in &facilities {
        tokens.push(token(&hub, f)?);
    }
    hub.start()?;
    let client = pinned_client(&p.ca_pem)?;

    // The first enrollment waits for the hub's schema work (its first reconcile).
    let first = wait_until("the first enrollment", T, || async {
        Ok(enroll(&client, api_port, &tokens[0], &facilities[0], 1)
            .await
            .ok()
            .filter(|(c, _)| *c == 200))
    })
    .await
    .map_err(|e| e.context(hub.log()))?;
    let t = &first.1["tunnel"];
    assert_eq!(t["kind"], "wireguard", "{}", first.1);
    assert_eq!(t["address"], "10.98.0.2/29", "{}", first.1);
    assert_eq!(t["hub_address"], "10.98.0.1");
    assert_eq!(t["hub_endpoint"], "hub.us-east.example:51820");
    assert_eq!(t["allowed_ips"], serde_json::json!(["10.98.0.0/29"]));
    assert_eq!(t["keepalive_secs"], 15);
    // The hub's public key is the one of the key file it made (0600).
    let hub_private = std::fs::read_to_string(&key_file)?;
    let bytes: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(hub_private.trim())?
        .try_into()
        .unwrap();
    let hub_public = base64::engine::general_purpose::STANDARD
        .encode(x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(bytes)).as_bytes());
    assert_eq!(t["hub_public_key"], hub_public.as_str());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_file)?.permissions().mode() & 0o777,
        0o600
    );

    let mut addresses = vec![t["address"].as_str().unwrap().to_string()];
    for i in 1..3 {
        let (code, body) =
            enroll(&client, api_port, &tokens[i], &facilities[i], i as u8 + 1).await?;
        assert_eq!(code, 200, "{body}");
        addresses.push(body["tunnel"]["address"].as_str().unwrap().to_string());
    }
    assert_eq!(addresses, ["10.98.0.2/29", "10.98.0.3/29", "10.98.0.4/29"]);

    // The hub reaches each edge at its tunnel address, whatever host the edge advertised.
    let us_c = us.client().await?;
    let r = us_c
        .query_one(
            "SELECT health_url, replication_conninfo FROM agog_hub.edges WHERE facility_id = $1",
            &[&facilities[1]],
        )
        .await?;
    assert_eq!(r.get::<_, String>(0), "http://10.98.0.3:4010/health");
    assert!(r
        .get::<_, String>(1)
        .starts_with("host='10.98.0.3' port=5432 "));

    // `hub edges --json` shows each edge's address and key (what doctor's fix points to).
    let (code, out, err) = hub.cli(&["edges", "--json"])?;
    assert_eq!(code, 0, "{err}");
    let edges: serde_json::Value = serde_json::from_str(&out)?;
    let e = edges
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["facility_id"] == facilities[2].as_str())
        .unwrap();
    assert_eq!(e["tunnel_address"], "10.98.0.4", "{e}");
    assert_eq!(e["wireguard_public_key"], public_key(3).as_str(), "{e}");

    // Re-enrolled (a new token for the same facility): the same address.
    let again = token(&hub, &facilities[0])?;
    let (code, body) = enroll(&client, api_port, &again, &facilities[0], 1).await?;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["tunnel"]["address"], "10.98.0.2/29");

    // Decommissioned: its address goes to the next edge.
    let (code, _, err) = hub.cli(&["edges", "decommission", &facilities[1]])?;
    assert_eq!(code, 0, "{err}");
    let (code, body) = enroll(&client, api_port, &tokens[3], &facilities[3], 4).await?;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["tunnel"]["address"], "10.98.0.3/29");

    // .5 and .6 are the last hosts of the /29 (.7 is its broadcast address): then it is full.
    for (i, want) in [(4, "10.98.0.5/29"), (5, "10.98.0.6/29")] {
        let (code, body) =
            enroll(&client, api_port, &tokens[i], &facilities[i], i as u8 + 1).await?;
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["tunnel"]["address"], want);
    }
    let before = count(&us_c, "SELECT 1 FROM agog_hub.edges").await?;
    let (code, body) = enroll(&client, api_port, &tokens[6], &facilities[6], 7).await?;
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["error"], "tunnel_range_full", "{body}");
    assert_eq!(count(&us_c, "SELECT 1 FROM agog_hub.edges").await?, before);
    assert_eq!(
        count(
            &us_c,
            "SELECT 1 FROM agog_hub.bootstrap_tokens WHERE used_at IS NULL AND facility_id = 'facility-t7-001'"
        )
        .await?,
        1
    );
    // Never two edges on one address.
    assert_eq!(
        count(
            &us_c,
            "SELECT tunnel_address FROM agog_hub.edges GROUP BY tunnel_address HAVING count(*) > 1"
        )
        .await?,
        0
    );
    assert_eq!(
        count(
            &us_c,
            "SELECT 1 FROM agog_hub.edges WHERE tunnel_address IS NOT NULL"
        )
        .await?,
        5
    );
    hub.stop();
    Ok(())
}
