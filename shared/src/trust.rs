//! SPIFFE trust-domain federation: a peer is verified only against the CA bundle of
//! the trust domain its SPIFFE ID names.
//!
//! With one flat bundle for several clusters, a certificate signed by cluster B's root
//! that claims `spiffe://a.example/...` would pass as A's workload. Here each trust
//! domain has its own webpki verifier; the leaf's SPIFFE ID (its one URI SAN, per the
//! X.509-SVID spec) picks which one runs, and a certificate without a SPIFFE ID goes to
//! the bundle configured for those, if any. Everything else — path building, expiry,
//! key usage, CRLs, signatures — is rustls's webpki, unchanged.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::identity::Identity;

/// Why a peer's certificate was refused by trust-domain federation, in an operator's
/// words; carried inside rustls's `CertificateError::Other` to the access log. Its
/// `Debug` is its message: rustls prints `Other` errors in debug form.
#[derive(Clone, PartialEq, Eq)]
pub enum TrustRefusal {
    /// More than one URI SAN where one is a SPIFFE ID: an X.509-SVID carries exactly one.
    SeveralUris(Vec<String>),
    /// A `spiffe://` URI SAN that is not a valid SPIFFE ID.
    Malformed {
        /// The URI as the certificate carries it.
        uri: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A SPIFFE ID of a trust domain this side does not federate with.
    UnknownDomain {
        /// The trust domain the ID names.
        domain: String,
        /// The trust domains configured.
        known: Vec<String>,
    },
    /// The chain does not lead to the bundle of the trust domain its ID claims.
    WrongIssuer {
        /// The certificate's SPIFFE ID.
        id: String,
    },
    /// No SPIFFE ID, and no bundle for certificates without one.
    NoSpiffeId,
}

impl TrustRefusal {
    /// Whether the refusal is about who signed (counted as `unknown_ca`) rather than
    /// the certificate itself (`bad_certificate`).
    pub fn is_unknown_ca(&self) -> bool {
        matches!(self, TrustRefusal::WrongIssuer { .. } | TrustRefusal::UnknownDomain { .. })
    }

    fn into_rustls(self) -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(self))))
    }
}

impl fmt::Display for TrustRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrustRefusal::SeveralUris(uris) => {
                write!(f, "the certificate carries {} URI SANs ({}); an X.509-SVID carries exactly one SPIFFE ID", uris.len(), uris.join(", "))
            }
            TrustRefusal::Malformed { uri, reason } => write!(f, "malformed SPIFFE ID {uri:?}: {reason}"),
            TrustRefusal::UnknownDomain { domain, known } => {
                write!(f, "trust domain {domain:?} is not federated here (trust_domains: {})", known.join(", "))
            }
            TrustRefusal::WrongIssuer { id } => {
                let domain = trust_domain(id).unwrap_or_default();
                write!(f, "{id} is not signed by a CA of trust domain {domain:?}: its chain does not lead to that domain's bundle in trust_domains")
            }
            TrustRefusal::NoSpiffeId => f.write_str("the certificate carries no SPIFFE ID and no `ca` is configured for certificates without one"),
        }
    }
}

impl fmt::Debug for TrustRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for TrustRefusal {}

/// The trust domain of a valid SPIFFE ID, `None` for anything else.
fn trust_domain(id: &str) -> Option<&str> {
    parse_spiffe_id(id).ok()
}

/// Checks a SPIFFE ID against the SPIFFE ID spec (lowercase `spiffe` scheme, a trust
/// domain of lowercase letters, digits, `.`, `-` and `_`, path segments of letters,
/// digits, `.`, `-` and `_` that are neither empty nor `.`/`..`, no port, user info,
/// query or fragment, at most 2048 bytes) and returns its trust domain.
pub fn parse_spiffe_id(id: &str) -> Result<&str, &'static str> {
    if id.len() > 2048 {
        return Err("longer than 2048 bytes");
    }
    let Some(rest) = id.strip_prefix("spiffe://") else {
        return Err("the scheme must be \"spiffe://\" (lowercase)");
    };
    let (domain, path) = rest.split_once('/').map_or((rest, None), |(d, p)| (d, Some(p)));
    if domain.is_empty() {
        return Err("the trust domain is empty");
    }
    if let Some(bad) = domain.chars().find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '.' | '-' | '_')) {
        return Err(match bad {
            'A'..='Z' => "the trust domain must be lowercase",
            ':' => "a trust domain has no port",
            '@' => "a SPIFFE ID has no user info",
            '?' | '#' => "a SPIFFE ID has no query or fragment",
            _ => "the trust domain may hold only lowercase letters, digits, '.', '-' and '_'",
        });
    }
    if let Some(path) = path {
        for segment in path.split('/') {
            match segment {
                "" => return Err("a path segment is empty (double or trailing '/')"),
                "." | ".." => return Err("a path segment is '.' or '..'"),
                s if s.chars().any(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))) => {
                    return Err("a path segment may hold only letters, digits, '.', '-' and '_'");
                }
                _ => {}
            }
        }
    }
    Ok(domain)
}

