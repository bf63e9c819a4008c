//! rustls configurations built from credential files.
//!
//! The crypto provider is aws-lc-rs: it is rustls' default, has the fastest AES-GCM and
//! ECDSA/RSA handshakes of the two providers on x86_64, and offers a FIPS build should an
//! operator need one. Every configuration here verifies its peer: a server config in
//! `mutual` mode demands a client certificate chaining to the listener's CA, and a client
//! config checks the server's chain against the route's CA and the SNI name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::ClientCertVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SupportedCipherSuite};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, ServerName, UnixTime};

use crate::authz::Pattern;
use crate::config::{TlsMode, TlsPolicy, TlsVersion, UpstreamTls};
use crate::identity::Identity;
use crate::trust::{FederatedClientVerifier, FederatedServerVerifier};

/// A credential or CA file that cannot be used, with the file and the reason.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Missing or unreadable file, or no PEM block of the expected kind in it.
    #[error("{file}: {reason}")]
    File {
        /// The file.
        file: PathBuf,
        /// What is wrong with it, and how to fix it.
        reason: String,
    },
    /// rustls refused the assembled configuration.
    #[error("{context}: {source}")]
    Rustls {
        /// What was being built.
        context: String,
        /// rustls's refusal.
        source: rustls::Error,
    },
}

fn file_error(file: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::File { file: file.to_owned(), reason: reason.into() }
}

/// A TLS failure in words: rustls prints custom certificate errors in debug form, so
/// unwrap those to their own message.
pub fn describe(error: &std::io::Error) -> String {
    match error.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(CertificateError::Other(other))) => format!("invalid peer certificate: {}", other.0),
        _ => error.to_string(),
    }
}

/// The process-wide crypto provider (aws-lc-rs), so every config agrees on it.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Default suite order: AES-128-GCM first. Its SHA-256 key schedule runs on the SHA
/// extensions of current x86 CPUs, where AES-256's SHA-384 does not — 11 % of a
/// handshake's CPU in the benchmark's profile — and it is Envoy's (BoringSSL's) first
/// choice too. AES-256 and ChaCha20 follow.
fn default_suites() -> Vec<SupportedCipherSuite> {
    use rustls::crypto::aws_lc_rs::cipher_suite::*;
    vec![
        TLS13_AES_128_GCM_SHA256,
        TLS13_AES_256_GCM_SHA384,
        TLS13_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
        TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ]
}

/// The provider restricted to the policy's cipher suites (or the default order), and the
/// protocol versions from `min_version`.
fn policy(policy: &TlsPolicy) -> (Arc<CryptoProvider>, &'static [&'static rustls::SupportedProtocolVersion]) {
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    provider.cipher_suites = match &policy.cipher_suites {
        Some(suites) => suites.iter().map(|s| s.0).collect(),
        None => default_suites(),
    };
    let versions: &'static [&'static rustls::SupportedProtocolVersion] = match policy.min_version {
        TlsVersion::V1_2 => rustls::ALL_VERSIONS,
        TlsVersion::V1_3 => TLS13_ONLY,
    };
    (Arc::new(provider), versions)
}

static TLS13_ONLY: &[&rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

/// Every CRL in a PEM file.
pub fn load_crls(file: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let pem = read(file)?;
    let crls =
        CertificateRevocationListDer::pem_slice_iter(&pem).collect::<Result<Vec<_>, _>>().map_err(|e| file_error(file, format!("not a PEM CRL file: {e}")))?;
    if crls.is_empty() {
        return Err(file_error(file, "holds no PEM CRL (expected -----BEGIN X509 CRL-----)"));
    }
    Ok(crls)
}

fn read(file: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(file).map_err(|e| file_error(file, format!("cannot read: {e} (check the path; a `dir` must hold tls.crt, tls.key and ca.crt)")))
}

/// Every certificate in a PEM file, in order; an empty file is an error.
pub fn load_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    parse_certs(file, &read(file)?)
}

