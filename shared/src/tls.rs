//! rustls configurations built from credential files.
//!
//! The crypto provider is aws-lc-rs: it is rustls' default, has the fastest AES-GCM and
//! ECDSA/RSA handshakes of the two providers on x86_64, and offers a FIPS build should an
//! operator need one. Every configuration here verifies its peer: a server config in
//! `mutual` mode demands a client certificate chaining to the listener's CA, and a client
//! config checks the server's chain against the route's CA and the SNI name.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::client::ResolvesClientCert;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::{CredentialPaths, TlsMode};

/// A credential or CA file that cannot be used, with the file and the reason.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Missing or unreadable file, or no PEM block of the expected kind in it.
    #[error("{file}: {reason}")]
    File { file: PathBuf, reason: String },
    /// rustls refused the assembled configuration.
    #[error("{context}: {source}")]
    Rustls {
        context: String,
        source: rustls::Error,
    },
}

fn file_error(file: &Path, reason: impl Into<String>) -> TlsError {
    TlsError::File {
        file: file.to_owned(),
        reason: reason.into(),
    }
}

/// The process-wide crypto provider (aws-lc-rs), so every config agrees on it.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn read(file: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(file).map_err(|e| file_error(file, format!("cannot read: {e}")))
}

/// Every certificate in a PEM file, in order; an empty file is an error.
pub fn load_certs(file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(file)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(file, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(file_error(file, "holds no PEM certificate (expected -----BEGIN CERTIFICATE-----)"));
    }
    for cert in &certs {
        check_validity(file, cert)?;
    }
    Ok(certs)
}

/// Refuses a certificate that has expired or is not valid yet: serving or presenting
/// one only moves the failure to the peer, where it is harder to diagnose.
fn check_validity(file: &Path, cert: &CertificateDer<'_>) -> Result<(), TlsError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| file_error(file, format!("unparsable X.509 certificate: {e}")))?;
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let validity = parsed.validity();
    let subject = parsed.subject();
    if validity.not_after.timestamp() < now {
        return Err(file_error(file, format!("certificate {subject} expired at {}", validity.not_after)));
    }
    if validity.not_before.timestamp() > now {
        return Err(file_error(file, format!("certificate {subject} is not valid before {}", validity.not_before)));
    }
    Ok(())
}

/// The private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(file: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(file)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| file_error(file, format!("holds no usable PEM private key: {e}")))
}

/// A trust store from a CA bundle; every certificate in it (root or intermediate)
/// becomes a trust anchor, as in Istio's `ca.crt`.
pub fn load_roots(file: &Path) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(file)? {
        roots
            .add(cert)
            .map_err(|e| file_error(file, format!("not usable as a trust anchor: {e}")))?;
    }
    Ok(Arc::new(roots))
}

/// A certificate chain with its key, checked to belong together.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    let certified = CertifiedKey::from_der(chain, key_der, &provider()).map_err(|e| {
        file_error(key, format!("does not belong to the certificate in {}: {e}", cert.display()))
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
            not_after: SystemTime::UNIX_EPOCH,
            loaded_at: SystemTime::now(),
        };
        if let Some(leaf) = key.cert.first() {
            if let Ok((_, parsed)) = x509_parser::parse_x509_certificate(leaf) {
                info.subject = parsed.subject().to_string();
                info.serial = parsed.raw_serial_as_string();
                let secs = parsed.validity().not_after.timestamp().max(0) as u64;
                info.not_after = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs);
            }
        }
        info
    }
}

fn required<'a>(path: &'a Option<PathBuf>, what: &str) -> Result<&'a Path, TlsError> {
    path.as_deref().ok_or_else(|| file_error(Path::new("<config>"), format!("no {what} file configured")))
}

/// Builds the configuration a TLS listener uses for one route's hosts.
pub fn server_config(
    mode: TlsMode,
    key: Arc<CertifiedKey>,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls { context: "server protocol versions".into(), source })?;
    let builder = match (mode, client_ca) {
        (TlsMode::Mutual, Some(ca)) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(load_roots(ca)?, provider())
                .build()
                .map_err(|e| file_error(ca, format!("cannot verify clients with this CA bundle: {e}")))?;
            builder.with_client_cert_verifier(verifier)
        }
        (TlsMode::Mutual, None) => return Err(file_error(Path::new("<config>"), "mutual TLS needs a client CA")),
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(builder.with_cert_resolver(Arc::new(Fixed(key)))))
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
/// is presented in mutual mode.
pub fn client_config(client_key: Option<Arc<CertifiedKey>>, paths: &CredentialPaths) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = load_roots(required(&paths.ca, "CA")?)?;
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Rustls { context: "client protocol versions".into(), source })?
        .with_root_certificates(roots);
    let config = match client_key {
        Some(key) => builder.with_client_cert_resolver(Arc::new(Fixed(key))),
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
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

#[derive(Debug)]
struct NoCertificate;

impl ResolvesServerCert for NoCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}
