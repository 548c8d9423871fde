//! The edge's `edge.toml` as the provisioned image carries it (template `edge.toml.j2`).
//! Every value put in it was checked by the form (ids, addresses, host names: no quote or
//! newline can reach the TOML), and the result is parsed back before it is used.

use chrono::{DateTime, Utc};
use minijinja::{context, Environment};

use super::config::ProvisionConfig;
use super::form::{Network, Request};

const TEMPLATE: &str = include_str!("edge.toml.j2");
const NETWORK: &str = include_str!("network.j2");

pub struct Rendered {
    /// The hub runs `[tunnel]`: it reaches the box at the tunnel address it assigns.
    pub hub_tunnel: bool,
    pub facility_id: String,
    pub node: String,
    pub region: String,
    pub token: String,
    pub token_expires: DateTime<Utc>,
    pub made_at: DateTime<Utc>,
    /// The box's tunnel address, reserved with the request (with `[tunnel]`).
    pub tunnel_address: Option<std::net::Ipv4Addr>,
}

/// The files on the boot partition: `edge.toml` and the systemd-networkd `10-agog.network`.
pub struct Files {
    pub edge_toml: String,
    pub network: String,
}

pub fn render(cfg: &ProvisionConfig, r: &Request, v: &Rendered) -> Result<Files, String> {
    let mut env = Environment::new();
    env.add_template("edge.toml", TEMPLATE)
        .map_err(|e| e.to_string())?;
    env.add_template("network", NETWORK)
        .map_err(|e| e.to_string())?;
    // With `[tunnel]` the hub reaches the box at the tunnel address it assigns at enrollment,
    // whatever the box advertises; without one, a static box is reached at its own address and
    // a DHCP box must be given one here by the IT person.
    let advertise_host = match &r.network {
        Network::Static { address, .. } => address.to_string(),
        Network::Dhcp if v.hub_tunnel => "via-tunnel".to_string(),
        Network::Dhcp => "set-the-box-address-here".to_string(),
    };
    let text = env
        .get_template("edge.toml")
        .and_then(|t| {
            t.render(context! {
                boot_dir => cfg.boot_config_dir,
                boot_mount => cfg.boot_mount(&r.hardware_size),
                region => v.region,
                facility_id => v.facility_id,
                node => v.node,
                facility_name => r.facility_name,
                tenant_id => r.tenant.as_str(),
                hub_url => cfg.hub_url,
                token => v.token,
                token_expires => v.token_expires.format("%Y-%m-%d %H:%M UTC").to_string(),
                made_at => v.made_at.format("%Y-%m-%d %H:%M UTC").to_string(),
                advertise_host => advertise_host,
                network => r.network,
                vpn_type => r.vpn_type,
                vpn_endpoint => r.vpn_endpoint,
                tunnel_address => v.tunnel_address.map(|a| a.to_string()),
                hub_tunnel => v.hub_tunnel,
            })
        })
        .map_err(|e| format!("edge.toml template: {e:#}"))?;
    text.parse::<toml::Table>()
        .map_err(|e| format!("the rendered edge.toml does not parse: {e}"))?;
    let network = env
        .get_template("network")
        .and_then(|t| {
            t.render(
                context! { region => v.region, facility_id => v.facility_id, network => r.network },
            )
        })
        .map_err(|e| format!("network template: {e:#}"))?;
    Ok(Files {
        edge_toml: text + "\n",
        network: network + "\n",
    })
}

/// The same config with the bootstrap token blanked (what the hub keeps once the image exists).
pub fn redacted(text: &str, token: &str) -> String {
    text.replace(token, "(in the image only)")
}