fn parse_certs(file: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem).collect::<Result<Vec<_>, _>>().map_err(|e| file_error(file, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(file, "holds no PEM certificate (expected -----BEGIN CERTIFICATE-----): point it at a certificate or CA bundle in PEM"));
    }
    Ok(certs)
}

/// Refuses a certificate that has expired or is not valid yet: serving or presenting
/// one only moves the failure to the peer, where it is harder to diagnose.
fn check_validity(file: &Path, cert: &CertificateDer<'_>) -> Result<(), TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert).map_err(|e| file_error(file, format!("unparsable X.509 certificate: {e}")))?;
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let validity = parsed.validity();
    let subject = parsed.subject();
    if validity.not_after.timestamp() < now {
        return Err(file_error(
            file,
            format!("certificate {subject} expired at {}: renew it (cert-manager, or `strait-ingress certs` for a lab)", validity.not_after),
        ));
    }
    if validity.not_before.timestamp() > now {
        return Err(file_error(
            file,
            format!("certificate {subject} is not valid before {}: check this host's clock or the certificate's dates", validity.not_before),
        ));
    }
    Ok(())
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(file: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    parse_key(file, &read(file)?)
}

fn parse_key(file: &Path, pem: &[u8]) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| file_error(file, format!("holds no usable PEM private key ({e}): expected -----BEGIN PRIVATE KEY----- (PKCS#8, PKCS#1 or SEC1)")))
}

/// A trust store from a CA bundle; every certificate in it (root or intermediate)
/// becomes a trust anchor, as in Istio's `ca.crt`. An expired CA is skipped with a
/// warning, not refused: bundles keep an old CA for a while after a CA roll, and
/// providers ship expired cross-signs; only a bundle with no usable CA is an error.
pub fn load_roots(file: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    let mut expired = Vec::new();
    for cert in load_certs(file)? {
        if let Err(e) = check_validity(file, &cert) {
            expired.push(e.to_string());
            continue;
        }
        roots.add(cert).map_err(|e| file_error(file, format!("not usable as a trust anchor: {e}")))?;
    }
    if roots.is_empty() {
        return Err(file_error(file, format!("holds no CA that is valid now ({})", expired.join("; "))));
    }
    for reason in expired {
        tracing::warn!(%reason, "CA skipped: not valid now");
    }
    Ok(Arc::new(roots))
}

/// A certificate chain with its key, checked to belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    // One file holding both (a pod certificate bundle) is read once: a rotation between
    // two reads could pair the old key with the new chain.
    let (chain, key_der) = if cert == key {
        let pem = read(cert)?;
        (parse_certs(cert, &pem)?, parse_key(key, &pem)?)
    } else {
        (load_certs(cert)?, load_key(key)?)
    };
    for c in &chain {
        check_validity(cert, c)?;
    }
    let certified = CertifiedKey::from_der(chain, key_der, &provider()).map_err(|e| {
        file_error(key, format!("does not belong to the certificate in {}: {e}: take both from the same Secret (an update half done?)", cert.display()))
    })?;
    Ok(Arc::new(certified))
}

/// What an operator asks about a loaded credential: which certificate is live and
/// until when. Recorded at every (re)load; never holds key material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CredentialInfo {
    /// The certificate file.
    pub cert_file: PathBuf,
    /// Leaf subject, RFC 4514.
    pub subject: String,
    /// Leaf serial number, hex.
    pub serial: String,
    /// Leaf URI and DNS SANs.
    pub sans: Vec<String>,
    /// Leaf expiry.
    pub not_after: SystemTime,
    /// When this certificate was loaded.
    pub loaded_at: SystemTime,
}

impl CredentialInfo {
    /// Describes the leaf of `key`, loaded from `cert_file`.
    pub fn of(cert_file: &Path, key: &CertifiedKey) -> CredentialInfo {
        let mut info = CredentialInfo {
            cert_file: cert_file.to_owned(),
            subject: String::new(),
            serial: String::new(),
            sans: Vec::new(),
            not_after: SystemTime::UNIX_EPOCH,
            loaded_at: SystemTime::now(),
        };
        if let Some(leaf) = key.cert.first() {
            if let Ok((_, parsed)) = x509_parser::parse_x509_certificate(leaf) {
                info.subject = parsed.subject().to_string();
                info.serial = parsed.raw_serial_as_string();
                let identity = Identity::from_cert(leaf);
                info.sans = identity.uris.into_iter().chain(identity.dns).collect();
                let secs = parsed.validity().not_after.timestamp().max(0) as u64;
                info.not_after = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            }
        }
        info
    }
}

