//! Certificates for demos and tests, in the reference layout.
//!
//! The tutorial's `create-keys.sh` makes root CA -> intermediate CA -> a server
//! certificate for `$SERVICE_URL` and a client certificate; the mesh has its own CA
//! issuing SPIFFE workload certificates. [`write_reference`] writes exactly that, each
//! credential as a Kubernetes Secret directory (`tls.crt`, `tls.key`, `ca.crt`), so the
//! demo and the tests use the project's own tool instead of openssl recipes.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use rustls_pki_types::pem::PemObject;
use time::{Duration, OffsetDateTime};

/// Why certificates could not be made or written.
#[derive(Debug, thiserror::Error)]
pub enum CertsError {
    /// rcgen refused the parameters (a name that is not IA5, say).
    #[error("cannot make certificate {name:?}: {source}")]
    Generate {
        /// The certificate being made.
        name: String,
        /// What rcgen said.
        source: rcgen::Error,
    },
    /// The output could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: std::path::PathBuf,
        /// Why it could not be written.
        source: std::io::Error,
    },
}

/// Key algorithm for every key made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum KeyType {
    /// ECDSA P-256: small and fast; the default.
    #[default]
    EcdsaP256,
    /// RSA 2048, for peers that cannot do ECDSA.
    Rsa2048,
}

impl KeyType {
    fn generate(self) -> Result<KeyPair, rcgen::Error> {
        match self {
            KeyType::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
            KeyType::Rsa2048 => KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, rcgen::RsaKeySize::_2048),
        }
    }
}

/// A certificate authority that can issue leaves and intermediates.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// This CA's certificate followed by its parents', PEM.
    chain: Vec<String>,
    key_type: KeyType,
}

/// What a leaf certificate is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Usage {
    /// TLS server (serverAuth EKU).
    Server,
    /// TLS client (clientAuth EKU).
    Client,
    /// Both, like mesh workload certificates.
    Both,
}

/// The names and lifetime of a leaf certificate.
#[derive(Clone, Debug)]
pub struct Leaf {
    /// Subject common name.
    pub common_name: String,
    /// DNS SANs.
    pub dns: Vec<String>,
    /// URI SANs (SPIFFE IDs).
    pub uris: Vec<String>,
    /// Extended key usage.
    pub usage: Usage,
    /// Start of validity relative to now (negative: in the past).
    pub valid_from: Duration,
    /// End of validity relative to now.
    pub valid_until: Duration,
}

impl Leaf {
    /// A leaf valid from an hour ago for `days` days.
    pub fn new(common_name: &str, usage: Usage, days: i64) -> Leaf {
        Leaf {
            common_name: common_name.to_owned(),
            dns: Vec::new(),
            uris: Vec::new(),
            usage,
            valid_from: Duration::hours(-1),
            valid_until: Duration::days(days),
        }
    }
}

/// A leaf certificate with its key, PEM.
pub struct Issued {
    /// Leaf followed by the issuing intermediates (what a peer needs to build the path).
    pub chain_pem: String,
    /// PKCS#8 private key.
    pub key_pem: String,
}

impl Issued {
    /// The leaf's serial number, as a CRL names it.
    fn serial(&self) -> Result<SerialNumber, rcgen::Error> {
        let leaf = rustls_pki_types::CertificateDer::from_pem_slice(self.chain_pem.as_bytes()).map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
        let (_, parsed) = x509_parser::parse_x509_certificate(&leaf).map_err(|_| rcgen::Error::CouldNotParseCertificate)?;
        Ok(SerialNumber::from_slice(parsed.raw_serial()))
    }
}

fn params(common_name: &str, from: Duration, until: Duration) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.distinguished_name.push(DnType::OrganizationName, "Strait demo");
    let now = OffsetDateTime::now_utc();
    params.not_before = now + from;
    params.not_after = now + until;
    params
}

impl Authority {
    /// A self-signed root CA valid for `days`.
    pub fn root(common_name: &str, key_type: KeyType, days: i64) -> Result<Authority, CertsError> {
        let failed = |source| CertsError::Generate { name: common_name.to_owned(), source };
        let mut params = params(common_name, Duration::hours(-1), Duration::days(days));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let key = key_type.generate().map_err(failed)?;
        let cert = params.self_signed(&key).map_err(failed)?;
        Ok(Authority { issuer: Issuer::new(params, key), chain: vec![cert.pem()], key_type })
    }

