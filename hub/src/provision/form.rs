//! The self-service form of the design: every field checked on the server, each error said
//! next to its field. Pure: no database, no I/O.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use sync_core::TenantId;

/// The form as submitted (every field a string, so a bad value comes back as typed).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ProvisionForm {
    /// Only for an operator of every tenant; a tenant's operator provisions for its tenant.
    pub tenant: String,
    pub facility_name: String,
    pub facility_address: String,
    pub shipping_address: String,
    /// `dhcp` or `static`.
    pub network_mode: String,
    pub static_address: String,
    pub netmask: String,
    pub gateway: String,
    pub dns_servers: String,
    pub vpn_type: String,
    pub vpn_endpoint: String,
    pub hardware_size: String,
    pub it_contact_name: String,
    pub it_contact_email: String,
    pub it_contact_phone: String,
}

/// The network settings the box boots with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Network {
    Dhcp,
    Static {
        address: Ipv4Addr,
        prefix: u8,
        gateway: Ipv4Addr,
        dns: Vec<Ipv4Addr>,
    },
}

/// A checked request.
#[derive(Debug, Clone, Serialize)]
pub struct Request {
    pub tenant: TenantId,
    pub facility_name: String,
    pub facility_address: String,
    /// The facility's address when the form left it empty.
    pub shipping_address: String,
    pub network: Network,
    pub vpn_type: String,
    pub vpn_endpoint: String,
    pub hardware_size: String,
    pub it_name: String,
    pub it_email: String,
    pub it_phone: String,
}

pub type FieldErrors = BTreeMap<&'static str, String>;

fn text(v: &str, max: usize, multi_line: bool) -> Option<String> {
    let v = v.trim();
    let ok = !v.is_empty()
        && v.chars().count() <= max
        && v.chars()
            .all(|c| !c.is_control() || (multi_line && (c == '\n' || c == '\r')));
    ok.then(|| v.replace("\r\n", "\n"))
}

/// `255.255.255.0` or `/24` or `24` -> 24.
fn prefix(mask: &str) -> Option<u8> {
    let m = mask.trim().trim_start_matches('/');
    if let Ok(p) = m.parse::<u8>() {
        return (1..=32).contains(&p).then_some(p);
    }
    let bits = u32::from(m.parse::<Ipv4Addr>().ok()?);
    let p = bits.leading_ones();
    (bits.count_ones() == p && p > 0).then_some(p as u8)
}

fn host_address(a: &str) -> Option<Ipv4Addr> {
    let ip: Ipv4Addr = a.trim().parse().ok()?;
    (!ip.is_unspecified() && !ip.is_broadcast() && !ip.is_multicast() && !ip.is_loopback())
        .then_some(ip)
}

/// A DNS host name or an IPv4 address, optionally with `:port`.
fn endpoint(v: &str) -> Option<String> {
    let v = v.trim();
    let (host, port) = match v.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (v, None),
    };
    if let Some(p) = port {
        p.parse::<u16>().ok().filter(|p| *p > 0)?;
    }
    let is_ip = host.parse::<Ipv4Addr>().is_ok();
    let is_name = host.len() <= 253
        && host.contains('.')
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    (is_ip || is_name).then(|| v.to_ascii_lowercase())
}

/// `+1 (415) 555-0100` -> `+14155550100` (E.164: the form Twilio takes).
fn phone(v: &str) -> Option<String> {
    let digits: String = v
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '(' | ')' | '.'))
        .collect();
    let rest = digits.strip_prefix('+')?;
    ((8..=15).contains(&rest.len())
        && rest.chars().all(|c| c.is_ascii_digit())
        && !rest.starts_with('0'))
    .then_some(digits)
}

