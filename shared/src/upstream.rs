//! Connecting a route to its upstream: resolve, TCP connect with fall-through, and
//! TLS origination.

use std::net::SocketAddr;

use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_util::either::Either;

use crate::resolve::{ResolveError, Resolver};
use crate::route::Route;

pub use crate::stream::Stream;

/// Why a route's upstream could not be reached; the message goes to the access log.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// DNS gave nothing to connect to.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// Every address refused or timed out.
    #[error("no upstream address accepted the connection: {0}")]
    Connect(String),
    /// The TCP connection was made but the origination handshake failed.
    #[error("TLS origination to {addr} (SNI {sni}) failed: {reason}")]
    Tls { addr: SocketAddr, sni: String, reason: String },
}

/// Connects to `route`'s upstream, trying each resolved address in round-robin order
/// until one accepts, then originates TLS if the route asks for it.
pub async fn connect(route: &Route, resolver: &Resolver) -> Result<(Stream, SocketAddr), UpstreamError> {
    let (tcp, addr) = connect_tcp(route, resolver).await?;
    Ok((originate(route, addr, tcp).await?, addr))
}

/// The TCP part of [`connect`]: resolve, then the first address (round robin) that
/// accepts within the connect timeout. Database routes negotiate TLS inside their
/// protocol before calling [`originate`].
pub async fn connect_tcp(route: &Route, resolver: &Resolver) -> Result<(TcpStream, SocketAddr), UpstreamError> {
    let addrs = match timeout(route.connect_timeout, resolver.lookup(&route.host, route.port)).await {
        Ok(answer) => answer?,
        Err(_) => {
            let reason = format!("no answer within connect_timeout ({:?})", route.connect_timeout);
            return Err(ResolveError::Lookup { host: route.host.clone(), reason }.into());
        }
    };
    let first = route.first_address(addrs.len());
    let mut failures = Vec::new();
    for addr in addrs.iter().cycle().skip(first).take(addrs.len()) {
        let tcp = match timeout(route.connect_timeout, TcpStream::connect(addr)).await {
            Ok(Ok(tcp)) => tcp,
            Ok(Err(e)) => {
                failures.push(format!("{addr}: {e}"));
                continue;
            }
            Err(_) => {
                failures.push(format!("{addr}: timed out after {:?}", route.connect_timeout));
                continue;
            }
        };
        crate::socket::tune(&tcp, &route.keepalive);
        return Ok((tcp, *addr));
    }
    Err(UpstreamError::Connect(failures.join("; ")))
}

/// Originates the route's TLS on `tcp` (plain when the route disables it).
pub async fn originate(route: &Route, addr: SocketAddr, tcp: TcpStream) -> Result<Stream, UpstreamError> {
    let Some(origination) = &route.origination else {
        return Ok(Either::Left(tcp));
    };
    let failed = |reason: String| UpstreamError::Tls { addr, sni: origination.server_name.to_str().into_owned(), reason };
    let connector = TlsConnector::from(origination.config.clone());
    let handshake = connector.connect(origination.server_name.clone(), tcp);
    match timeout(route.connect_timeout, handshake).await {
        Ok(Ok(tls)) => Ok(Either::Right(tls.into())),
        Ok(Err(e)) => Err(failed(crate::tls::describe(&e))),
        Err(_) => Err(failed(format!("handshake timed out after {:?}", route.connect_timeout))),
    }
}
