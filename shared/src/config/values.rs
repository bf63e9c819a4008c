//! Checked values: what a string field of the file becomes once it is known to be good.
//!
//! Each type here is parsed once, during validation, and then carried as it is; nothing
//! downstream parses the text again. The cipher suite and SAN tables live here, below
//! [`crate::tls`], so that validation needs nothing from the layer that builds rustls
//! configurations.

use std::fmt;
use std::net::SocketAddr;

use rustls::SupportedCipherSuite;
use rustls_pki_types::ServerName;
use serde::{Serialize, Serializer};

use crate::authz::{Pattern, PatternError};

/// An upstream `host:port`: the host is a DNS name or an IP address (IPv6 in brackets),
/// lower-cased, and the port is not 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    /// DNS name or IP literal (without brackets).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl HostPort {
    /// Parses `host:port` without resolving anything; the error says what is wrong.
    pub fn parse(text: &str) -> Result<HostPort, String> {
        let shape = || format!("{text:?} is not host:port (e.g. \"db.example.com:3306\", \"10.0.0.7:3306\" or \"[::1]:3306\")");
        let (host, port) = text.rsplit_once(':').ok_or_else(shape)?;
        let bracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
        let host = bracketed.unwrap_or(host);
        if host.is_empty() || (host.contains(':') && bracketed.is_none()) {
            return Err(shape());
        }
        let port: u16 = port.parse().map_err(|_| format!("{text:?}: the port {port:?} is not a number from 1 to 65535"))?;
        if port == 0 {
            return Err(format!("{text:?}: port 0 cannot be connected to; give the upstream's port"));
        }
        let host = host.to_ascii_lowercase();
        if ServerName::try_from(host.as_str()).is_err() {
            return Err(format!("{text:?}: {host:?} is not a DNS name or an IP address"));
        }
        Ok(HostPort { host, port })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl Serialize for HostPort {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A listener's bind address: an IP and a port (a name would need resolving at bind time,
/// and would make the bound address depend on DNS).
pub fn listen_address(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| format!("{text:?} is not ip:port, e.g. \"0.0.0.0:3306\" or \"[::]:3306\" (a listener binds an IP address, not a name)"))
}

/// One cipher suite of the provider (aws-lc-rs), found by its rustls name.
#[derive(Clone, Copy, Debug)]
pub struct CipherSuite(pub SupportedCipherSuite);

impl CipherSuite {
    /// The suite named `name` (`TLS13_AES_128_GCM_SHA256`, ...; case-insensitive).
    pub fn parse(name: &str) -> Result<CipherSuite, String> {
        rustls::crypto::aws_lc_rs::ALL_CIPHER_SUITES
            .iter()
            .find(|s| s.suite().as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
            .map(|s| CipherSuite(*s))
            .ok_or_else(|| format!("unknown cipher suite {name:?}; known: {}", CipherSuite::names().join(", ")))
    }

    /// Every suite name the provider knows, for messages.
    pub fn names() -> Vec<&'static str> {
        rustls::crypto::aws_lc_rs::ALL_CIPHER_SUITES.iter().filter_map(|s| s.suite().as_str()).collect()
    }

    /// The suite's rustls name.
    pub fn name(&self) -> &'static str {
        self.0.suite().as_str().unwrap_or("unknown")
    }
}

impl Serialize for CipherSuite {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// A `subject_alt_names` entry: a URI (SPIFFE ID, `*` per segment) or a DNS name
/// (`*.` for one label).
pub fn san_pattern(name: &str) -> Result<Pattern, PatternError> {
    if name.contains("://") {
        Pattern::parse(name)
    } else {
        Pattern::parse(&format!("dns:{name}"))
    }
}

/// Serializes identity patterns in the notation they are written in.
pub(super) fn patterns<S: Serializer>(patterns: &[Pattern], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(patterns.iter().map(|p| p.to_string()))
}

/// [`patterns`] for an optional list.
pub(super) fn optional_patterns<S: Serializer>(patterns: &Option<Vec<Pattern>>, s: S) -> Result<S::Ok, S::Error> {
    match patterns {
        Some(list) => self::patterns(list, s),
        None => s.serialize_none(),
    }
}

/// Serializes a server name as its text.
pub(super) fn server_name<S: Serializer>(name: &ServerName<'static>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&name.to_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_is_checked_once() {
        assert_eq!(HostPort::parse("Db.X:13306"), Ok(HostPort { host: "db.x".into(), port: 13306 }));
        assert_eq!(HostPort::parse("[::1]:80").map(|h| h.to_string()), Ok("[::1]:80".into()));
        assert_eq!(HostPort::parse("10.0.0.7:3306").map(|h| h.host), Ok("10.0.0.7".into()));
        for bad in ["::1:80", "x", ":80", "db:", "db:http", "db:70000", "db:0", "db host:80", "[::1:80"] {
            assert!(HostPort::parse(bad).is_err(), "{bad} parsed");
        }
        assert!(HostPort::parse("db:0").unwrap_err().contains("port 0"));
        assert!(HostPort::parse("db host:80").unwrap_err().contains("not a DNS name or an IP address"));
    }

    #[test]
    fn listen_addresses_are_ip_and_port() {
        assert_eq!(listen_address("127.0.0.1:3306"), Ok(SocketAddr::from(([127, 0, 0, 1], 3306))));
        assert!(listen_address("localhost:3306").unwrap_err().contains("not a name"));
        assert!(listen_address("0.0.0.0").is_err());
    }

    #[test]
    fn cipher_suites_by_name() {
        let suite = CipherSuite::parse("tls13_aes_128_gcm_sha256").unwrap();
        assert_eq!(suite.name(), "TLS13_AES_128_GCM_SHA256");
        assert_eq!(serde_json::to_string(&suite).unwrap(), "\"TLS13_AES_128_GCM_SHA256\"");
        let e = CipherSuite::parse("TLS_RSA_WITH_RC4_128_MD5").unwrap_err();
        assert!(e.contains("unknown cipher suite") && e.contains("TLS13_AES_256_GCM_SHA384"), "{e}");
    }

    #[test]
    fn san_patterns_are_uris_or_dns_names() {
        assert_eq!(san_pattern("spiffe://td/ns/a/sa/*").unwrap(), Pattern::Uri("spiffe://td/ns/a/sa/*".into()));
        assert_eq!(san_pattern("*.Example.com").unwrap(), Pattern::Dns("*.example.com".into()));
        assert!(san_pattern("a*.example.com").is_err());
    }
}
