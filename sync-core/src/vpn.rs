//! Tunnel configuration files rendered from `vpn-templates/` (embedded in the binary) with one
//! edge's values: WireGuard (wg-quick and systemd-networkd forms), strongSwan `swanctl.conf`
//! (IKEv2) and an OpenVPN client config.
//!
//! Every value is checked before it is rendered: no line breaks, quotes or control characters
//! (a value can never add a line or a key of its own), keys are base64 of 32 bytes, addresses
//! parse. Files that hold a secret are marked so the writer makes them 0600.

use std::net::{IpAddr, SocketAddr};

use minijinja::Environment;
use serde::Serialize;

const WG_QUICK: &str = include_str!("../../vpn-templates/wireguard/wg-quick.conf.j2");
const WG_NETDEV: &str = include_str!("../../vpn-templates/wireguard/agog.netdev.j2");
const WG_NETWORK: &str = include_str!("../../vpn-templates/wireguard/agog.network.j2");
const SWANCTL: &str = include_str!("../../vpn-templates/strongswan/swanctl.conf.j2");
const OPENVPN: &str = include_str!("../../vpn-templates/openvpn/client.conf.j2");

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("{field}: {problem}")]
    Invalid {
        field: &'static str,
        problem: String,
    },
    #[error("template {0}: {1}")]
    Template(&'static str, String),
}

/// One rendered file: its conventional name, its text, and whether it holds a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub file_name: String,
    pub text: String,
    pub secret: bool,
}

/// A WireGuard tunnel from the edge to its hub.
#[derive(Debug, Clone, Serialize)]
pub struct WireGuardValues {
    pub facility: String,
    pub interface: String,
    /// base64 of 32 bytes.
    pub private_key: String,
    /// The edge's tunnel address with its prefix, e.g. `10.99.0.2/24`.
    pub address: String,
    pub listen_port: Option<u16>,
    pub mtu: Option<u16>,
    pub peer_public_key: String,
    /// `host:port` of the hub.
    pub endpoint: String,
    /// CIDRs routed into the tunnel.
    pub allowed_ips: Vec<String>,
    pub keepalive_secs: u16,
}

/// An IKEv2 tunnel with strongSwan.
#[derive(Debug, Clone, Serialize)]
pub struct IpsecValues {
    pub facility: String,
    pub local_addrs: String,
    pub remote_addrs: String,
    pub local_id: String,
    pub remote_id: String,
    /// CIDR of the edge's side (a /32 of its tunnel address).
    pub local_ts: String,
    /// CIDR of the region's side.
    pub remote_ts: String,
    /// `psk` or `pubkey`.
    pub auth: String,
    /// With `psk`: the pre-shared key.
    pub psk: Option<String>,
    /// With `pubkey`: file names (in `swanctl/pubkey/`) of the raw public keys of this side
    /// and of the peer.
    pub local_pubkey: Option<String>,
    pub remote_pubkey: Option<String>,
    pub dpd_secs: u32,
    /// `start` on the initiating side (the edge), `none` on the responder (the hub).
    pub start_action: String,
}

/// An OpenVPN client.
#[derive(Debug, Clone, Serialize)]
pub struct OpenVpnValues {
    pub facility: String,
    pub interface: String,
    /// `udp` or `tcp-client`.
    pub proto: String,
    pub remote_host: String,
    pub remote_port: u16,
    /// The hub's certificate name (`verify-x509-name`).
    pub server_name: String,
    pub ca: String,
    pub cert: String,
    pub key: String,
    pub tls_crypt: String,
    /// Path of the management interface's unix socket.
    pub management_socket: String,
}

fn plain(field: &'static str, v: &str) -> Result<(), RenderError> {
    if v.is_empty() {
        return Err(RenderError::Invalid {
            field,
            problem: "is empty".into(),
        });
    }
    if let Some(c) = v
        .chars()
        .find(|c| c.is_control() || matches!(c, '"' | '\'' | '{' | '}' | '#' | ';' | '\\'))
    {
        return Err(RenderError::Invalid {
            field,
            problem: format!("contains {c:?}"),
        });
    }
    if v.chars().any(char::is_whitespace) {
        return Err(RenderError::Invalid {
            field,
            problem: "contains whitespace".into(),
        });
    }
    Ok(())
}

