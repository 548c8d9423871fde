//! `edge-agent run`: from a bare disk to a synced, self-healing node, then keep it so.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::watch;

use crate::config::{EdgeConfig, PostgresMode};
use crate::state::AgentState;
use crate::{health_server, postgres, probes, topology};

/// How long to wait after the hub refused the enrollment before asking again (a new token
/// may have been put in the token file meanwhile).
const REFUSED_RETRY: Duration = Duration::from_secs(600);

/// Enroll when the config asks for it and the box is not enrolled yet; `None` on a signal.
async fn enroll_first(cfg: &mut EdgeConfig, config_path: &std::path::Path) -> Result<Option<()>> {
    loop {
        let outcome = tokio::select! {
            r = crate::enroll::enroll(cfg) => r,
            _ = sync_core::signal::terminated() => return Ok(None),
        };
        match outcome {
            Ok(en) => {
                crate::enroll::apply(cfg, &en);
                return Ok(Some(()));
            }
            Err(crate::enroll::Failure::Refused { status, error }) => {
                tracing::error!(
                    status,
                    error = %error.error,
                    message = %error.message,
                    retry_in = ?REFUSED_RETRY,
                    "the hub refused the enrollment; fix: create a new token with `hub token create` and put it in the config (enroll.bootstrap_token or its file)"
                );
                tokio::select! {
                    _ = tokio::time::sleep(REFUSED_RETRY) => {}
                    _ = sync_core::signal::terminated() => return Ok(None),
                }
                // Pick up a new token from the config file.
                match EdgeConfig::load(config_path) {
                    Ok(fresh) => cfg.enroll = fresh.enroll,
                    Err(e) => tracing::warn!(error = %format!("{e:#}"), "config not re-read"),
                }
            }
            Err(e) => return Err(anyhow::anyhow!("enrollment failed: {e}")),
        }
    }
}