/// The region's hub serves one tunnel kind (`[tunnel] kind`): a box asking for another would
/// come up without the tunnel it was promised. `None` when `vpn_type` is fine.
pub fn unserved_vpn(vpn_type: &str, served: Option<&str>) -> Option<String> {
    let name = |k: &str| {
        match k {
            "wireguard" => "WireGuard",
            "ipsec" => "IPsec",
            "openvpn" => "OpenVPN",
            other => other,
        }
        .to_string()
    };
    let served = served?;
    (vpn_type != served && matches!(vpn_type, "wireguard" | "ipsec" | "openvpn")).then(|| {
        format!(
            "This region's hub runs {} tunnels to its edges: choose {}, or ask AGOG for a region that runs {}.",
            name(served),
            name(served),
            name(vpn_type)
        )
    })
}

impl ProvisionForm {
    /// Check every field; `tenant_scope` is the operator's tenant (then the form's is ignored).
    pub fn check(&self, tenant_scope: Option<&str>) -> Result<Request, FieldErrors> {
        let mut e = FieldErrors::new();
        let tenant = match tenant_scope {
            Some(t) => TenantId::parse(t).map_err(|err| err.to_string()),
            None => TenantId::parse(self.tenant.trim()).map_err(|_| {
                "The tenant id, e.g. tenant-foo-inc (lowercase letters, digits and hyphens).".into()
            }),
        };
        let tenant = tenant.map_err(|m| e.insert("tenant", m)).ok();
        let name = text(&self.facility_name, 100, false);
        if name.as_deref().and_then(slug).is_none() {
            e.insert(
                "facility_name",
                "The facility's name, 1 to 100 characters with at least one letter or digit (e.g. \"Los Angeles Plant\").".into(),
            );
        }
        let address = text(&self.facility_address, 500, true);
        if address.is_none() {
            e.insert("facility_address", "The facility's street address.".into());
        }
        let shipping = if self.shipping_address.trim().is_empty() {
            address.clone()
        } else {
            let s = text(&self.shipping_address, 500, true);
            if s.is_none() {
                e.insert("shipping_address", "At most 500 characters.".into());
            }
            s
        };
        let network = match self.network_mode.as_str() {
            "dhcp" => Some(Network::Dhcp),
            "static" => {
                let address = host_address(&self.static_address);
                if address.is_none() {
                    e.insert(
                        "static_address",
                        "An IPv4 address for the box, e.g. 203.0.113.45.".into(),
                    );
                }
                let p = prefix(&self.netmask);
                if p.is_none() {
                    e.insert(
                        "netmask",
                        "A subnet mask such as 255.255.255.0 (or /24).".into(),
                    );
                }
                let gateway = host_address(&self.gateway);
                if gateway.is_none() {
                    e.insert(
                        "gateway",
                        "The gateway's IPv4 address, e.g. 203.0.113.1.".into(),
                    );
                }
                let dns: Option<Vec<Ipv4Addr>> = self
                    .dns_servers
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|s| !s.is_empty())
                    .map(host_address)
                    .collect();
                let dns = dns.filter(|d| (1..=3).contains(&d.len()));
                if dns.is_none() {
                    e.insert(
                        "dns_servers",
                        "One to three DNS server addresses, e.g. 8.8.8.8, 8.8.4.4.".into(),
                    );
                }
                if let (Some(a), Some(p), Some(g)) = (address, p, gateway) {
                    let mask = u32::MAX.checked_shl(32 - p as u32).unwrap_or(0);
                    if u32::from(a) & mask != u32::from(g) & mask {
                        e.insert(
                            "gateway",
                            format!("The gateway {g} is not in the box's network {a}/{p}."),
                        );
                    } else if a == g {
                        e.insert(
                            "gateway",
                            "The gateway cannot be the box's own address.".into(),
                        );
                    }
                }
                match (address, p, gateway, dns) {
                    (Some(address), Some(prefix), Some(gateway), Some(dns)) => {
                        Some(Network::Static {
                            address,
                            prefix,
                            gateway,
                            dns,
                        })
                    }
                    _ => None,
                }
            }
            _ => {
                e.insert("network_mode", "Choose DHCP or a static address.".into());
                None
            }
        };
        if !matches!(self.vpn_type.as_str(), "wireguard" | "ipsec" | "openvpn") {
            e.insert("vpn_type", "Choose WireGuard, IPsec or OpenVPN.".into());
        }
        let vpn_endpoint = endpoint(&self.vpn_endpoint);
        if vpn_endpoint.is_none() {
            e.insert(
                "vpn_endpoint",
                "The VPN endpoint's host name or IPv4 address, optionally with :port (e.g. vpn.customer-corp.com).".into(),
            );
        }
        if !super::config::SIZES.contains(&self.hardware_size.as_str()) {
            e.insert("hardware_size", "Choose small, medium or large.".into());
        }
        let it_name = text(&self.it_contact_name, 100, false);
        if it_name.is_none() {
            e.insert("it_contact_name", "The IT manager's name.".into());
        }
        let it_email = self.it_contact_email.trim();
        // A deliverable address: its domain has a dot (lettre also takes `user@host`).
        let email_ok = it_email.len() <= 254
            && it_email
                .rsplit_once('@')
                .is_some_and(|(_, d)| d.contains('.') && !d.ends_with('.'))
            && it_email.parse::<lettre::Address>().is_ok();
        if !email_ok {
            e.insert(
                "it_contact_email",
                "An email address, e.g. it@customer-corp.com.".into(),
            );
        }
        let it_phone = phone(&self.it_contact_phone);
        if it_phone.is_none() {
            e.insert(
                "it_contact_phone",
                "A phone number with its country code, e.g. +1 415 555 0100.".into(),
            );
        }
        if !e.is_empty() {
            return Err(e);
        }
        // Every Option below is Some: each None added an error above.
        Ok(Request {
            tenant: tenant.expect("checked"),
            facility_name: name.expect("checked"),
            facility_address: address.expect("checked"),
            shipping_address: shipping.expect("checked"),
            network: network.expect("checked"),
            vpn_type: self.vpn_type.clone(),
            vpn_endpoint: vpn_endpoint.expect("checked"),
            hardware_size: self.hardware_size.clone(),
            it_name: it_name.expect("checked"),
            it_email: it_email.to_owned(),
            it_phone: it_phone.expect("checked"),
        })
    }
}