fn key(field: &'static str, v: &str) -> Result<(), RenderError> {
    use base64::Engine;
    match base64::engine::general_purpose::STANDARD.decode(v) {
        Ok(k) if k.len() == 32 => Ok(()),
        _ => Err(RenderError::Invalid {
            field,
            problem: "is not a base64 WireGuard key (32 bytes)".into(),
        }),
    }
}

/// `addr/prefix`, address and prefix checked.
pub fn parse_cidr(v: &str) -> Option<(IpAddr, u8)> {
    let (a, p) = v.split_once('/')?;
    let a: IpAddr = a.parse().ok()?;
    let p: u8 = p.parse().ok()?;
    let max = if a.is_ipv4() { 32 } else { 128 };
    (p <= max).then_some((a, p))
}

fn cidr(field: &'static str, v: &str) -> Result<(), RenderError> {
    parse_cidr(v).map(|_| ()).ok_or(RenderError::Invalid {
        field,
        problem: format!("{v:?} is not address/prefix"),
    })
}

fn interface(field: &'static str, v: &str) -> Result<(), RenderError> {
    plain(field, v)?;
    if v.len() > 15
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(RenderError::Invalid {
            field,
            problem: "an interface name is up to 15 letters, digits, - and _".into(),
        });
    }
    Ok(())
}

fn host_port(field: &'static str, v: &str) -> Result<(), RenderError> {
    plain(field, v)?;
    if v.parse::<SocketAddr>().is_ok() {
        return Ok(());
    }
    match v.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && p.parse::<u16>().is_ok() => Ok(()),
        _ => Err(RenderError::Invalid {
            field,
            problem: format!("{v:?} is not host:port"),
        }),
    }
}

fn render_one<S: Serialize>(name: &'static str, src: &str, v: &S) -> Result<String, RenderError> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_keep_trailing_newline(true);
    env.add_template(name, src)
        .map_err(|e| RenderError::Template(name, e.to_string()))?;
    env.get_template(name)
        .and_then(|t| t.render(v))
        .map_err(|e| RenderError::Template(name, format!("{e:#}")))
}

impl WireGuardValues {
    pub fn check(&self) -> Result<(), RenderError> {
        plain("facility", &self.facility)?;
        interface("interface", &self.interface)?;
        key("private_key", &self.private_key)?;
        key("peer_public_key", &self.peer_public_key)?;
        cidr("address", &self.address)?;
        host_port("endpoint", &self.endpoint)?;
        if self.allowed_ips.is_empty() {
            return Err(RenderError::Invalid {
                field: "allowed_ips",
                problem: "is empty".into(),
            });
        }
        for a in &self.allowed_ips {
            cidr("allowed_ips", a)?;
        }
        Ok(())
    }

    /// `<interface>.conf` (wg-quick), `<interface>.netdev` and `<interface>.network`
    /// (systemd-networkd). The first two hold the private key.
    pub fn render(&self) -> Result<Vec<Rendered>, RenderError> {
        self.check()?;
        Ok(vec![
            Rendered {
                file_name: format!("{}.conf", self.interface),
                text: render_one("wg-quick.conf", WG_QUICK, self)?,
                secret: true,
            },
            Rendered {
                file_name: format!("{}.netdev", self.interface),
                text: render_one("agog.netdev", WG_NETDEV, self)?,
                secret: true,
            },
            Rendered {
                file_name: format!("{}.network", self.interface),
                text: render_one("agog.network", WG_NETWORK, self)?,
                secret: false,
            },
        ])
    }
}

