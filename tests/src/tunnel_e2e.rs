//! What the tunnel end-to-end tests (tunnel_wireguard, tunnel_openvpn, tunnel_ipsec) share: the
//! underlay firewall, reachability probes, and reading the agent's and the alert
//! receiver's view of an edge.

use crate::edge_box::EdgeBox;
use crate::netns::Netns;
use crate::receivers::Recorder;

/// On the underlay interface `iface` of `ns`, only what `allow` accepts passes (nftables rules,
/// e.g. the tunnel's UDP port and, on the hub, the enrollment API); everything else is dropped.
pub fn firewall(ns: &Netns, iface: &str, allow: &str) -> anyhow::Result<()> {
    let rules = format!(
        "table inet agog_test {{
  chain input {{
    type filter hook input priority 0; policy accept;
    iifname != \"{iface}\" accept
    ct state established,related accept
    {allow}
    drop
  }}
}}
"
    );
    let path = std::env::temp_dir().join(format!("{}.nft", ns.name));
    std::fs::write(&path, rules)?;
    ns.run("nft", &["-f", path.to_str().unwrap()])?;
    let _ = std::fs::remove_file(path);
    Ok(())
}

/// Whether a TCP connection from `ns` to `addr:port` opens within 2 s.
pub fn tcp_opens(ns: &Netns, addr: &str, port: u16) -> bool {
    ns.command("timeout")
        .args([
            "2",
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{addr}/{port}"),
        ])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The agent's own report (`edge-agent status --json`).
pub async fn edge_report(edge: &EdgeBox) -> anyhow::Result<serde_json::Value> {
    let (_, out) = edge.cli(&["status", "--json"])?;
    Ok(serde_json::from_str(&out)?)
}

/// Slack messages saying `facility` is in `state` (OFFLINE, RECOVERED...).
pub fn slack_count(r: &Recorder<serde_json::Value>, facility: &str, state: &str) -> usize {
    r.accepted()
        .iter()
        .filter(|m| {
            let t = m["text"].as_str().unwrap_or_default();
            t.contains(&format!("{state}: ")) && t.contains(&format!("({facility})"))
        })
        .count()
}

/// `key=value` of the first log line containing `marker`.
pub fn log_field(log: &str, marker: &str, key: &str) -> Option<u64> {
    let line = log.lines().find(|l| l.contains(marker))?;
    // Without the terminal colours.
    let mut plain = String::new();
    let mut in_escape = false;
    for c in line.chars() {
        match (in_escape, c) {
            (false, '\x1b') => in_escape = true,
            (true, 'm') => in_escape = false,
            (true, _) => {}
            (false, c) => plain.push(c),
        }
    }
    let line = plain;
    let rest = &line[line.find(&format!("{key}="))? + key.len() + 1..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}