/// Who a terminating side trusts for client certificates: one CA bundle, or SPIFFE
/// trust-domain federation ([`crate::trust`]) with `ca` for certificates without a
/// SPIFFE ID; `crl` applies to every bundle.
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientTrust<'a> {
    /// The bundle for certificates without a SPIFFE ID (all certificates when
    /// `trust_domains` is empty).
    pub ca: Option<&'a Path>,
    /// Trust domain -> the CA bundle its SPIFFE IDs must chain to.
    pub trust_domains: Option<&'a BTreeMap<String, PathBuf>>,
    /// Revocation lists.
    pub crl: Option<&'a Path>,
}

impl ClientTrust<'_> {
    /// Whether any client CA is configured.
    pub fn is_set(&self) -> bool {
        self.ca.is_some() || self.trust_domains.is_some_and(|d| !d.is_empty())
    }
}

/// A server config and the client verifier inside it, kept so a live connection's
/// chain can be verified again after a reload changed the trust
/// ([`crate::recheck`]).
#[derive(Clone, Debug)]
pub struct Terminating {
    /// What the handshake runs with.
    pub config: Arc<ServerConfig>,
    /// The verifier of `config`; `None` when no client certificate is asked.
    pub verifier: Option<Arc<dyn ClientCertVerifier>>,
}

/// The client verifier for `trust`: webpki over one bundle, or one per trust domain.
pub fn client_verifier(trust: &ClientTrust<'_>, provider: &Arc<CryptoProvider>) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let crls = trust.crl.map(load_crls).transpose()?;
    let webpki = |ca: &Path| {
        let mut verifier = WebPkiClientVerifier::builder_with_provider(load_roots(ca)?, provider.clone());
        if let Some(crls) = &crls {
            // Like Envoy: the leaf's issuer must have a CRL in the file.
            verifier = verifier.with_crls(crls.clone()).only_check_end_entity_revocation();
        }
        verifier.build().map_err(|e| file_error(ca, format!("cannot verify clients with this CA bundle: {e}")))
    };
    match trust.trust_domains.filter(|d| !d.is_empty()) {
        None => webpki(trust.ca.ok_or_else(|| file_error(Path::new("<config>"), "mutual TLS needs a client CA"))?),
        Some(domains) => {
            let by_domain = domains.iter().map(|(domain, ca)| Ok((domain.clone(), webpki(ca)?))).collect::<Result<_, TlsError>>()?;
            let other = trust.ca.map(webpki).transpose()?;
            Ok(Arc::new(FederatedClientVerifier::new(by_domain, other)))
        }
    }
}

/// Builds the configuration a TLS listener uses for one route's hosts: `policy` and
/// `mode` are the listener's; in `mutual` mode `trust` verifies clients.
pub fn server_config(policy: &TlsPolicy, mode: TlsMode, key: Arc<CertifiedKey>, trust: &ClientTrust<'_>) -> Result<Terminating, TlsError> {
    let (provider, versions) = self::policy(policy);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|source| TlsError::Rustls { context: "server protocol versions".into(), source })?;
    let verifier = match mode {
        // Never fall back to no client authentication when mutual TLS was asked for.
        TlsMode::Mutual if !trust.is_set() => return Err(file_error(Path::new("<config>"), "mutual TLS needs a client CA")),
        TlsMode::Mutual => Some(client_verifier(trust, &provider)?),
        _ => None,
    };
    let builder = match &verifier {
        Some(verifier) => builder.with_client_cert_verifier(verifier.clone()),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(Fixed(key)));
    // The listener's order decides, not the client's: OpenSSL, Go and rustls clients all
    // offer AES-256-GCM-SHA384 first, whose SHA-384 key schedule has no SHA extensions
    // to run on (see `default_suites`); `cipher_suites` is the server's preference order.
    config.ignore_client_order = true;
    Ok(Terminating { config: Arc::new(config), verifier })
}

