//! `edge-agent doctor`: checks each part an edge depends on; every failure comes with a
//! one-line fix. Exit status 1 when any check fails.

use std::time::Duration;

use serde::Serialize;

use crate::config::EdgeConfig;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub outcome: Outcome,
    pub detail: String,
    pub fix: Option<String>,
}

fn ok(name: &str, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        outcome: Outcome::Ok,
        detail: detail.into(),
        fix: None,
    }
}
fn bad(name: &str, outcome: Outcome, detail: impl Into<String>, fix: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        outcome,
        detail: detail.into(),
        fix: Some(fix.into()),
    }
}

pub async fn run(cfg: &EdgeConfig) -> Vec<Check> {
    let mut checks = Vec::new();
    match crate::status::fetch(cfg).await {
        Ok(r) => checks.push(ok(
            "agent",
            format!("running, v{}, status {}", r.version, r.status.as_str()),
        )),
        Err(e) => checks.push(bad(
            "agent",
            Outcome::Fail,
            e,
            "systemctl restart agog-edge-agent; journalctl -u agog-edge-agent -n 50",
        )),
    }
    checks.extend(tunnel_checks(cfg).await);
    let client = match tokio::time::timeout(
        Duration::from_secs(5),
        sync_core::connect(&cfg.local_conninfo()),
    )
    .await
    {
        Ok(Ok(c)) => {
            checks.push(ok("postgres", "accepting connections"));
            Some(c)
        }
        Ok(Err(e)) => {
            checks.push(bad(
                "postgres",
                Outcome::Fail,
                sync_core::apply::describe(&e),
                "the agent restarts PostgreSQL by itself; if this persists: journalctl -u agog-edge-agent | grep postgres",
            ));
            None
        }
        Err(_) => {
            checks.push(bad(
                "postgres",
                Outcome::Fail,
                "no answer in 5 s",
                "check the disk and memory: df -h; free -m",
            ));
            None
        }
    };
    if let Some(c) = &client {
        checks.extend(database_checks(c).await);
    }
    if let Some((free, total)) = crate::disk::usage(&cfg.postgres.data_dir) {
        let share = free as f64 / total.max(1) as f64;
        if share < 0.10 {
            checks.push(bad(
                "disk",
                Outcome::Fail,
                format!("{} MB free of {} MB", free >> 20, total >> 20),
                "free space on the data disk; WAL kept for an offline regional is bounded by max_slot_wal_keep_size",
            ));
        } else {
            checks.push(ok(
                "disk",
                format!("{} MB free of {} MB", free >> 20, total >> 20),
            ));
        }
    }
    if let Some(up) = &cfg.upstream {
        checks.push(upstream_check(&up.master_conninfo).await);
    } else {
        checks.push(bad(
            "upstream",
            Outcome::Warn,
            "not enrolled: no regional configured",
            "edge-agent enroll (or check the bootstrap token in the config)",
        ));
    }
    checks
}