    /// An intermediate CA signed by this one.
    pub fn intermediate(&self, common_name: &str, days: i64) -> Result<Authority, CertsError> {
        let failed = |source| CertsError::Generate { name: common_name.to_owned(), source };
        let mut params = params(common_name, Duration::hours(-1), Duration::days(days));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.use_authority_key_identifier_extension = true;
        let key = self.key_type.generate().map_err(failed)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(failed)?;
        let mut chain = vec![cert.pem()];
        chain.extend(self.chain.iter().cloned());
        Ok(Authority { issuer: Issuer::new(params, key), chain, key_type: self.key_type })
    }

    /// Issues a leaf certificate.
    pub fn issue(&self, leaf: &Leaf) -> Result<Issued, CertsError> {
        let failed = |source| CertsError::Generate { name: leaf.common_name.clone(), source };
        let mut params = params(&leaf.common_name, leaf.valid_from, leaf.valid_until);
        for dns in &leaf.dns {
            params.subject_alt_names.push(SanType::DnsName(dns.as_str().try_into().map_err(failed)?));
        }
        for uri in &leaf.uris {
            params.subject_alt_names.push(SanType::URI(uri.as_str().try_into().map_err(failed)?));
        }
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = match leaf.usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::Both => vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth],
        };
        params.use_authority_key_identifier_extension = true;
        let key = self.key_type.generate().map_err(failed)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(failed)?;
        // The chain a peer needs: leaf plus every intermediate, but not the root.
        let mut chain_pem = cert.pem();
        for ca in &self.chain[..self.chain.len() - 1] {
            chain_pem.push_str(ca);
        }
        Ok(Issued { chain_pem, key_pem: key.serialize_pem() })
    }

    /// This CA and its parents up to the root, PEM: a `ca.crt` that trusts this CA.
    pub fn bundle_pem(&self) -> String {
        self.chain.concat()
    }

    /// A CRL (number `number`, valid for a day) signed by this CA, revoking the leaves
    /// `revoked` it issued, PEM: how a lab or a test revokes without openssl.
    pub fn revocation_list(&self, revoked: &[&Issued], number: u64) -> Result<String, CertsError> {
        let failed = |source| CertsError::Generate { name: "CRL".into(), source };
        let now = OffsetDateTime::now_utc();
        let mut revoked_certs = Vec::new();
        for issued in revoked {
            let serial = issued.serial().map_err(failed)?;
            revoked_certs.push(RevokedCertParams { serial_number: serial, revocation_time: now, reason_code: None, invalidity_date: None });
        }
        let params = CertificateRevocationListParams {
            this_update: now - Duration::minutes(1),
            next_update: now + Duration::days(1),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        };
        params.signed_by(&self.issuer).map_err(failed)?.pem().map_err(failed)
    }
}

fn write(path: &Path, contents: &str) -> Result<(), CertsError> {
    let failed = |source| CertsError::Write { path: path.to_owned(), source };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }
    std::fs::write(path, contents).map_err(failed)?;
    if path.extension().is_some_and(|e| e == "key") {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
    }
    Ok(())
}

/// Writes a credential as a Kubernetes Secret directory: `tls.crt`, `tls.key`, `ca.crt`.
pub fn write_secret(dir: &Path, issued: &Issued, ca_bundle_pem: &str) -> Result<(), CertsError> {
    write(&dir.join("tls.crt"), &issued.chain_pem)?;
    write(&dir.join("tls.key"), &issued.key_pem)?;
    write(&dir.join("ca.crt"), ca_bundle_pem)
}

/// Options for [`write_reference`].
#[derive(Clone, Debug)]
pub struct ReferenceOptions {
    /// `$SERVICE_URL`: the ingress's DNS name, SNI on the cross-cluster hop.
    pub host: String,
    /// Mesh trust domain for SPIFFE IDs.
    pub trust_domain: String,
    /// Leaf validity in days (CAs get ten times as long).
    pub days: i64,
    /// Key algorithm.
    pub key_type: KeyType,
}

