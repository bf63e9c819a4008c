//! Connecting a route to its upstream: resolve, TCP connect with fall-through, and
//! TLS origination.

use std::future::Future;
use std::net::SocketAddr;

use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_util::either::Either;

use crate::error::{ConnError, ConnectFailure, UpstreamError};
use crate::resolve::{ResolveError, Resolver};
use crate::route::Route;

pub use crate::stream::Stream;

/// Runs an upstream set-up (DNS, connect, origination handshake, a database's greeting)
/// unless a plain TCP client closes first: then the set-up is dropped at once with
/// [`ConnError::ClientGone`] instead of holding its sockets until a timeout. A client
/// inside TLS is not watched (its socket's readiness is TLS's business).
pub async fn unless_client_gone<T, E: Into<ConnError>>(client: &Stream, setup: impl Future<Output = Result<T, E>>) -> Result<T, ConnError> {
    let Either::Left(tcp) = client else { return setup.await.map_err(Into::into) };
    tokio::select! {
        done = setup => done.map_err(Into::into),
        () = crate::socket::peer_closed(tcp) => Err(ConnError::ClientGone),
    }
}

/// How a connection reaches its route's upstream: what the pipeline hands a database
/// negotiation so that it can connect and originate at the moment its protocol says,
/// without knowing anything else of the pipeline.
pub struct Dialer<'a> {
    /// The route whose upstream, timeouts and origination TLS apply.
    pub route: &'a Route,
    /// Name resolution.
    pub resolver: &'a Resolver,
    /// The listener's CancelRequest limit for this client's address (PostgreSQL), if
    /// the listener has limits.
    pub cancels: Option<crate::limits::CancelGate<'a>>,
}

impl Dialer<'_> {
    /// Connects and originates TLS if the route asks for it.
    pub async fn connect(&self) -> Result<(Stream, SocketAddr), UpstreamError> {
        let (tcp, addr) = self.tcp().await?;
        Ok((self.originate(addr, tcp).await?, addr))
    }

    /// The TCP part of [`Dialer::connect`]: resolve, then the first address (round robin)
    /// that accepts within the connect timeout. Database routes negotiate TLS inside
    /// their protocol before calling [`Dialer::originate`].
    pub async fn tcp(&self) -> Result<(TcpStream, SocketAddr), UpstreamError> {
        let route = self.route;
        let addrs = match timeout(route.connect_timeout, self.resolver.lookup(&route.host, route.port)).await {
            Ok(answer) => answer?,
            Err(_) => {
                let reason = format!("no answer within connect_timeout ({:?})", route.connect_timeout);
                return Err(ResolveError::Lookup { host: route.host.clone(), reason }.into());
            }
        };
        let first = route.first_address(addrs.len());
        let mut failures = Vec::new();
        for addr in addrs.iter().cycle().skip(first).take(addrs.len()) {
            let error = match timeout(route.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(tcp)) => {
                    crate::socket::tune(&tcp, &route.keepalive);
                    return Ok((tcp, *addr));
                }
                Ok(Err(e)) => Some(e),
                Err(_) => None,
            };
            failures.push(ConnectFailure { addr: *addr, error, timeout: route.connect_timeout });
        }
        Err(UpstreamError::Connect(failures))
    }

    /// Originates the route's TLS on `tcp` (plain when the route disables it).
    pub async fn originate(&self, addr: SocketAddr, tcp: TcpStream) -> Result<Stream, UpstreamError> {
        let route = self.route;
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
}