pub async fn run(mut cfg: EdgeConfig, enrolled: bool, config_path: &std::path::Path) -> Result<()> {
    if cfg.enroll.is_some() && !enrolled {
        if enroll_first(&mut cfg, config_path).await?.is_none() {
            tracing::info!("stopped before enrolling");
            return Ok(());
        }
    } else if enrolled {
        tracing::info!(node = ?cfg.node, "enrolled already: not enrolling again");
    }
    let topo = topology::edge_topology(&cfg).map_err(anyhow::Error::msg)?;
    let node = cfg.node_name().map_err(anyhow::Error::msg)?;
    let state = AgentState::new(cfg.clone());

    // /health answers from the first second ("starting"), before PostgreSQL exists.
    let listener = tokio::net::TcpListener::bind(cfg.health.listen)
        .await
        .with_context(|| format!("listen on {} for /health", cfg.health.listen))?;
    tracing::info!(addr = %cfg.health.listen, "serving /health");
    tokio::spawn(health_server::serve(state.clone(), listener));

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    // The tunnel first: PostgreSQL listens on its address, the upstream is reached through it.
    let mut extra_listen = Vec::new();
    // Stopped after PostgreSQL: its walsenders finish sending through the tunnel.
    let (tunnel_stop_tx, tunnel_stop_rx) = watch::channel(false);
    let tunnel_task = match (&cfg.tunnel, crate::enroll::load(&cfg)?) {
        (Some(tc), Some(en)) if en.response.tunnel.is_some() => {
            let settings = en.response.tunnel.clone().unwrap();
            extra_listen.extend(crate::tunnel::address_ip(&settings));
            match tc.kind {
                crate::config::TunnelKind::Wireguard => {
                    let mut t = crate::tunnel::Tunnel::new(&cfg, settings)?;
                    if let Err(e) = t.bring_up().await {
                        tracing::error!(error = %format!("{e:#}"), "cannot bring up the tunnel yet: retrying");
                    }
                    Some(tokio::spawn(t.watch(state.clone(), tunnel_stop_rx)))
                }
                crate::config::TunnelKind::Ipsec => {
                    let mut t = crate::tunnel_ipsec::IpsecTunnel::new(&cfg, settings)?;
                    if let Err(e) = t.bring_up().await {
                        tracing::error!(error = %format!("{e:#}"), "cannot bring up the IPsec tunnel yet: retrying");
                    }
                    Some(tokio::spawn(t.watch(state.clone(), tunnel_stop_rx)))
                }
                crate::config::TunnelKind::Openvpn => {
                    let mut t = crate::tunnel_openvpn::OpenVpnTunnel::new(&cfg, settings)?;
                    if let Err(e) = t.bring_up(Duration::from_secs(30)).await {
                        tracing::error!(error = %format!("{e:#}"), "the tunnel is not up yet: PostgreSQL starts without its tunnel address");
                    }
                    Some(tokio::spawn(t.watch(state.clone(), tunnel_stop_rx)))
                }
            }
        }
        (Some(_), _) => {
            tracing::warn!("[tunnel] is configured but the hub handed out no tunnel settings (no [tunnel] in its hub.toml, or not enrolled): no tunnel");
            None
        }
        (None, Some(en)) if en.response.tunnel.is_some() => {
            tracing::warn!("the hub handed out tunnel settings but this config has no [tunnel]: the hub reaches this box only if something else runs the tunnel");
            None
        }
        _ => None,
    };
    let supervisor = match cfg.postgres.mode {
        PostgresMode::Managed => {
            postgres::prepare(&cfg, &extra_listen).await?;
            Some(tokio::spawn(postgres::supervise(
                cfg.clone(),
                state.server.clone(),
                shutdown_rx.clone(),
            )))
        }
        PostgresMode::External => None,
    };

    tokio::spawn(probe_loop(state.clone()));
    tokio::spawn(reconcile_loop(state.clone(), topo, node));
    tokio::spawn(heartbeat_loop(state.clone()));

    sync_core::signal::terminated().await;
    tracing::info!("shutting down");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    let _ = shutdown_tx.send(true);
    if let Some(s) = supervisor {
        let _ = s.await;
    }
    let _ = tunnel_stop_tx.send(true);
    if let Some(t) = tunnel_task {
        let _ = t.await;
    }
    Ok(())
}

/// Probes on a schedule; tells systemd we are ready after the first complete probe, and pets
/// the watchdog only while probes keep completing (a hung agent gets restarted).
async fn probe_loop(state: Arc<AgentState>) {
    let interval = Duration::from_secs(state.config.health.probe_interval_secs.max(1));
    let mut told_ready = false;
    let mut watchdog_usec = 0u64;
    let watchdog_enabled = sd_notify::watchdog_enabled(false, &mut watchdog_usec);
    loop {
        let report = probes::probe(&state).await;
        let up = report.postgres.up;
        *state.report.lock().unwrap() = Some((Instant::now(), report));
        if up && !told_ready {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            told_ready = true;
        }
        if watchdog_enabled {
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
        }
        tokio::time::sleep(interval).await;
    }
}

/// Create the database if needed, reconcile this node, make sure the regional's role can read
/// what it subscribes to. At start and every `interval_secs`; a failure is retried sooner.
async fn reconcile_loop(
    state: Arc<AgentState>,
    topo: sync_core::Topology,
    node: sync_core::NodeName,
) {
    let cfg = &state.config;
    let interval = Duration::from_secs(cfg.reconcile.interval_secs.max(1));
    loop {
        let started = chrono::Utc::now();
        let outcome = reconcile_once(&state, &topo, &node).await;
        let retry = {
            let mut r = state.reconcile.lock().unwrap();
            r.last_run_at = Some(started.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
            match outcome {
                Ok(plan) => {
                    r.ok = true;
                    r.error = None;
                    r.steps_applied = plan.steps.len();
                    r.blocked = plan
                        .blocked
                        .iter()
                        .map(|b| format!("{}: {}", b.object, b.reason))
                        .collect();
                    !plan.blocked.is_empty()
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "reconcile failed");
                    r.ok = false;
                    r.error = Some(format!("{e:#}"));
                    true
                }
            }
        };
        let wait = if retry {
            interval.min(Duration::from_secs(5))
        } else {
            interval
        };
        tokio::time::sleep(wait).await;
    }
}

