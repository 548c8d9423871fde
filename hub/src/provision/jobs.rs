//! The steps after the form, done by whichever hub replica takes the request's lease: the
//! hardware order (procurement webhook), the image, the IT contact's email, and the alert when
//! the box has not enrolled in time. Each step records its outcome before the next starts, so
//! a replica that dies repeats at most the step it was in (the order and the email carry the
//! facility id, so the receiver can tell a repeat).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tokio_postgres::Client;

use super::config::ProvisionConfig;
use super::request::{self, Provisioned};
use super::{image, instructions};
use crate::config::HubConfig;
use crate::notify::{Channel, Delivery, Facility, Incident};

/// How long a replica holds a request while working on it (an image build fits in it).
const LEASE_SECS: f64 = 900.0;

/// Take one request that has work due, if any.
async fn claim(db: &Client, replica: &str, alert_days: f64) -> anyhow::Result<Option<Provisioned>> {
    let row = db
        .query_opt(
            "UPDATE agog_hub.provisioning_requests SET lease_owner = $1,
                    lease_until = now() + make_interval(secs => $2)
              WHERE id = (
                SELECT p.id FROM agog_hub.provisioning_requests p
                 WHERE (p.lease_until IS NULL OR p.lease_until < now())
                   AND p.next_attempt_at <= now()
                   AND (p.order_status = 'pending' OR p.image_status IN ('queued', 'building')
                        OR (p.image_status = 'ready' AND p.email_status = 'pending')
                        OR (p.image_status = 'ready' AND p.not_enrolled_alert_at IS NULL
                            AND p.image_ready_at < now() - make_interval(secs => $3)
                            AND NOT EXISTS (SELECT 1 FROM agog_hub.edges e WHERE e.facility_id = p.facility_id)))
                 ORDER BY p.next_attempt_at, p.id
                 LIMIT 1 FOR UPDATE SKIP LOCKED)
             RETURNING facility_id",
            &[&replica, &LEASE_SECS, &(alert_days * 86400.0)],
        )
        .await?;
    match row {
        Some(r) => Ok(request::by_facility(db, r.get::<_, String>(0).as_str(), None).await?),
        None => Ok(None),
    }
}

/// Exponential backoff for the order and the email: 5 s, 10 s, ... up to 10 min.
fn backoff(attempts: i32) -> f64 {
    (5.0 * 2f64.powi(attempts.clamp(0, 10))).min(600.0)
}

async fn release(db: &Client, facility: &str, retry_in: Option<f64>) -> anyhow::Result<()> {
    db.execute(
        "UPDATE agog_hub.provisioning_requests SET lease_owner = NULL, lease_until = NULL,
                next_attempt_at = now() + make_interval(secs => $2)
          WHERE facility_id = $1",
        &[&facility, &retry_in.unwrap_or(0.0)],
    )
    .await?;
    Ok(())
}

/// The hardware order: a JSON POST the procurement system takes.
async fn order(
    cfg: &ProvisionConfig,
    db: &Client,
    p: &Provisioned,
    http: &reqwest::Client,
) -> anyhow::Result<Option<f64>> {
    let Some(url) = &cfg.procurement_webhook else {
        return Ok(None);
    };
    let body = serde_json::json!({
        "type": "agog.edge_hardware_order",
        "facility_id": p.facility_id,
        "tenant_id": p.tenant_id,
        "facility_name": p.facility_name,
        "hardware_size": p.hardware_size,
        "hardware": match p.hardware_size.as_str() {
            "small" => "Raspberry Pi 4 (aarch64)",
            "medium" => "Intel NUC (x86_64)",
            _ => "Server (x86_64)",
        },
        "ship_to": {"name": p.it_name, "address": p.shipping_address, "phone": p.it_phone, "email": p.it_email},
        "requested_by": p.requested_by,
        "requested_at": p.requested_at,
    });
    let sent = http
        .post(url)
        .header("Idempotency-Key", format!("agog-order-{}", p.facility_id))
        .json(&body)
        .send()
        .await;
    let (ok, detail) = match sent {
        Ok(r) if r.status().is_success() => {
            (true, format!("accepted: HTTP {}", r.status().as_u16()))
        }
        Ok(r) => (false, format!("HTTP {}", r.status().as_u16())),
        Err(e) => (false, format!("{e}")),
    };
    let attempts: i32 = db
        .query_one(
            "UPDATE agog_hub.provisioning_requests SET order_attempts = order_attempts + 1,
                    order_status = CASE WHEN $2 THEN 'sent' WHEN order_attempts + 1 >= $4 THEN 'failed' ELSE 'pending' END,
                    order_detail = $3
              WHERE facility_id = $1 RETURNING order_attempts",
            &[&p.facility_id, &ok, &detail, &cfg.max_attempts],
        )
        .await?
        .get(0);
    tracing::info!(facility = %p.facility_id, ok, detail, attempts, "hardware order");
    Ok((!ok && attempts < cfg.max_attempts).then(|| backoff(attempts)))
}