/// Writes the reference PKI under `out`:
/// - `ca-chain.cert.pem`: the cross-cluster root + intermediate (the tutorial's file);
/// - `ingress/`: server certificate for `host`, `ca.crt` = the chain that verifies clients;
/// - `egress/`: the client certificate the egress presents to the ingress;
/// - `mesh/egress/`: the egress's mesh listener certificate (SPIFFE ID plus DNS `host`);
/// - `mesh/client/`: an in-mesh workload (`spiffe://TD/ns/default/sa/client`).
pub fn write_reference(out: &Path, options: &ReferenceOptions) -> Result<(), CertsError> {
    let ReferenceOptions { host, trust_domain, days, key_type } = options;
    let root = Authority::root("Strait Root CA", *key_type, days * 10)?;
    let intermediate = root.intermediate("Strait Intermediate CA", days * 10)?;
    let chain = intermediate.bundle_pem();
    write(&out.join("ca-chain.cert.pem"), &chain)?;

    let mut server = Leaf::new(host, Usage::Server, *days);
    server.dns.push(host.clone());
    write_secret(&out.join("ingress"), &intermediate.issue(&server)?, &chain)?;

    let mut client = Leaf::new(&format!("client.{host}"), Usage::Client, *days);
    client.dns.push(format!("client.{host}"));
    write_secret(&out.join("egress"), &intermediate.issue(&client)?, &chain)?;

    let mesh = Authority::root(&format!("{trust_domain} mesh CA"), *key_type, days * 10)?;
    let mut gateway = Leaf::new("egress-gateway", Usage::Both, *days);
    gateway.uris.push(format!("spiffe://{trust_domain}/ns/istio-system/sa/egress-gateway"));
    gateway.dns.push(host.clone());
    write_secret(&out.join("mesh/egress"), &mesh.issue(&gateway)?, &mesh.bundle_pem())?;

    let mut workload = Leaf::new("client", Usage::Both, *days);
    workload.uris.push(format!("spiffe://{trust_domain}/ns/default/sa/client"));
    write_secret(&out.join("mesh/client"), &mesh.issue(&workload)?, &mesh.bundle_pem())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    #[test]
    fn reference_layout_loads_and_names_identities() {
        let dir = std::env::temp_dir().join(format!("strait-certs-{}", std::process::id()));
        let options = ReferenceOptions { host: "db.example.com".into(), trust_domain: "cluster.local".into(), days: 30, key_type: KeyType::EcdsaP256 };
        write_reference(&dir, &options).unwrap();
        for secret in ["ingress", "egress", "mesh/egress", "mesh/client"] {
            let d = dir.join(secret);
            crate::tls::load_certified_key(&d.join("tls.crt"), &d.join("tls.key")).unwrap();
            crate::tls::load_roots(&d.join("ca.crt")).unwrap();
        }
        let pem = std::fs::read(dir.join("mesh/client/tls.crt")).unwrap();
        let leaf = CertificateDer::pem_slice_iter(&pem).next().unwrap().unwrap();
        assert_eq!(Identity::from_cert(&leaf).to_string(), "spiffe://cluster.local/ns/default/sa/client");
        // Server chain = leaf + intermediate; ca.crt = intermediate + root.
        assert_eq!(crate::tls::load_certs(&dir.join("ingress/tls.crt")).unwrap().len(), 2);
        assert_eq!(crate::tls::load_certs(&dir.join("ingress/ca.crt")).unwrap().len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mismatched_key_is_refused_with_both_files_named() {
        let dir = std::env::temp_dir().join(format!("strait-mismatch-{}", std::process::id()));
        let ca = Authority::root("ca", KeyType::EcdsaP256, 1).unwrap();
        let a = ca.issue(&Leaf::new("a", Usage::Server, 1)).unwrap();
        let b = ca.issue(&Leaf::new("b", Usage::Server, 1)).unwrap();
        write(&dir.join("tls.crt"), &a.chain_pem).unwrap();
        write(&dir.join("tls.key"), &b.key_pem).unwrap();
        let e = crate::tls::load_certified_key(&dir.join("tls.crt"), &dir.join("tls.key")).unwrap_err().to_string();
        assert!(e.contains("tls.key: does not belong to the certificate in") && e.contains("tls.crt"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
