//! Self-service provisioning, as the IT manager and the hub live it: the design's form filled
//! in headless Chromium (a refused form first: errors next to their fields, nothing made), the
//! hardware order reaching a procurement webhook (after a failure), the edge's image written
//! from a golden image with its config on the boot partition, the IT contact's email with the
//! link, sha256 and steps, the download checked against that sha256, the setup page going from
//! "waiting for first connection" to online when a real agent enrolls with the token read out
//! of the image, and the alert for a second box that never enrolled.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agog_tests::browser::Browser;
use agog_tests::edge_box::{EdgeBox, EnrollingBoxConfig};
use agog_tests::hub_process::{succeeded, HubProcess};
use agog_tests::pki::pki;
use agog_tests::receivers::{slack, smtp};
use agog_tests::{bin_path, cluster, wait_until, Cluster};
use axum::http::{HeaderMap, StatusCode};
use fantoccini::Locator;
use serde_json::Value;

const T: Duration = Duration::from_secs(120);
const TENANT: &str = "tenant-foo-inc";
const LA: &str = "facility-los-angeles-plant-001";

fn sh(program: &str, args: &[&str], input: Option<&str>) -> anyhow::Result<()> {
    let mut c = Command::new(program);
    c.args(args).env("MTOOLS_SKIP_CHECK", "1");
    let out = if let Some(i) = input {
        use std::io::Write;
        let mut child = c
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        child.stdin.take().unwrap().write_all(i.as_bytes())?;
        child.wait_with_output()?
    } else {
        c.output()?
    };
    anyhow::ensure!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// A golden image as image-builder lays it out: a FAT boot partition (GPT's EFI system
/// partition for x86_64, an MBR FAT partition for the Raspberry Pi) and a root partition.
fn golden_image(dir: &Path, label: &str) -> anyhow::Result<PathBuf> {
    let img = dir.join(format!("golden-{label}.img"));
    let esp = dir.join(format!("esp-{label}.img"));
    let _ = std::fs::remove_file(&esp);
    sh("truncate", &["-s", "64M", &img.to_string_lossy()], None)?;
    let table = if label == "gpt" {
        "label: gpt\nstart=2048, size=65536, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\nstart=67584, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n"
    } else {
        "label: dos\nstart=2048, size=65536, type=c\nstart=67584, type=83\n"
    };
    sh("sfdisk", &["--quiet", &img.to_string_lossy()], Some(table))?;
    sh(
        "mkfs.vfat",
        &["-n", "BOOT", "-C", &esp.to_string_lossy(), "32768"],
        None,
    )?;
    sh(
        "dd",
        &[
            &format!("if={}", esp.display()),
            &format!("of={}", img.display()),
            "bs=512",
            "seek=2048",
            "conv=notrunc",
            "status=none",
        ],
        None,
    )?;
    std::fs::remove_file(&esp)?;
    Ok(img)
}

/// The procurement system: refuses the first order (503), takes the next ones.
#[derive(Clone, Default)]
struct Procurement {
    orders: Arc<Mutex<Vec<(Option<String>, Value)>>>,
    calls: Arc<Mutex<usize>>,
}

async fn procurement() -> anyhow::Result<(String, Procurement)> {
    let p = Procurement::default();
    let state = p.clone();
    let app = axum::Router::new().route(
        "/orders",
        axum::routing::post(
            move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| {
                let state = state.clone();
                async move {
                    let mut calls = state.calls.lock().unwrap();
                    *calls += 1;
                    if *calls == 1 {
                        return StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .map(String::from);
                    state.orders.lock().unwrap().push((key, body));
                    StatusCode::CREATED
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/orders", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, p))
}

async fn select(b: &Browser, id: &str, value: &str) -> anyhow::Result<()> {
    b.client
        .find(Locator::Css(&format!("#{id} option[value='{value}']")))
        .await?
        .click()
        .await?;
    Ok(())
}

async fn submit(b: &Browser) -> anyhow::Result<()> {
    b.client
        .find(Locator::Id("provision-submit"))
        .await?
        .click()
        .await?;
    Ok(())
}

/// A provisioned image, decompressed: its edge.toml from the boot partition.
async fn edge_toml_in(xz_bytes: &[u8], dir: &Path) -> anyhow::Result<String> {
    let xz = dir.join("download.img.xz");
    std::fs::write(&xz, xz_bytes)?;
    let _ = std::fs::remove_file(dir.join("download.img"));
    sh("xz", &["-d", &xz.to_string_lossy()], None)?;
    let img = dir.join("download.img");
    let offset = hub::provision::image::boot_partition_offset(&img).await?;
    let bytes = hub::provision::image::read_boot_file(&img, offset, "agog/edge.toml").await?;
    let ca = hub::provision::image::read_boot_file(&img, offset, "agog/hub-ca.pem").await?;
    anyhow::ensure!(String::from_utf8(ca)?.contains("BEGIN CERTIFICATE"));
    Ok(String::from_utf8(bytes)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_form_becomes_an_image_an_email_and_an_edge_that_enrolls_by_itself() -> anyhow::Result<()>
{
    let dir = cluster::scratch_dir("provision")?;
    let regional = Cluster::start("prov-us")?;
    let p = pki(&dir)?;
    let mail = smtp::start().await;
    let chat = slack::start().await;
    let (orders_url, orders) = procurement().await?;
    let gpt = golden_image(&dir, "gpt")?;
    let mbr = golden_image(&dir, "mbr")?;
    let (web_port, api_port) = (cluster::free_port()?, cluster::free_port()?);
    let web = format!("http://127.0.0.1:{web_port}");
    let images = dir.join("images");
    let mut hub = HubProcess::new(
        "prov-hub",
        &format!(
            r#"region = "us-east"
database = "{db}"
regional_address = "127.0.0.1"

[monitor]
interval_secs = 1
timeout_secs = 1
offline_after_secs = 4
tick_ms = 200

[reconcile]
interval_secs = 2

[api]
listen = "127.0.0.1:{api_port}"
tls_cert = "{cert}"
tls_key = "{key}"

[web]
listen = "127.0.0.1:{web_port}"
refresh_secs = 1

[provision]
hub_url = "https://127.0.0.1:{api_port}"
ca_cert = "{ca}"
public_url = "{web}"
images_dir = "{images}"
procurement_webhook = "{orders_url}"
poll_ms = 300
base_images = {{ small = "{mbr}", medium = "{gpt}", large = "{gpt}" }}

[[alerts.channels]]
name = "ops-email"
kind = "email"
host = "127.0.0.1"
port = {smtp}
tls = "none"
from = "AGOG <alerts@agog.test>"
to = ["ops@agog.test"]
retry = {{ max_attempts = 3, initial_backoff_ms = 50, max_backoff_ms = 200, max_total_ms = 5000, request_timeout_ms = 3000 }}

[[alerts.channels]]
name = "ops-slack"
kind = "slack"
webhook_url = "{slack_url}"
"#,
            db = regional.conninfo(),
            cert = p.hub_cert.display(),
            key = p.hub_key.display(),
            ca = p.ca_cert.display(),
            images = images.display(),
            mbr = mbr.display(),
            gpt = gpt.display(),
            smtp = mail.addr.port(),
            slack_url = chat.webhook_url(),
        ),
    )?;
    succeeded(hub.cli_with_input(
        &["operator", "add", "root", "--password-stdin"],
        "a long root password\n",
    )?)?;
    hub.start()?;
    let db = regional.client().await?;
    let http = agog_tests::http_client();
    wait_until("the dashboard", T, || async {
        Ok(http.get(format!("{web}/login")).send().await.ok())
    })
    .await?;
    let counts = || async {
        let r = db
            .query_one(
                "SELECT (SELECT count(*) FROM agog_hub.provisioning_requests),
                        (SELECT count(*) FROM agog_hub.bootstrap_tokens)",
                &[],
            )
            .await?;
        anyhow::Ok((r.get::<_, i64>(0), r.get::<_, i64>(1)))
    };

    let b = Browser::start("provision").await?;
    let r = async {
        b.client.goto(&format!("{web}/provision")).await?;
        b.wait_text("h1", &["Sign in"], T).await?;
        b.sign_in("root", "a long root password").await?;
        b.wait_text("h1", &["Provisioning"], T).await?;
        b.client
            .find(Locator::Id("new-edge"))
            .await?
            .click()
            .await?;
        b.wait_text("h1", &["Request a new edge computer"], T)
            .await?;

        // A form with mistakes: each said next to its field, what was typed kept, nothing made.
        b.fill("tenant", TENANT).await?;
        b.fill("facility_name", "Los Angeles Plant").await?;
        b.fill(
            "facility_address",
            "1200 Industrial Way\nLos Angeles, CA 90021",
        )
        .await?;
        b.client
            .find(Locator::Id("network_static"))
            .await?
            .click()
            .await?;
        b.fill("static_address", "203.0.113.45").await?;
        b.fill("gateway", "198.51.100.1").await?;
        b.fill("dns_servers", "8.8.8.8, 8.8.4.4").await?;
        select(&b, "vpn_type", "wireguard").await?;
        b.fill("vpn_endpoint", "vpn.customer-corp.com").await?;
        select(&b, "hardware_size", "medium").await?;
        b.fill("it_contact_name", "Ana Lopez").await?;
        b.fill("it_contact_email", "ana.lopez@customer-corp")
            .await?;
        b.fill("it_contact_phone", "555-0100").await?;
        submit(&b).await?;
        b.wait_text(
            "#form-errors",
            &["3 fields need a change", "nothing was ordered"],
            T,
        )
        .await?;
        b.wait_text(
            "#gateway-error",
            &["not in the box's network 203.0.113.45/24"],
            T,
        )
        .await?;
        b.wait_text("#it_contact_email-error", &["email address"], T)
            .await?;
        b.wait_text("#it_contact_phone-error", &["country code"], T)
            .await?;
        let kept = b
            .client
            .find(Locator::Id("facility_name"))
            .await?
            .prop("value")
            .await?;
        assert_eq!(kept.as_deref(), Some("Los Angeles Plant"));
        assert_eq!(counts().await?, (0, 0), "a refused form makes nothing");
        b.screenshot("01-form-refused").await?;

        b.fill("gateway", "203.0.113.1").await?;
        b.fill("it_contact_email", "ana.lopez@customer-corp.test")
            .await?;
        b.fill("it_contact_phone", "+1 (415) 555-0100").await?;
        submit(&b).await?;
        // The request's page follows the jobs by itself.
        b.wait_text("h1", &["Los Angeles Plant", LA], T).await?;
        b.wait_text("#image-status", &["READY"], T)
            .await
            .map_err(|e| e.context(hub.log()))?;
        b.wait_text("#order-status", &["sent", "accepted: HTTP 201"], T)
            .await?;
        b.wait_text("#email-status", &["sent"], T).await?;
        b.wait_text("#edge-state", &["waiting for first connection"], T)
            .await?;
        let sha = b.text("#image-sha256").await?.unwrap_or_default();
        assert_eq!(sha.len(), 64, "{sha}");
        b.screenshot("02-request-ready").await?;
        anyhow::Ok(sha)
    }
    .await;
    let sha = match r {
        Ok(s) => s,
        Err(e) => {
            let _ = b.screenshot("failed").await;
            return Err(e.context(hub.log()));
        }
    };

    // The hardware order: once accepted, with the request's details and a stable key.
    let o = orders.orders.lock().unwrap().clone();
    assert_eq!(o.len(), 1, "{o:?}");
    assert_eq!(*orders.calls.lock().unwrap(), 2, "one refusal, one retry");
    let (key, body) = &o[0];
    assert_eq!(key.as_deref(), Some(format!("agog-order-{LA}").as_str()));
    assert_eq!(body["facility_id"], LA);
    assert_eq!(body["hardware_size"], "medium");
    assert_eq!(body["hardware"], "Intel NUC (x86_64)");
    assert_eq!(
        body["ship_to"]["address"],
        "1200 Industrial Way\nLos Angeles, CA 90021"
    );
    assert_eq!(body["ship_to"]["phone"], "+14155550100");

    // The IT contact's email: the link, the sha256, the design's steps, the setup page.
    let email = wait_until("the setup email", T, || async {
        Ok(mail.accepted().into_iter().find(|m| {
            m.envelope_to
                .iter()
                .any(|t| t == "ana.lopez@customer-corp.test")
        }))
    })
    .await?;
    let text = email.text.clone().unwrap_or_default();
    assert!(
        email.subject.contains("setup instructions"),
        "{}",
        email.subject
    );
    for want in [
        LA,
        &sha,
        "Balena Etcher",
        "Static IP: 203.0.113.45/24",
        "wireguard via vpn.customer-corp.com",
    ] {
        assert!(text.contains(want), "the email lacks {want:?}:\n{text}");
    }
    let link = |prefix: &str| {
        text.split_whitespace()
            .find(|w| w.starts_with(&format!("{web}{prefix}")))
            .map(String::from)
            .ok_or_else(|| anyhow::anyhow!("no {prefix} link in:\n{text}"))
    };
    let download = link("/downloads/")?;
    let setup = link("/setup/")?;

    // The download needs no account; its bytes are what the sha256 says.
    let resp = http.get(&download).send().await?;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(
        resp.headers()
            .get("x-checksum-sha256")
            .and_then(|v| v.to_str().ok()),
        Some(sha.as_str())
    );
    let bytes = resp.bytes().await?;
    let local = dir.join("check.img.xz");
    std::fs::write(&local, &bytes)?;
    assert_eq!(hub::provision::image::sha256_file(&local).await?.0, sha);
    // A wrong key is unknown.
    let wrong = download.replace("/downloads/agog_setup_", "/downloads/agog_setup_x");
    assert_eq!(http.get(&wrong).send().await?.status().as_u16(), 404);

    // The image's boot partition holds the edge's config; the agent takes it.
    let toml_text = edge_toml_in(&bytes, &dir).await?;
    let cfg: toml::Table = toml_text.parse()?;
    assert_eq!(cfg["facility"].as_str(), Some(LA));
    assert_eq!(cfg["tenant"].as_str(), Some(TENANT));
    let node = cfg["node"].as_str().unwrap().to_string();
    assert_eq!(node, "los-angeles-plant-001");
    let enroll = cfg["enroll"].as_table().unwrap();
    assert_eq!(
        enroll["hub_url"].as_str(),
        Some(format!("https://127.0.0.1:{api_port}").as_str())
    );
    assert_eq!(
        enroll["ca_cert"].as_str(),
        Some("/boot/efi/agog/hub-ca.pem")
    );
    assert_eq!(enroll["advertise_host"].as_str(), Some("203.0.113.45"));
    let token = enroll["bootstrap_token"].as_str().unwrap().to_string();
    assert!(token.starts_with("agog_bt_"), "{token}");
    let agent_check = dir.join("edge.toml");
    std::fs::write(&agent_check, &toml_text)?;
    let out = Command::new(bin_path::binary("edge-agent"))
        .args(["--config", &agent_check.to_string_lossy(), "status"])
        .output()?;
    assert_ne!(
        out.status.code(),
        Some(2),
        "the agent refuses the image's config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The hub keeps the config without the token.
    let kept: String = db
        .query_one(
            "SELECT edge_config FROM agog_hub.provisioning_requests WHERE facility_id = $1",
            &[&LA],
        )
        .await?
        .get(0);
    assert!(!kept.contains(&token) && kept.contains(LA), "{kept}");

    // The setup page: waiting, then online when the box enrolls with the image's token.
    b.client.goto(&setup).await?;
    b.wait_text("#setup-state", &["WAITING FOR FIRST CONNECTION"], T)
        .await?;
    b.screenshot("03-setup-waiting").await?;
    let mut edge = EdgeBox::new_enrolling(&EnrollingBoxConfig {
        node: &node,
        facility: LA,
        tenant: TENANT,
        region: "us-east",
        hub_url: format!("https://127.0.0.1:{api_port}"),
        token,
        ca_cert: p.ca_cert.clone(),
        reconcile_secs: 2,
    })?;
    edge.start()?;
    b.wait_text(
        "#setup-state",
        &["ONLINE", "connected"],
        Duration::from_secs(180),
    )
    .await
    .map_err(|e| e.context(format!("hub log:\n{}", hub.log())))?;
    b.screenshot("04-setup-online").await?;

    // A second request whose box never comes: after the configured days, an alert to the
    // operators and the IT contact (time moved on in the database), once.
    b.client.goto(&format!("{web}/provision/new")).await?;
    b.fill("tenant", TENANT).await?;
    b.fill("facility_name", "Los Angeles Plant").await?;
    b.fill("facility_address", "1300 Industrial Way, Los Angeles")
        .await?;
    select(&b, "hardware_size", "small").await?;
    b.fill("vpn_endpoint", "203.0.113.9:51820").await?;
    b.fill("it_contact_name", "Ana Lopez").await?;
    b.fill("it_contact_email", "ana.lopez@customer-corp.test")
        .await?;
    b.fill("it_contact_phone", "+1 415 555 0100").await?;
    submit(&b).await?;
    let second = "facility-los-angeles-plant-002";
    b.wait_text("h1", &[second], T).await?;
    b.wait_text("#image-status", &["READY"], T).await?;
    b.wait_text("#email-status", &["sent"], T).await?;
    db.execute(
        "UPDATE agog_hub.provisioning_requests SET image_ready_at = now() - interval '8 days'",
        &[],
    )
    .await?;
    let alert = wait_until("the not-enrolled alert", T, || async {
        Ok(mail.accepted().into_iter().find(|m| {
            m.subject.contains("has not connected yet")
                && m.envelope_to.iter().any(|t| t == "ops@agog.test")
        }))
    })
    .await?;
    assert!(alert.subject.contains(second), "{}", alert.subject);
    // ... and on the other channels (Slack here), with the IT contact to call.
    let chat_alert = wait_until("the not-enrolled alert on Slack", T, || async {
        Ok(chat.accepted().into_iter().find(|m| {
            m["text"]
                .as_str()
                .is_some_and(|t| t.contains("NOT ENROLLED") && t.contains(second))
        }))
    })
    .await?;
    let body = chat_alert.to_string();
    assert!(
        body.contains("Ana Lopez") && body.contains("+14155550100"),
        "{body}"
    );
    b.wait_text("#edge-state", &["not enrolled in time"], T)
        .await?;
    // Only the box that never enrolled is alerted, and only once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let alerts: Vec<String> = mail
        .accepted()
        .into_iter()
        .filter(|m| m.subject.contains("has not connected yet"))
        .map(|m| m.subject)
        .collect();
    assert!(alerts.iter().all(|s| s.contains(second)), "{alerts:?}");
    let on_chat: Vec<String> = chat
        .accepted()
        .into_iter()
        .filter_map(|m| m["text"].as_str().map(String::from))
        .filter(|t| t.contains("NOT ENROLLED"))
        .collect();
    assert_eq!(
        on_chat.len(),
        1,
        "once, for the box that never came: {on_chat:?}"
    );
    assert_eq!(
        alerts.len(),
        2,
        "operators and the IT contact, once: {alerts:?}"
    );
    // The Raspberry Pi image got its config on the MBR firmware partition.
    let pi: (String, String) = {
        let r = db
            .query_one("SELECT image_file, edge_config FROM agog_hub.provisioning_requests WHERE facility_id = $1", &[&second])
            .await?;
        (r.get(0), r.get(1))
    };
    let pi_toml = edge_toml_in(&std::fs::read(&pi.0)?, &dir).await?;
    assert!(
        pi_toml.contains("/boot/firmware/agog/hub-ca.pem"),
        "{pi_toml}"
    );
    assert!(pi_toml.contains("advertise_host"), "{pi_toml}");
    b.screenshot("05-not-enrolled").await?;
    b.close().await?;
    drop(edge);
    Ok(())
}