impl IpsecValues {
    pub fn check(&self) -> Result<(), RenderError> {
        plain("facility", &self.facility)?;
        plain("local_addrs", &self.local_addrs)?;
        plain("remote_addrs", &self.remote_addrs)?;
        plain("local_id", &self.local_id)?;
        plain("remote_id", &self.remote_id)?;
        cidr("local_ts", &self.local_ts)?;
        cidr("remote_ts", &self.remote_ts)?;
        match self.auth.as_str() {
            "psk" => {
                let psk = self.psk.as_deref().unwrap_or_default();
                plain("psk", psk)?;
                if psk.len() < 20 {
                    return Err(RenderError::Invalid {
                        field: "psk",
                        problem: "is shorter than 20 characters".into(),
                    });
                }
            }
            "pubkey" => {
                plain(
                    "local_pubkey",
                    self.local_pubkey.as_deref().unwrap_or_default(),
                )?;
                plain(
                    "remote_pubkey",
                    self.remote_pubkey.as_deref().unwrap_or_default(),
                )?;
            }
            other => {
                return Err(RenderError::Invalid {
                    field: "auth",
                    problem: format!("{other:?} is neither psk nor pubkey"),
                })
            }
        }
        if !matches!(self.start_action.as_str(), "start" | "none" | "trap") {
            return Err(RenderError::Invalid {
                field: "start_action",
                problem: "start, none or trap".into(),
            });
        }
        Ok(())
    }

    /// `swanctl.conf`; it holds the PSK when `auth = psk`.
    pub fn render(&self) -> Result<Rendered, RenderError> {
        self.check()?;
        Ok(Rendered {
            file_name: "swanctl.conf".into(),
            text: render_one("swanctl.conf", SWANCTL, self)?,
            secret: self.auth == "psk",
        })
    }
}

impl OpenVpnValues {
    pub fn check(&self) -> Result<(), RenderError> {
        plain("facility", &self.facility)?;
        interface("interface", &self.interface)?;
        if !matches!(self.proto.as_str(), "udp" | "tcp-client") {
            return Err(RenderError::Invalid {
                field: "proto",
                problem: format!("{:?} is neither udp nor tcp-client", self.proto),
            });
        }
        plain("remote_host", &self.remote_host)?;
        plain("server_name", &self.server_name)?;
        for (f, v) in [
            ("ca", &self.ca),
            ("cert", &self.cert),
            ("key", &self.key),
            ("tls_crypt", &self.tls_crypt),
            ("management_socket", &self.management_socket),
        ] {
            plain(f, v)?;
        }
        Ok(())
    }

    /// `<interface>.conf`: it names the key files but holds no secret itself.
    pub fn render(&self) -> Result<Rendered, RenderError> {
        self.check()?;
        Ok(Rendered {
            file_name: format!("{}.conf", self.interface),
            text: render_one("openvpn-client.conf", OPENVPN, self)?,
            secret: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wg() -> WireGuardValues {
        WireGuardValues {
            facility: "facility-la-001".into(),
            interface: "agogwg0".into(),
            private_key: "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=".into(),
            address: "10.99.0.2/24".into(),
            listen_port: None,
            mtu: Some(1420),
            peer_public_key: "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=".into(),
            endpoint: "192.0.2.1:51820".into(),
            allowed_ips: vec!["10.99.0.0/24".into()],
            keepalive_secs: 25,
        }
    }

    #[test]
    fn wireguard_renders_every_value_and_refuses_injection() {
        let files = wg().render().unwrap();
        assert_eq!(files.len(), 3);
        let conf = &files[0].text;
        assert!(conf.contains("Address = 10.99.0.2/24\n"), "{conf}");
        assert!(conf.contains("AllowedIPs = 10.99.0.0/24\n"), "{conf}");
        assert!(conf.contains("Endpoint = 192.0.2.1:51820\n"), "{conf}");
        assert!(!conf.contains("ListenPort"), "{conf}");
        assert!(files[0].secret && files[1].secret && !files[2].secret);
        let mut bad = wg();
        bad.endpoint = "192.0.2.1:51820\nPostUp = rm -rf /".into();
        assert!(bad.render().is_err());
        let mut bad = wg();
        bad.private_key = "short".into();
        assert!(bad.render().is_err());
    }
}