/// The facility name as a facility id fragment: `Los Angeles Plant #2` -> `los-angeles-plant-2`,
/// at most 35 characters (so `facility-<slug>-<nnn>` fits a facility id's 48).
pub fn slug(name: &str) -> Option<String> {
    let mut s = String::new();
    for c in name.chars() {
        if c.is_ascii_alphanumeric() {
            s.push(c.to_ascii_lowercase());
        } else if !s.ends_with('-') && !s.is_empty() {
            s.push('-');
        }
    }
    let mut s: String = s.chars().take(35).collect();
    while s.ends_with('-') {
        s.pop();
    }
    (!s.is_empty()).then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> ProvisionForm {
        ProvisionForm {
            tenant: "tenant-foo-inc".into(),
            facility_name: "Los Angeles Plant".into(),
            facility_address: "1 Main St\r\nLos Angeles, CA".into(),
            shipping_address: String::new(),
            network_mode: "static".into(),
            static_address: "203.0.113.45".into(),
            netmask: "255.255.255.0".into(),
            gateway: "203.0.113.1".into(),
            dns_servers: "8.8.8.8, 8.8.4.4".into(),
            vpn_type: "wireguard".into(),
            vpn_endpoint: "vpn.customer-corp.com".into(),
            hardware_size: "medium".into(),
            it_contact_name: "Ana Lopez".into(),
            it_contact_email: "it@customer-corp.com".into(),
            it_contact_phone: "+1 (415) 555-0100".into(),
        }
    }

    #[test]
    fn a_good_form_becomes_a_request() {
        let r = good().check(None).unwrap();
        assert_eq!(r.tenant.as_str(), "tenant-foo-inc");
        assert_eq!(r.shipping_address, "1 Main St\nLos Angeles, CA");
        assert_eq!(r.it_phone, "+14155550100");
        assert_eq!(
            r.network,
            Network::Static {
                address: "203.0.113.45".parse().unwrap(),
                prefix: 24,
                gateway: "203.0.113.1".parse().unwrap(),
                dns: vec!["8.8.8.8".parse().unwrap(), "8.8.4.4".parse().unwrap()],
            }
        );
        let dhcp = ProvisionForm {
            network_mode: "dhcp".into(),
            static_address: "junk".into(),
            ..good()
        };
        assert_eq!(dhcp.check(None).unwrap().network, Network::Dhcp);
        // A tenant's operator provisions for its own tenant, whatever the form says.
        let scoped = ProvisionForm {
            tenant: "tenant-other".into(),
            ..good()
        };
        assert_eq!(
            scoped
                .check(Some("tenant-foo-inc"))
                .unwrap()
                .tenant
                .as_str(),
            "tenant-foo-inc"
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let bad = ProvisionForm {
            tenant: "Tenant Foo'; DROP TABLE x".into(),
            facility_name: "  ### ".into(),
            facility_address: "".into(),
            static_address: "999.1.1.1".into(),
            netmask: "255.0.255.0".into(),
            gateway: "198.51.100.1".into(),
            dns_servers: "".into(),
            vpn_type: "pptp".into(),
            vpn_endpoint: "not a host".into(),
            hardware_size: "huge".into(),
            it_contact_name: "".into(),
            it_contact_email: "nobody@localhost".into(),
            it_contact_phone: "555-0100".into(),
            ..good()
        };
        let e = bad.check(None).unwrap_err();
        let fields: Vec<&str> = e.keys().copied().collect();
        assert_eq!(
            fields,
            [
                "dns_servers",
                "facility_address",
                "facility_name",
                "hardware_size",
                "it_contact_email",
                "it_contact_name",
                "it_contact_phone",
                "netmask",
                "static_address",
                "tenant",
                "vpn_endpoint",
                "vpn_type"
            ]
        );
        let wrong_net = ProvisionForm {
            gateway: "198.51.100.1".into(),
            ..good()
        };
        assert!(wrong_net.check(None).unwrap_err()["gateway"].contains("not in the box's network"));
    }

    #[test]
    fn a_vpn_type_the_region_does_not_serve_is_refused() {
        assert_eq!(unserved_vpn("wireguard", Some("wireguard")), None);
        assert_eq!(unserved_vpn("ipsec", None), None);
        let e = unserved_vpn("ipsec", Some("wireguard")).unwrap();
        assert!(
            e.contains("runs WireGuard tunnels") && e.contains("runs IPsec"),
            "{e}"
        );
    }

    #[test]
    fn names_become_id_fragments() {
        assert_eq!(
            slug("Los Angeles Plant #2").as_deref(),
            Some("los-angeles-plant-2")
        );
        assert_eq!(slug("  Köln--Süd  ").as_deref(), Some("k-ln-s-d"));
        assert_eq!(slug("###"), None);
        assert_eq!(slug(&"a".repeat(80)).unwrap().len(), 35);
        assert_eq!(prefix("/24"), Some(24));
        assert_eq!(prefix("255.255.255.128"), Some(25));
        assert_eq!(prefix("255.0.255.0"), None);
        assert_eq!(
            endpoint("VPN.Example.com:51820").as_deref(),
            Some("vpn.example.com:51820")
        );
        assert_eq!(endpoint("203.0.113.9").as_deref(), Some("203.0.113.9"));
        assert_eq!(endpoint("localhost"), None);
        assert_eq!(phone("+44 20 7946 0958").as_deref(), Some("+442079460958"));
    }
}
