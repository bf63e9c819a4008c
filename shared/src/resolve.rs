//! Upstream name resolution with hickory-resolver.
//!
//! Answers are cached for their TTL by hickory; every lookup returns all addresses so
//! the caller can spread connections round robin and fall through on failure.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::TokioResolver;

use crate::config::ResolverSettings;

/// Why a name gave no address.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// The resolver could not be set up (unreadable resolv.conf, say).
    #[error("cannot set up the DNS resolver: {0}")]
    Setup(String),
    /// The lookup failed or returned no address.
    #[error("no DNS answer for {host}: {reason}")]
    Lookup {
        /// The name looked up.
        host: String,
        /// Why it gave nothing, in words.
        reason: String,
    },
}

/// Shared by every connection of a process.
pub struct Resolver {
    inner: TokioResolver,
}

impl Resolver {
    /// Uses the configured name servers, or the system's when none are given.
    pub fn new(settings: &ResolverSettings) -> Result<Resolver, ResolveError> {
        let setup = |e: hickory_resolver::net::NetError| ResolveError::Setup(e.to_string());
        let builder = if settings.nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(setup)?
        } else {
            let servers = settings.nameservers.iter().map(|addr| {
                let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                for connection in &mut server.connections {
                    connection.port = addr.port();
                }
                server
            });
            let config = ResolverConfig::from_name_servers(servers.collect());
            TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        };
        Ok(Resolver { inner: builder.build().map_err(setup)? })
    }

    /// Every address for `host` (an IP literal resolves to itself), each with `port`.
    pub async fn lookup(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, ResolveError> {
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let failed = |reason: String| ResolveError::Lookup { host: host.to_owned(), reason };
        let answer = self.inner.lookup_ip(host).await.map_err(|e| {
            failed(if e.is_nx_domain() {
                "the name does not exist (NXDOMAIN)".to_owned()
            } else if e.is_no_records_found() {
                "the name has no A or AAAA record".to_owned()
            } else {
                e.to_string()
            })
        })?;
        let addrs: Vec<SocketAddr> = answer.iter().map(|ip| SocketAddr::new(ip, port)).collect();
        if addrs.is_empty() {
            return Err(failed("the answer holds no A or AAAA record".into()));
        }
        Ok(addrs)
    }
}
