//! A test CA and a hub certificate for 127.0.0.1 signed by it, and an HTTPS client that trusts
//! only that CA: what the hub's API and an enrolling agent need.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

pub struct Pki {
    pub ca_cert: PathBuf,
    pub hub_cert: PathBuf,
    pub hub_key: PathBuf,
    pub ca_pem: String,
}

/// Write `ca.pem`, `hub.pem` and `hub.key` into `dir`.
pub fn pki(dir: &Path) -> anyhow::Result<Pki> {
    pki_for(dir, &["127.0.0.1"])
}

/// As [`pki`], the hub's certificate valid for each of `ips`.
pub fn pki_for(dir: &Path, ips: &[&str]) -> anyhow::Result<Pki> {
    let now = time::OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "AGOG test hub CA");
    ca.not_before = now - time::Duration::days(1);
    ca.not_after = now + time::Duration::days(30);
    let ca_cert = ca.self_signed(&ca_key)?;
    let hub_key = KeyPair::generate()?;
    let mut hub = CertificateParams::new(Vec::<String>::new())?;
    hub.distinguished_name.push(DnType::CommonName, "hub");
    hub.subject_alt_names = ips
        .iter()
        .map(|ip| Ok(SanType::IpAddress(ip.parse()?)))
        .collect::<anyhow::Result<_>>()?;
    hub.not_before = now - time::Duration::days(1);
    hub.not_after = now + time::Duration::days(30);
    let hub_cert = hub.signed_by(&hub_key, &ca_cert, &ca_key)?;
    let p = Pki {
        ca_cert: dir.join("ca.pem"),
        hub_cert: dir.join("hub.pem"),
        hub_key: dir.join("hub.key"),
        ca_pem: ca_cert.pem(),
    };
    std::fs::write(&p.ca_cert, ca_cert.pem())?;
    std::fs::write(&p.hub_cert, hub_cert.pem())?;
    std::fs::write(&p.hub_key, hub_key.serialize_pem())?;
    Ok(p)
}

/// An HTTPS client that trusts only the test CA.
pub fn pinned_client(ca_pem: &str) -> anyhow::Result<reqwest::Client> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c?)?;
    }
    let tls = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(Duration::from_secs(60))
        .build()?)
}

/// Certificates for an OpenVPN server and one client, signed by a CA of their own (EC keys):
/// the server's with `serverAuth` (for `remote-cert-tls server`), the client's with
/// `clientAuth` and `client_cn` as its common name (the server's client-config file name).
pub struct OpenVpnPki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

pub fn openvpn_pki(dir: &Path, server_cn: &str, client_cn: &str) -> anyhow::Result<OpenVpnPki> {
    use rcgen::ExtendedKeyUsagePurpose;
    let now = time::OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "AGOG test VPN CA");
    ca.not_before = now - time::Duration::days(1);
    ca.not_after = now + time::Duration::days(30);
    let ca_cert = ca.self_signed(&ca_key)?;
    let leaf = |cn: &str, eku: ExtendedKeyUsagePurpose| -> anyhow::Result<(String, String)> {
        let key = KeyPair::generate()?;
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![eku];
        p.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyAgreement,
        ];
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(30);
        let cert = p.signed_by(&key, &ca_cert, &ca_key)?;
        Ok((cert.pem(), key.serialize_pem()))
    };
    let (sc, sk) = leaf(server_cn, ExtendedKeyUsagePurpose::ServerAuth)?;
    let (cc, ck) = leaf(client_cn, ExtendedKeyUsagePurpose::ClientAuth)?;
    let p = OpenVpnPki {
        ca: dir.join("vpn-ca.pem"),
        server_cert: dir.join("vpn-server.pem"),
        server_key: dir.join("vpn-server.key"),
        client_cert: dir.join("vpn-client.pem"),
        client_key: dir.join("vpn-client.key"),
    };
    std::fs::write(&p.ca, ca_cert.pem())?;
    std::fs::write(&p.server_cert, sc)?;
    std::fs::write(&p.server_key, sk)?;
    std::fs::write(&p.client_cert, cc)?;
    std::fs::write(&p.client_key, ck)?;
    Ok(p)
}