/// Checks a configured trust-domain name (a `trust_domains` key) the same way.
pub fn check_trust_domain_name(name: &str) -> Result<(), &'static str> {
    if name.contains('/') {
        return Err("a trust domain name has no scheme or path (write \"a.example\", not \"spiffe://a.example/\")");
    }
    parse_spiffe_id(&format!("spiffe://{name}")).map(|_| ())
}

/// Which bundle verifies a certificate: that of the trust domain in its SPIFFE ID, or
/// (`None`) the one for certificates without a SPIFFE ID.
pub fn bundle_for(cert: &CertificateDer<'_>) -> Result<Option<(String, String)>, TrustRefusal> {
    let uris = Identity::from_cert(cert).uris;
    if !uris.iter().any(|u| u.to_ascii_lowercase().starts_with("spiffe:")) {
        return Ok(None);
    }
    if uris.len() != 1 {
        return Err(TrustRefusal::SeveralUris(uris));
    }
    let id = uris.into_iter().next().unwrap_or_default();
    match parse_spiffe_id(&id) {
        Ok(domain) => Ok(Some((domain.to_owned(), id))),
        Err(reason) => Err(TrustRefusal::Malformed { uri: id, reason }),
    }
}

/// The per-domain verifiers of one side and the verifier for the rest.
#[derive(Debug)]
struct Domains<V: ?Sized> {
    by_domain: BTreeMap<String, Arc<V>>,
    other: Option<Arc<V>>,
}

impl<V: ?Sized> Domains<V> {
    /// The verifier for `cert`, and its SPIFFE ID if it has one.
    fn pick(&self, cert: &CertificateDer<'_>) -> Result<(&Arc<V>, Option<String>), rustls::Error> {
        match bundle_for(cert).map_err(TrustRefusal::into_rustls)? {
            None => self.other.as_ref().map(|v| (v, None)).ok_or_else(|| TrustRefusal::NoSpiffeId.into_rustls()),
            Some((domain, id)) => match self.by_domain.get(&domain) {
                Some(v) => Ok((v, Some(id))),
                None => Err(TrustRefusal::UnknownDomain { domain, known: self.by_domain.keys().cloned().collect() }.into_rustls()),
            },
        }
    }

    /// Any one verifier: signatures do not depend on the trust anchors.
    fn any(&self) -> &Arc<V> {
        self.other.as_ref().or_else(|| self.by_domain.values().next()).expect("federation has at least one bundle")
    }
}

/// A chain refused as not chaining to its domain's bundle says which domain it claimed.
fn explain(error: rustls::Error, id: Option<String>) -> rustls::Error {
    match (error, id) {
        (rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer), Some(id)) => TrustRefusal::WrongIssuer { id }.into_rustls(),
        (error, _) => error,
    }
}

/// Verifies client certificates by trust domain (see the module docs).
#[derive(Debug)]
pub struct FederatedClientVerifier {
    domains: Domains<dyn ClientCertVerifier>,
    hints: Vec<DistinguishedName>,
}

impl FederatedClientVerifier {
    /// One verifier per trust domain, and optionally one for certificates without a
    /// SPIFFE ID; `by_domain` must not be empty.
    pub fn new(by_domain: BTreeMap<String, Arc<dyn ClientCertVerifier>>, other: Option<Arc<dyn ClientCertVerifier>>) -> FederatedClientVerifier {
        let hints = by_domain.values().chain(other.as_ref()).flat_map(|v| v.root_hint_subjects().to_vec()).collect();
        FederatedClientVerifier { domains: Domains { by_domain, other }, hints }
    }
}

impl ClientCertVerifier for FederatedClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let (verifier, id) = self.domains.pick(end_entity)?;
        verifier.verify_client_cert(end_entity, intermediates, now).map_err(|e| explain(e, id))
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.domains.any().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.domains.any().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.domains.any().supported_verify_schemes()
    }
}

/// Verifies server certificates on origination by trust domain (see the module docs).
#[derive(Debug)]
pub struct FederatedServerVerifier {
    domains: Domains<dyn ServerCertVerifier>,
}

impl FederatedServerVerifier {
    /// One verifier per trust domain, and optionally one for certificates without a
    /// SPIFFE ID; `by_domain` must not be empty.
    pub fn new(by_domain: BTreeMap<String, Arc<dyn ServerCertVerifier>>, other: Option<Arc<dyn ServerCertVerifier>>) -> FederatedServerVerifier {
        FederatedServerVerifier { domains: Domains { by_domain, other } }
    }
}

impl ServerCertVerifier for FederatedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let (verifier, id) = self.domains.pick(end_entity)?;
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now).map_err(|e| explain(e, id))
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.domains.any().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.domains.any().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.domains.any().supported_verify_schemes()
    }
}
