//! TLS to the hub: only the pinned CA is trusted, and a clock that is obviously wrong does not
//! make every certificate look "not yet valid".
//!
//! A Raspberry Pi has no clock battery: until NTP answers (and NTP may need the network we are
//! trying to set up) it believes it is 1970. A clock earlier than the moment this agent was built
//! is certainly wrong, so the verifier then checks validity at the build time instead, and says
//! so in the log. Everything else (chain to the pinned CA, name, signatures, an expired
//! certificate) is checked by rustls' WebPKI verifier as usual.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

/// Seconds since the epoch when this agent was built (set by build.rs).
pub const BUILD_EPOCH_SECS: u64 = match u64::from_str_radix(env!("AGOG_BUILD_EPOCH"), 10) {
    Ok(v) => v,
    Err(_) => 0,
};

pub fn build_time() -> UnixTime {
    UnixTime::since_unix_epoch(Duration::from_secs(BUILD_EPOCH_SECS))
}

pub type Clock = Arc<dyn Fn() -> UnixTime + Send + Sync>;

pub fn system_clock() -> Clock {
    Arc::new(UnixTime::now)
}

/// The WebPKI verifier over the pinned CA, checked at `max(clock, floor)`.
pub struct ClockTolerantVerifier {
    inner: Arc<WebPkiServerVerifier>,
    clock: Clock,
    floor: UnixTime,
}

impl fmt::Debug for ClockTolerantVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClockTolerantVerifier")
            .field("floor", &self.floor)
            .finish()
    }
}

impl ClockTolerantVerifier {
    pub fn new(ca_pem: &[u8], clock: Clock, floor: UnixTime) -> anyhow::Result<Self> {
        let mut roots = RootCertStore::empty();
        let mut n = 0;
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            roots
                .add(cert.context("parse the CA certificate")?)
                .context("add the CA certificate")?;
            n += 1;
        }
        anyhow::ensure!(n > 0, "the CA file holds no certificate");
        let inner = WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .context("build the certificate verifier")?;
        Ok(ClockTolerantVerifier {
            inner,
            clock,
            floor,
        })
    }

    /// The time certificates are checked at.
    pub fn effective_now(&self) -> UnixTime {
        let now = (self.clock)();
        if now.as_secs() < self.floor.as_secs() {
            tracing::warn!(
                system_time_secs = now.as_secs(),
                build_time_secs = self.floor.as_secs(),
                "the system clock is before this agent's build time, so it is wrong: checking the hub's certificate at the build time instead"
            );
            self.floor
        } else {
            now
        }
    }
}

impl ServerCertVerifier for ClockTolerantVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            self.effective_now(),
        )
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// An HTTPS client that trusts only the CA in `ca_path`.
pub fn pinned_client(ca_path: &Path) -> anyhow::Result<reqwest::Client> {
    let pem = std::fs::read(ca_path)
        .with_context(|| format!("read enroll.ca_cert {}", ca_path.display()))?;
    let verifier = ClockTolerantVerifier::new(&pem, system_clock(), build_time())
        .with_context(|| format!("enroll.ca_cert {}", ca_path.display()))?;
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
    .dangerous()
    .with_custom_certificate_verifier(Arc::new(verifier))
    .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(30))
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};

    struct Pki {
        ca_pem: String,
        leaf: CertificateDer<'static>,
    }

    fn at(secs: u64) -> time::OffsetDateTime {
        time::OffsetDateTime::from_unix_timestamp(secs as i64).unwrap()
    }

    /// A CA and a leaf for 127.0.0.1 valid from `not_before` to `not_after` (unix seconds).
    fn pki(not_before: u64, not_after: u64) -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "test CA");
        ca.not_before = at(0);
        ca.not_after = at(BUILD_EPOCH_SECS + 10 * 365 * 86400);
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let leaf_key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(Vec::<String>::new()).unwrap();
        leaf.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
        leaf.not_before = at(not_before);
        leaf.not_after = at(not_after);
        let leaf = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();
        Pki {
            ca_pem: ca_cert.pem(),
            leaf: leaf.der().clone(),
        }
    }

    fn verify(p: &Pki, clock_secs: u64) -> Result<ServerCertVerified, rustls::Error> {
        let clock: Clock =
            Arc::new(move || UnixTime::since_unix_epoch(Duration::from_secs(clock_secs)));
        let v = ClockTolerantVerifier::new(p.ca_pem.as_bytes(), clock, build_time()).unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        // The `now` rustls passes is ignored: the injected clock decides.
        v.verify_server_cert(&p.leaf, &[], &name, &[], UnixTime::now())
    }

    const DAY: u64 = 86400;

    #[test]
    fn a_current_certificate_passes_with_a_1970_clock() {
        let now = UnixTime::now().as_secs();
        // Valid since a day before the build, for a year from now: valid now.
        let p = pki(BUILD_EPOCH_SECS - DAY, now + 365 * DAY);
        verify(&p, now).expect("valid with the right clock");
        verify(&p, 0).expect("valid with a 1970 clock (checked at the build time)");
        verify(&p, 86400 * 365).expect("valid with a 1971 clock");
    }

    #[test]
    fn an_expired_certificate_still_fails_with_a_1970_clock() {
        let p = pki(BUILD_EPOCH_SECS - 30 * DAY, BUILD_EPOCH_SECS - DAY);
        let e = verify(&p, 0).unwrap_err();
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(rustls::CertificateError::Expired)
                    | rustls::Error::InvalidCertificate(
                        rustls::CertificateError::ExpiredContext { .. }
                    )
            ),
            "{e:?}"
        );
        let now = UnixTime::now().as_secs();
        assert!(verify(&p, now).is_err());
    }

    #[test]
    fn a_certificate_from_another_ca_fails() {
        let now = UnixTime::now().as_secs();
        let p = pki(BUILD_EPOCH_SECS - DAY, now + DAY);
        let other = pki(BUILD_EPOCH_SECS - DAY, now + DAY);
        let mixed = Pki {
            ca_pem: other.ca_pem,
            leaf: p.leaf,
        };
        let e = verify(&mixed, now).unwrap_err();
        // Same issuer name, other key: the signature does not verify.
        assert!(
            matches!(
                e,
                rustls::Error::InvalidCertificate(
                    rustls::CertificateError::UnknownIssuer
                        | rustls::CertificateError::BadSignature
                )
            ),
            "{e:?}"
        );
    }

    #[test]
    fn the_clock_is_only_replaced_when_it_is_before_the_build() {
        let p = pki(0, 1);
        let clock: Clock = Arc::new(|| UnixTime::since_unix_epoch(Duration::from_secs(5)));
        let v = ClockTolerantVerifier::new(p.ca_pem.as_bytes(), clock, build_time()).unwrap();
        assert_eq!(v.effective_now().as_secs(), BUILD_EPOCH_SECS);
        let later = BUILD_EPOCH_SECS + 1000;
        let clock: Clock = Arc::new(move || UnixTime::since_unix_epoch(Duration::from_secs(later)));
        let v = ClockTolerantVerifier::new(p.ca_pem.as_bytes(), clock, build_time()).unwrap();
        assert_eq!(v.effective_now().as_secs(), later);
    }
}
