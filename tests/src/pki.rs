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