async fn build_image(
    cfg: &ProvisionConfig,
    db: Arc<Client>,
    p: &Provisioned,
) -> anyhow::Result<()> {
    db.execute(
        "UPDATE agog_hub.provisioning_requests SET image_status = 'building' WHERE facility_id = $1",
        &[&p.facility_id],
    )
    .await?;
    let facility = p.facility_id.clone();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    // Progress goes to the page as the build moves on.
    let writer = {
        let db = db.clone();
        tokio::spawn(async move {
            while let Some(step) = rx.recv().await {
                let _ = db
                    .execute(
                        "UPDATE agog_hub.provisioning_requests SET image_progress = $2 WHERE facility_id = $1",
                        &[&facility, &step],
                    )
                    .await;
            }
        })
    };
    let progress = move |s: String| {
        let _ = tx.send(s);
    };
    let built = image::build(cfg, p, &progress).await;
    drop(progress);
    let _ = writer.await;
    match built {
        Ok(b) => {
            let token = p
                .edge_config
                .lines()
                .find_map(|l| l.trim().strip_prefix("bootstrap_token = \""))
                .and_then(|t| t.strip_suffix('"'))
                .unwrap_or_default()
                .to_owned();
            let kept = super::edge_config::redacted(&p.edge_config, &token);
            db.execute(
                "UPDATE agog_hub.provisioning_requests SET image_status = 'ready', image_progress = 'ready',
                        image_file = $2, image_sha256 = $3, image_bytes = $4, image_ready_at = now(),
                        edge_config = $5
                  WHERE facility_id = $1",
                &[&p.facility_id, &b.file.to_string_lossy().as_ref(), &b.sha256, &(b.bytes as i64), &kept],
            )
            .await?;
            tracing::info!(facility = %p.facility_id, sha256 = %b.sha256, bytes = b.bytes, "edge image ready");
        }
        Err(e) => {
            let msg = format!("{e:#}");
            tracing::warn!(facility = %p.facility_id, error = %msg, "edge image failed");
            db.execute(
                "UPDATE agog_hub.provisioning_requests SET image_status = 'failed', image_progress = $2
                  WHERE facility_id = $1",
                &[&p.facility_id, &msg],
            )
            .await?;
        }
    }
    Ok(())
}

async fn email(
    hub: &HubConfig,
    cfg: &ProvisionConfig,
    db: &Client,
    p: &Provisioned,
) -> anyhow::Result<Option<f64>> {
    let (subject, text) = instructions::setup_email(hub, cfg, p);
    let sent =
        crate::fallback::notice::send(hub, std::slice::from_ref(&p.it_email), &subject, &text)
            .await;
    let (ok, detail) = match sent {
        Ok(Some(d)) if d.is_delivered() => (true, format!("{d:?}")),
        Ok(Some(d)) => (false, format!("{d:?}")),
        Ok(None) => (false, "no email channel in [[alerts.channels]]".to_string()),
        Err(e) => (false, e),
    };
    let attempts: i32 = db
        .query_one(
            "UPDATE agog_hub.provisioning_requests SET email_attempts = email_attempts + 1,
                    email_status = CASE WHEN $2 THEN 'sent' WHEN email_attempts + 1 >= $4 THEN 'failed' ELSE 'pending' END,
                    email_detail = $3
              WHERE facility_id = $1 RETURNING email_attempts",
            &[&p.facility_id, &ok, &detail, &cfg.max_attempts],
        )
        .await?
        .get(0);
    tracing::info!(facility = %p.facility_id, ok, detail, "setup instructions email");
    Ok((!ok && attempts < cfg.max_attempts).then(|| backoff(attempts)))
}