async fn database_checks(c: &tokio_postgres::Client) -> Vec<Check> {
    let mut out = Vec::new();
    let latest = sync_core::schema::latest_version();
    match sync_core::schema::current_version(c).await {
        Ok(Some(v)) if v >= latest => out.push(ok("schema", format!("v{v}"))),
        Ok(v) => out.push(bad(
            "schema",
            Outcome::Fail,
            format!("v{} installed, this agent ships v{latest}", v.unwrap_or(0)),
            "restart the agent: it applies migrations at start",
        )),
        Err(e) => out.push(bad(
            "schema",
            Outcome::Fail,
            sync_core::apply::describe(&e),
            "restart the agent",
        )),
    }
    let subs = c
        .query(
            "SELECT s.subname::text, s.subenabled, w.pid IS NOT NULL, coalesce(st.apply_error_count, 0)
               FROM pg_subscription s
               LEFT JOIN pg_stat_subscription w ON w.subid = s.oid AND w.relid IS NULL
               LEFT JOIN pg_stat_subscription_stats st ON st.subid = s.oid
              WHERE s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await;
    match subs {
        Ok(rows) if rows.is_empty() => out.push(bad(
            "subscriptions",
            Outcome::Warn,
            "no subscription yet: master data does not arrive",
            "wait for the first reconcile (edge-agent status shows why it waits)",
        )),
        Ok(rows) => {
            for r in rows {
                let (name, enabled, running, errors): (String, bool, bool, i64) =
                    (r.get(0), r.get(1), r.get(2), r.get(3));
                let check = format!("subscription {name}");
                if !enabled {
                    out.push(bad(
                        &check,
                        Outcome::Fail,
                        "disabled: master data has stopped arriving",
                        format!("psql agog -c 'ALTER SUBSCRIPTION {name} ENABLE' (the agent's next reconcile also enables it)"),
                    ));
                } else if !running {
                    out.push(bad(
                        &check,
                        Outcome::Fail,
                        format!("enabled but no apply worker is running ({errors} apply errors so far)"),
                        "journalctl -u agog-edge-agent | grep 'logical replication' shows the error; check the tunnel to the regional",
                    ));
                } else {
                    out.push(ok(
                        &check,
                        format!("streaming ({errors} apply errors so far)"),
                    ));
                }
            }
        }
        Err(e) => out.push(bad(
            "subscriptions",
            Outcome::Fail,
            sync_core::apply::describe(&e),
            "restart the agent",
        )),
    }
    match sync_core::catalog::read_slots(c).await {
        Ok(slots) => {
            for (name, s) in slots {
                let check = format!("slot {name}");
                match s.wal_status.as_deref() {
                    Some("lost") => out.push(bad(&check, Outcome::Fail, "its WAL was removed: the regional can no longer stream from it", "the agent resyncs it; if not: edge-agent doctor again after the next reconcile")),
                    Some("unreserved") => out.push(bad(&check, Outcome::Warn, "past max_slot_wal_keep_size: WAL will be removed at the next checkpoint", "bring the regional's subscription back (tunnel, hub) before it is lost")),
                    _ if !s.active => out.push(bad(&check, Outcome::Warn, format!("inactive, retaining {} MB", s.retained_bytes.unwrap_or(0) >> 20), "the regional is not streaming: check the tunnel and the hub")),
                    _ => out.push(ok(&check, format!("active, retaining {} KB", s.retained_bytes.unwrap_or(0) >> 10))),
                }
            }
        }
        Err(e) => out.push(bad(
            "slots",
            Outcome::Fail,
            sync_core::apply::describe(&e),
            "restart the agent",
        )),
    }
    out
}

/// The master-data publisher is reachable, and our clock agrees with its clock (a box without
/// a clock battery may have booted in 1970).
async fn upstream_check(conninfo: &str) -> Check {
    let connect = tokio::time::timeout(Duration::from_secs(5), sync_core::connect(conninfo)).await;
    let c =
        match connect {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return bad(
                "upstream",
                Outcome::Fail,
                sync_core::apply::describe(&e),
                "check the VPN tunnel and the hub's address (edge-agent status shows the tunnel)",
            ),
            Err(_) => {
                return bad(
                    "upstream",
                    Outcome::Fail,
                    "no answer in 5 s",
                    "check the VPN tunnel (endpoint reachable? handshake?)",
                )
            }
        };
    let local = chrono::Utc::now();
    match c
        .query_one("SELECT extract(epoch FROM now())::float8", &[])
        .await
    {
        Ok(r) => {
            let remote: f64 = r.get(0);
            let skew = local.timestamp_millis() as f64 / 1000.0 - remote;
            if skew.abs() > 5.0 {
                bad(
                    "clock",
                    Outcome::Fail,
                    format!("this box's clock is {skew:+.0} s off the regional's"),
                    "enable time sync: timedatectl set-ntp true",
                )
            } else {
                ok(
                    "upstream",
                    format!(
                        "reachable, clock within {:.1} s of the regional's",
                        skew.abs()
                    ),
                )
            }
        }
        Err(e) => bad(
            "upstream",
            Outcome::Fail,
            sync_core::apply::describe(&e),
            "check the replication credentials from enrollment",
        ),
    }
}

/// The tunnel: the interface exists with this box's key, the hub is its peer, there is a route
/// to the hub's endpoint, and a recent handshake.
async fn tunnel_checks(cfg: &EdgeConfig) -> Vec<Check> {
    let Some(t) = &cfg.tunnel else {
        return vec![];
    };
    let settings = match crate::enroll::load(cfg) {
        Ok(Some(en)) => match en.response.tunnel {
            Some(s) => s,
            None => {
                return vec![bad(
                    "tunnel",
                    Outcome::Fail,
                    "the hub handed out no tunnel settings at enrollment",
                    "add [tunnel] to the hub's hub.toml, then decommission and re-enroll this box",
                )]
            }
        },
        Ok(None) => {
            return vec![bad(
                "tunnel",
                Outcome::Fail,
                "not enrolled yet: the tunnel settings come with the enrollment",
                "edge-agent enroll (or start the agent, which enrolls first)",
            )]
        }
        Err(e) => return vec![bad("tunnel", Outcome::Fail, format!("{e:#}"), "re-enroll")],
    };
    let mut out = Vec::new();
    if t.kind == crate::config::TunnelKind::Ipsec {
        let conf = cfg
            .enroll
            .as_ref()
            .map(|e| e.state_dir.join("tunnel/ipsec/strongswan.conf"))
            .unwrap_or_default();
        let conn = format!("agog-{}", cfg.facility);
        out.push(match sync_core::ipsec::sa_up(&conf, &conn) {
            Ok(true) => ok("tunnel", format!("IPsec SA {conn} established with {}", settings.hub_endpoint)),
            Ok(false) => bad(
                "tunnel",
                Outcome::Fail,
                format!("no IPsec SA with the hub at {}", settings.hub_endpoint),
                format!("check that UDP 500 and 4500 to {} pass every firewall, and that the hub has this box's public key (re-enroll if state_dir/ipsec.key was replaced); state_dir/tunnel/ipsec/charon.log says why", settings.hub_endpoint),
            ),
            Err(e) => bad(
                "tunnel",
                Outcome::Fail,
                format!("charon does not answer: {e:#}"),
                "the agent runs charon: systemctl restart agog-edge-agent; are charon-systemd and libcharon-extra-plugins installed?",
            ),
        });
        return out;
    }
    if t.kind == crate::config::TunnelKind::Openvpn {
        let Some(sock) = crate::tunnel_openvpn::management_socket(cfg) else {
            return out;
        };
        out.push(match crate::tunnel_openvpn::query_state(&sock).await {
            Ok((state, _, ip)) if state == "CONNECTED" => ok(
                "tunnel",
                format!("openvpn connected to {} as {ip}", settings.hub_endpoint),
            ),
            Ok((state, _, _)) => bad(
                "tunnel",
                Outcome::Fail,
                format!("openvpn is {state}, not connected to {}", settings.hub_endpoint),
                format!("check that UDP to {} passes every firewall and that this box's certificate is signed by the server's CA and not revoked (state_dir/tunnel/openvpn.log says why)", settings.hub_endpoint),
            ),
            Err(e) => bad(
                "tunnel",
                Outcome::Fail,
                format!("openvpn's management interface at {}: {e:#}", sock.display()),
                "the agent runs openvpn: systemctl restart agog-edge-agent; is the openvpn package installed?",
            ),
        });
        return out;
    }
    let dev = match sync_core::wg::read_any(&t.interface) {
        Ok(d) => d,
        Err(e) => {
            return vec![bad(
                "tunnel",
                Outcome::Fail,
                format!("interface {} is not there: {e:#}", t.interface),
                "the agent brings it up: systemctl restart agog-edge-agent; journalctl -u agog-edge-agent | grep tunnel (without kernel WireGuard it needs wireguard-go installed)",
            )]
        }
    };
    let ours = crate::tunnel::key_path(cfg)
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|k| sync_core::wg::Key::from_base64(k.trim()).ok())
        .map(|k| k.get_public().to_base64());
    if ours.is_some() && dev.public_key != ours {
        out.push(bad(
            "tunnel key",
            Outcome::Fail,
            format!(
                "wrong key: {} runs with public key {}, this box enrolled with {}",
                t.interface,
                dev.public_key.as_deref().unwrap_or("none"),
                ours.as_deref().unwrap_or("?")
            ),
            "restart the agent (it sets the key from its state directory); if wireguard.key was replaced, decommission and re-enroll the box",
        ));
    }
    let Some(hub) = dev
        .peers
        .iter()
        .find(|p| p.public_key == settings.hub_public_key)
    else {
        out.push(bad(
            "tunnel peer",
            Outcome::Fail,
            format!(
                "wrong key: the hub's key {} is not a peer of {}",
                settings.hub_public_key, t.interface
            ),
            "restart the agent; if the hub's key changed (new hub.toml key file), re-enroll the box",
        ));
        return out;
    };
    let endpoint_ip = hub
        .endpoint
        .map(|e| e.ip().to_string())
        .or_else(|| {
            settings
                .hub_endpoint
                .rsplit_once(':')
                .map(|(h, _)| h.to_string())
        })
        .unwrap_or_default();
    let route = tokio::process::Command::new("ip")
        .args(["route", "get", &endpoint_ip])
        .output()
        .await;
    if !route.as_ref().is_ok_and(|o| o.status.success()) {
        out.push(bad(
            "tunnel endpoint",
            Outcome::Fail,
            format!(
                "endpoint unreachable: no route to the hub's endpoint {} ({})",
                settings.hub_endpoint,
                route
                    .map(|o| String::from_utf8_lossy(&o.stderr).trim().to_string())
                    .unwrap_or_else(|e| e.to_string())
            ),
            "check this box's uplink (cable, default route: ip route) and the hub's endpoint address",
        ));
    }
    let age = hub
        .last_handshake
        .and_then(|h| std::time::SystemTime::now().duration_since(h).ok());
    match age {
        Some(a) if a.as_secs() <= t.handshake_timeout_secs => out.push(ok(
            "tunnel",
            format!(
                "{} up, last handshake {} s ago, {} B in, {} B out",
                t.interface,
                a.as_secs(),
                hub.rx_bytes,
                hub.tx_bytes
            ),
        )),
        _ => out.push(bad(
            "tunnel",
            Outcome::Fail,
            format!(
                "no handshake with the hub at {}{} ({} B sent, {} B received)",
                settings.hub_endpoint,
                age.map(|a| format!(" for {} s", a.as_secs())).unwrap_or_default(),
                hub.tx_bytes,
                hub.rx_bytes
            ),
            if hub.rx_bytes == 0 {
                format!(
                    "nothing comes back: check that UDP to {} passes every firewall on the way, that the hub runs with [tunnel], and that the hub has this box's key (hub edges --json: wireguard_public_key {})",
                    settings.hub_endpoint,
                    ours.as_deref().unwrap_or("?")
                )
            } else {
                "the hub answered before: the link or the hub went away; the agent reconnects by itself once it is back".to_string()
            },
        )),
    }
    out
}

pub fn render(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks {
        let mark = match c.outcome {
            Outcome::Ok => "ok  ",
            Outcome::Warn => "warn",
            Outcome::Fail => "FAIL",
        };
        s += &format!("[{mark}] {}: {}\n", c.name, c.detail);
        if let Some(f) = &c.fix {
            s += &format!("       fix: {f}\n");
        }
    }
    s
}