async fn reconcile_once(
    state: &AgentState,
    topo: &sync_core::Topology,
    node: &sync_core::NodeName,
) -> Result<sync_core::Plan> {
    let cfg = &state.config;
    if cfg.postgres.mode == PostgresMode::Managed && !state.server.up.load(Ordering::SeqCst) {
        anyhow::bail!("PostgreSQL is not up yet");
    }
    if cfg.postgres.mode == PostgresMode::Managed {
        postgres::ensure_database(cfg).await?;
    }
    let plan = sync_core::reconcile_node(topo, node).await?;
    if !plan.steps.is_empty() {
        tracing::info!("applied plan\n{plan}");
    }
    for b in &plan.blocked {
        tracing::warn!(object = %b.object, reason = %b.reason, "reconcile waiting");
    }
    ensure_replication_role(cfg).await?;
    Ok(plan)
}

/// The regional logs in with its own role: LOGIN REPLICATION, SELECT on what it copies, nothing else.
async fn ensure_replication_role(cfg: &EdgeConfig) -> Result<()> {
    let Some(up) = &cfg.upstream else {
        return Ok(());
    };
    let password = std::fs::read_to_string(&up.replication_password_file)
        .with_context(|| format!("read {}", up.replication_password_file.display()))?;
    let password = password.trim();
    let client = sync_core::connect(&cfg.local_conninfo()).await?;
    let role = sync_core::sql::ident(&up.replication_role);
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_roles WHERE rolname = $1",
            &[&up.replication_role],
        )
        .await?
        .is_some();
    let verb = if exists { "ALTER" } else { "CREATE" };
    client
        .batch_execute(&format!(
            "{verb} ROLE {role} LOGIN REPLICATION NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD {}",
            sync_core::sql::literal(password)
        ))
        .await?;
    let tables: Vec<String> = topology::published_tables()
        .iter()
        .map(|t| format!("public.{}", sync_core::sql::ident(t)))
        .collect();
    client
        .batch_execute(&format!(
            "GRANT USAGE ON SCHEMA public TO {role}; GRANT SELECT ON {} TO {role}",
            tables.join(", ")
        ))
        .await?;
    Ok(())
}

/// The heartbeat row: keeps the edge's slot moving on an idle database and proves to the
/// regional that data from this edge actually arrives.
async fn heartbeat_loop(state: Arc<AgentState>) {
    let cfg = &state.config;
    let every = Duration::from_secs(cfg.reconcile.heartbeat_secs.max(1));
    let mut client = None;
    loop {
        tokio::time::sleep(every).await;
        if client
            .as_ref()
            .is_none_or(|c: &tokio_postgres::Client| c.is_closed())
        {
            client = sync_core::connect(&cfg.local_conninfo()).await.ok();
        }
        let Some(c) = &client else { continue };
        let r = c
            .execute(
                "INSERT INTO public.edge_heartbeats (facility_id, tenant_id, region, beat_at, agent_version, schema_version)
                 VALUES ($1, $2, $3, now(), $4, $5)
                 ON CONFLICT (facility_id) DO UPDATE
                    SET beat_at = now(), agent_version = EXCLUDED.agent_version, schema_version = EXCLUDED.schema_version",
                &[
                    &cfg.facility.as_str(),
                    &cfg.tenant.as_str(),
                    &cfg.region.as_str(),
                    &env!("CARGO_PKG_VERSION"),
                    &sync_core::schema::latest_version(),
                ],
            )
            .await;
        if let Err(e) = r {
            tracing::debug!(error = %sync_core::apply::describe(&e), "heartbeat not written (yet)");
        }
    }
}