/// A server config that can only refuse: its resolver has no certificate, so rustls
/// aborts the handshake with an alert. Used for unknown SNI.
pub fn refusing_server_config() -> Arc<ServerConfig> {
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("the provider supports the default versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(NoCertificate));
    Arc::new(config)
}

/// Builds the configuration for originating TLS to one route's upstream; `client_key`
/// is presented in mutual mode. The server's chain is verified against the route's CA;
/// its name against `sni`, or against `subject_alt_names` when those are set.
pub fn client_config(client_key: Option<Arc<CertifiedKey>>, tls: &UpstreamTls) -> Result<Arc<ClientConfig>, TlsError> {
    client_config_with(client_key, tls, server_verifier(tls)?)
}

/// The verifier origination uses for `tls`: webpki against the route's CA (or, with
/// `trust_domains`, against the bundle of the server's trust domain), with secure
/// naming when `subject_alt_names` is set.
pub fn server_verifier(tls: &UpstreamTls) -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
    let (provider, _) = policy(&tls.policy);
    let webpki = |ca: &Path| -> Result<Arc<dyn ServerCertVerifier>, TlsError> {
        let verifier = WebPkiServerVerifier::builder_with_provider(load_roots(ca)?, provider.clone())
            .build()
            .map_err(|e| file_error(ca, format!("cannot verify servers with this CA bundle: {e}")))?;
        Ok(verifier)
    };
    let inner = if tls.trust_domains.is_empty() {
        webpki(tls.ca.as_deref().ok_or_else(|| file_error(Path::new("<config>"), "origination needs a CA"))?)?
    } else {
        let by_domain = tls.trust_domains.iter().map(|(domain, ca)| Ok((domain.clone(), webpki(ca)?))).collect::<Result<_, TlsError>>()?;
        let other = tls.ca.as_deref().map(webpki).transpose()?;
        Arc::new(FederatedServerVerifier::new(by_domain, other))
    };
    Ok(match &tls.subject_alt_names {
        None => inner,
        Some(names) => Arc::new(NamedServerVerifier { inner, names: names.clone(), verify_hostname: tls.verify_hostname }),
    })
}

/// [`client_config`] with a given verifier (`diagnose` wraps the real one to record the
/// server's chain).
pub fn client_config_with(
    client_key: Option<Arc<CertifiedKey>>,
    tls: &UpstreamTls,
    verifier: Arc<dyn ServerCertVerifier>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let (provider, versions) = policy(&tls.policy);
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|source| TlsError::Rustls { context: "client protocol versions".into(), source })?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match client_key {
        Some(key) => builder.with_client_cert_resolver(Arc::new(Fixed(key))),
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A copy of `config` that offers (and, at a server, requires of a client that offers
/// any) the one ALPN protocol `protocol`: HBONE's `h2`.
pub fn with_alpn<C: Clone + AlpnProtocols>(config: &Arc<C>, protocol: &[u8]) -> Arc<C> {
    let mut config = (**config).clone();
    config.set_alpn(vec![protocol.to_vec()]);
    Arc::new(config)
}

/// A rustls config whose ALPN protocols can be set: client or server.
pub trait AlpnProtocols {
    /// Replaces the ALPN protocols offered or accepted.
    fn set_alpn(&mut self, protocols: Vec<Vec<u8>>);
}

impl AlpnProtocols for ServerConfig {
    fn set_alpn(&mut self, protocols: Vec<Vec<u8>>) {
        self.alpn_protocols = protocols;
    }
}

impl AlpnProtocols for ClientConfig {
    fn set_alpn(&mut self, protocols: Vec<Vec<u8>>) {
        self.alpn_protocols = protocols;
    }
}

/// Presents one certificate; a reload builds a new config rather than mutating this.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesServerCert for Fixed {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

impl ResolvesClientCert for Fixed {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Secure naming (DestinationRule `subjectAltNames`): the chain is verified by webpki as
/// always; the server's identity must then match one of `names`, and its host name is
/// only required to match SNI when `verify_hostname` is set, so SPIFFE-only server
/// certificates without a DNS SAN work.
#[derive(Debug)]
struct NamedServerVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    names: Vec<Pattern>,
    verify_hostname: bool,
}

/// The server certificate named none of the expected SANs.
#[derive(Debug)]
struct UnexpectedServerIdentity(String);

impl std::fmt::Display for UnexpectedServerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the server certificate names [{}], none of which is in upstream_tls.subject_alt_names", self.0)
    }
}

