//! `hub serve`: the monitor, the alert outbox, the lag sampler, the regional reconcile,
//! (with `[api]`) the HTTPS API, (with `[web]`) the dashboard and (with `[metrics]`)
//! `/metrics` of one replica, until SIGTERM.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{watch, Notify};

use crate::config::HubConfig;
use crate::monitor::outbox::Outbox;
use crate::monitor::Monitor;
use crate::notify::Channel;

pub async fn serve(cfg: HubConfig) -> anyhow::Result<()> {
    let mut channels = HashMap::new();
    for c in &cfg.alerts.channels {
        let ch =
            Channel::new(c.channel.clone()).with_context(|| format!("alert channel {}", c.name))?;
        channels.insert(c.name.clone(), ch);
    }
    let monitor_db = crate::db::connect_and_migrate(&cfg.database).await?;
    let transitions_db = crate::db::connect_and_migrate(&cfg.database).await?;
    let outbox_db = crate::db::connect_and_migrate(&cfg.database).await?;
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let monitor = Arc::new(Monitor::new(&cfg, metrics.clone()));
    let outbox = Outbox {
        replica: cfg.replica_id(),
        channels,
    };
    tracing::info!(replica = %monitor.replica, region = %cfg.region, "hub serving");

    let (stop_tx, stop_rx) = watch::channel(false);
    let tick = Duration::from_millis(cfg.monitor.tick_ms.max(50));
    let m = tokio::spawn(
        monitor
            .clone()
            .run(monitor_db, transitions_db, tick, stop_rx.clone()),
    );
    let mut stop = stop_rx.clone();
    let o = tokio::spawn(async move {
        loop {
            if let Err(e) = outbox.dispatch(&outbox_db).await {
                tracing::warn!(error = %format!("{e:#}"), "alert dispatch failed");
            }
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = stop.changed() => return,
            }
        }
    });
    let metrics_server = match cfg.metrics.listen {
        Some(listen) => {
            let db = crate::db::connect_and_migrate(&cfg.database).await?;
            Some(crate::metrics::serve(listen, metrics, db, stop_rx.clone()).await?)
        }
        None => None,
    };
    let cfg = Arc::new(cfg);
    let lag = tokio::spawn(crate::lag::run(cfg.clone(), stop_rx.clone()));
    let provisioning = tokio::spawn(crate::provision::jobs::run(cfg.clone(), stop_rx.clone()));
    let wake = Arc::new(Notify::new());
    let r = tokio::spawn(crate::regional::run(
        cfg.clone(),
        wake.clone(),
        stop_rx.clone(),
    ));
    let tunnel_wake = Arc::new(Notify::new());
    let tunnel = tokio::spawn(crate::tunnel::run(
        cfg.clone(),
        tunnel_wake.clone(),
        stop_rx.clone(),
    ));
    let api = match cfg.api.clone() {
        Some(api) => {
            Some(crate::api::serve(cfg.clone(), api, wake, tunnel_wake, stop_rx.clone()).await?)
        }
        None => None,
    };
    let web = match cfg.web.clone() {
        Some(web) => Some(crate::web::serve(cfg.clone(), web, stop_rx.clone()).await?),
        None => None,
    };
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    sync_core::signal::terminated().await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    let _ = m.await;
    let _ = o.await;
    let _ = r.await;
    let _ = lag.await;
    let _ = tunnel.await;
    let _ = provisioning.await;
    if let Some(h) = metrics_server {
        let _ = h.await;
    }
    if let Some(a) = api {
        let _ = a.await;
    }
    if let Some(w) = web {
        let _ = w.await;
    }
    Ok(())
}
