//! Who a peer certificate names: the identity the access log records and that
//! authorization will match on.

use std::fmt;

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// The names a certificate carries, most specific kind first when displayed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// URI SANs, e.g. `spiffe://cluster.local/ns/default/sa/client`.
    pub uris: Vec<String>,
    /// DNS SANs.
    pub dns: Vec<String>,
    /// Subject common name, the fallback for certificates without SANs.
    pub common_name: Option<String>,
}

impl Identity {
    /// Reads the names from a DER certificate; an unparsable one yields no names.
    pub fn from_cert(cert: &CertificateDer<'_>) -> Identity {
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert) else {
            return Identity::default();
        };
        let mut id =
            Identity { common_name: parsed.subject().iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned), ..Identity::default() };
        if let Ok(Some(san)) = parsed.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::URI(uri) => id.uris.push((*uri).to_owned()),
                    GeneralName::DNSName(dns) => id.dns.push((*dns).to_owned()),
                    _ => {}
                }
            }
        }
        id
    }
}

impl fmt::Display for Identity {
    /// The single name an operator looks for: a SPIFFE/URI SAN, else a DNS SAN, else the CN.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(uri) = self.uris.first() {
            f.write_str(uri)
        } else if let Some(dns) = self.dns.first() {
            f.write_str(dns)
        } else if let Some(cn) = &self.common_name {
            write!(f, "CN={cn}")
        } else {
            f.write_str("-")
        }
    }
}