impl std::error::Error for UnexpectedServerIdentity {}

impl ServerCertVerifier for NamedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Ok(_) => {}
            // webpki checks the name only after the chain verified.
            Err(rustls::Error::InvalidCertificate(CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }))
                if !self.verify_hostname => {}
            Err(e) => return Err(e),
        }
        let identity = Identity::from_cert(end_entity);
        if self.names.iter().any(|p| p.matches(&identity)) {
            Ok(ServerCertVerified::assertion())
        } else {
            let names = identity.uris.iter().chain(&identity.dns).cloned().collect::<Vec<_>>().join(", ");
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(UnexpectedServerIdentity(names))))))
        }
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[derive(Debug)]
struct NoCertificate;

impl ResolvesServerCert for NoCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full in-memory handshake; the suite it settled on.
    fn negotiate(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> rustls::CipherSuite {
        let name = ServerName::try_from("db.strait.test").unwrap();
        let mut client = rustls::ClientConnection::new(client, name).unwrap();
        let mut server = rustls::ServerConnection::new(server).unwrap();
        for _ in 0..10 {
            let mut wire = Vec::new();
            client.write_tls(&mut wire).unwrap();
            server.read_tls(&mut wire.as_slice()).unwrap();
            server.process_new_packets().unwrap();
            let mut wire = Vec::new();
            server.write_tls(&mut wire).unwrap();
            client.read_tls(&mut wire.as_slice()).unwrap();
            client.process_new_packets().unwrap();
            if !client.is_handshaking() && !server.is_handshaking() {
                break;
            }
        }
        assert!(!server.is_handshaking(), "the handshake did not finish");
        server.negotiated_cipher_suite().unwrap().suite()
    }

    #[test]
    fn the_listener_order_decides_the_suite_not_the_client_order() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["db.strait.test".to_owned()]).unwrap().self_signed(&key).unwrap();
        let certified = Arc::new(CertifiedKey::from_der(vec![cert.der().clone()], PrivateKeyDer::Pkcs8(key.serialize_der().into()), &provider()).unwrap());
        let mut roots = RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        // rustls' own default order, like OpenSSL's, puts AES-256-GCM-SHA384 first.
        let client = Arc::new(
            ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions().unwrap().with_root_certificates(roots).with_no_client_auth(),
        );
        assert_eq!(client.crypto_provider().cipher_suites[0].suite(), rustls::CipherSuite::TLS13_AES_256_GCM_SHA384);
        let no_trust = ClientTrust { ca: None, trust_domains: None, crl: None };
        let server = server_config(&TlsPolicy::default(), TlsMode::Simple, certified.clone(), &no_trust).unwrap().config;
        assert_eq!(negotiate(server, client.clone()), rustls::CipherSuite::TLS13_AES_128_GCM_SHA256);
        // An operator's list is the order too.
        let chacha_first = TlsPolicy {
            cipher_suites: Some(vec![
                crate::config::CipherSuite(rustls::crypto::aws_lc_rs::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256),
                crate::config::CipherSuite(rustls::crypto::aws_lc_rs::cipher_suite::TLS13_AES_256_GCM_SHA384),
            ]),
            ..TlsPolicy::default()
        };
        let server = server_config(&chacha_first, TlsMode::Simple, certified, &no_trust).unwrap().config;
        assert_eq!(negotiate(server, client), rustls::CipherSuite::TLS13_CHACHA20_POLY1305_SHA256);
    }
}