/// The box has not enrolled N days after its image was ready: an email with what to do to the
/// operators' email recipients and the IT contact, and an alert on every other channel
/// (PagerDuty, Slack, Teams, Twilio) to their own targets.
async fn not_enrolled(
    hub: &HubConfig,
    cfg: &ProvisionConfig,
    db: &Client,
    p: &Provisioned,
) -> anyhow::Result<()> {
    let (subject, text) = instructions::not_enrolled(hub, cfg, p);
    // The channel's own recipients (the operators), then the IT contact.
    let ops = crate::fallback::notice::send(hub, &[], &subject, &text).await;
    let it = crate::fallback::notice::send(hub, std::slice::from_ref(&p.it_email), &subject, &text)
        .await;
    let others = alert_channels(hub, p).await;
    tracing::warn!(facility = %p.facility_id, ?ops, ?it, ?others, "provisioned edge has not enrolled");
    db.execute(
        "UPDATE agog_hub.provisioning_requests SET not_enrolled_alert_at = now() WHERE facility_id = $1",
        &[&p.facility_id],
    )
    .await?;
    Ok(())
}

/// The NOT ENROLLED alert on every channel but email (which carried the fuller notice above).
/// Sent once, with each channel's own retries: the box has no facility row yet, so it does not
/// go through the incident outbox.
async fn alert_channels(hub: &HubConfig, p: &Provisioned) -> Vec<(String, Delivery)> {
    let Some(ready) = p.image_ready_at else {
        return Vec::new();
    };
    let facility = Facility {
        id: p.facility_id.clone(),
        name: p.facility_name.clone(),
        region: hub.region.to_string(),
    };
    let alert = match Incident::not_enrolled(facility, ready) {
        Ok(i) => i.never_enrolled(
            chrono::Utc::now(),
            &format!("{} ({}, {})", p.it_name, p.it_phone, p.it_email),
        ),
        Err(e) => {
            tracing::warn!(facility = %p.facility_id, error = %e, "no not-enrolled alert");
            return Vec::new();
        }
    };
    let mut sent = Vec::new();
    for c in hub.alerts.channels.iter() {
        let channel = match Channel::new(c.channel.clone()) {
            Ok(ch) if ch.kind() != "email" => ch,
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(channel = %c.name, error = %e, "alert channel unusable");
                continue;
            }
        };
        sent.push((c.name.clone(), channel.send(&alert).await));
    }
    sent
}

/// One request: every step that is due, in order.
async fn work(
    hub: &HubConfig,
    cfg: &ProvisionConfig,
    db: Arc<Client>,
    p: Provisioned,
    http: &reqwest::Client,
) -> anyhow::Result<()> {
    let mut retry: Option<f64> = None;
    if p.order_status == "pending" {
        retry = order(cfg, &db, &p, http).await?;
    }
    if matches!(p.image_status.as_str(), "queued" | "building") {
        build_image(cfg, db.clone(), &p).await?;
    }
    let p = request::by_facility(&*db, &p.facility_id, None)
        .await?
        .ok_or_else(|| anyhow::anyhow!("request {} vanished", p.facility_id))?;
    if p.image_status == "ready" && p.email_status == "pending" {
        if let Some(r) = email(hub, cfg, &db, &p).await? {
            retry = Some(retry.map_or(r, |o| o.min(r)));
        }
    }
    let due = p.image_ready_at.is_some_and(|t| {
        (Utc::now() - t).num_milliseconds() as f64 / 1000.0 > cfg.not_enrolled_alert_days * 86400.0
    });
    if due && p.enrolled_at.is_none() && p.not_enrolled_alert_at.is_none() {
        not_enrolled(hub, cfg, &db, &p).await?;
    }
    release(&db, &p.facility_id, retry).await
}

/// Until `stop`: take requests with work due and do it.
pub async fn run(hub: Arc<HubConfig>, mut stop: watch::Receiver<bool>) {
    let Some(cfg) = hub.provision.clone() else {
        return;
    };
    let replica = hub.replica_id();
    let poll = Duration::from_millis(cfg.poll_ms.max(100));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap_or_default();
    let mut db: Option<Arc<Client>> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        if db.as_ref().is_none_or(|c| c.is_closed()) {
            db = crate::db::connect_and_migrate(&hub.database)
                .await
                .map_err(|e| tracing::warn!(error = %format!("{e:#}"), "provisioning: no regional database"))
                .ok()
                .map(Arc::new);
        }
        if let Some(c) = &db {
            match claim(c, &replica, cfg.not_enrolled_alert_days).await {
                Ok(Some(p)) => {
                    let facility = p.facility_id.clone();
                    if let Err(e) = work(&hub, &cfg, c.clone(), p, &http).await {
                        tracing::warn!(facility, error = %format!("{e:#}"), "provisioning step failed");
                        let _ = release(c, &facility, Some(30.0)).await;
                    }
                    continue;
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %format!("{e:#}"), "provisioning: claim failed"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = stop.changed() => return,
        }
    }
}
