//! Connecting a route to its upstream: resolve, TCP connect with fall-through, and
//! TLS origination.

use std::future::Future;
use std::net::SocketAddr;

use rustls_pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_util::either::Either;

use crate::error::{ConnError, ConnectFailure, UpstreamError};
use crate::resolve::Resolver;
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
    /// The SNI the client sent (lower case), if any: an `{sni}` upstream connects to it,
    /// and its origination sends and verifies it.
    pub sni: Option<&'a str>,
    /// The PROXY protocol header to write first on every upstream connection (the
    /// route's `send_proxy_protocol`), if any.
    pub proxy_header: Option<&'a [u8]>,
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

    /// The TCP part of [`Dialer::connect`]: resolve every endpoint, then the first
    /// address that accepts within the connect timeout, in the order of
    /// [`crate::endpoints`] (lowest priority first, usable addresses only, round robin).
    /// Database routes negotiate TLS inside their protocol before calling
    /// [`Dialer::originate`].
    pub async fn tcp(&self) -> Result<(TcpStream, SocketAddr), UpstreamError> {
        let route = self.route;
        let set = &route.endpoints;
        let candidates = set.candidates(self.resolver, route.connect_timeout, self.sni).await?;
        let mut failures = Vec::new();
        for candidate in &candidates {
            let addr = candidate.addr;
            let error = match timeout(route.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(mut tcp)) => match self.send_proxy_header(&mut tcp).await {
                    Ok(()) => {
                        crate::socket::tune(&tcp, &route.keepalive);
                        set.connected(candidate, route.origination.is_none());
                        return Ok((tcp, addr));
                    }
                    Err(e) => Some(e),
                },
                Ok(Err(e)) => Some(e),
                Err(_) => None,
            };
            set.failed(addr);
            failures.push(ConnectFailure { addr, error, timeout: route.connect_timeout });
        }
        Err(UpstreamError::Connect(failures))
    }

    /// Writes the PROXY protocol header, if the route sends one, within the connect
    /// timeout.
    async fn send_proxy_header(&self, tcp: &mut TcpStream) -> std::io::Result<()> {
        let Some(header) = self.proxy_header else { return Ok(()) };
        match timeout(self.route.connect_timeout, tcp.write_all(header)).await {
            Ok(written) => written,
            Err(_) => Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "writing the PROXY protocol header timed out")),
        }
    }

    /// Originates the route's TLS on `tcp` (plain when the route disables it).
    pub async fn originate(&self, addr: SocketAddr, tcp: TcpStream) -> Result<Stream, UpstreamError> {
        let route = self.route;
        let Some(origination) = &route.origination else {
            return Ok(Either::Left(tcp));
        };
        let server_name = match (origination.from_client, self.sni) {
            (true, Some(sni)) => ServerName::try_from(sni.to_owned()).map_err(|_| UpstreamError::Tls {
                addr,
                sni: sni.to_owned(),
                reason: "the client's SNI is not a DNS name".into(),
            })?,
            _ => origination.server_name.clone(),
        };
        let failed = |reason: String| UpstreamError::Tls { addr, sni: server_name.to_str().into_owned(), reason };
        let result = match handshake(origination, server_name.clone(), crate::stream::ReadAhead::new(tcp), route.connect_timeout).await {
            Ok(tls) => Ok(Either::Right(tls.into())),
            Err(reason) => Err(failed(reason)),
        };
        match &result {
            Ok(_) => route.endpoints.succeeded(addr),
            Err(_) => route.endpoints.failed(addr),
        }
        result
    }
}

/// The origination handshake alone, within `limit`: what a connection and a `tls`
/// health check both do, sending and verifying `server_name`. The error is the reason
/// in words.
pub async fn handshake<IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    origination: &crate::route::Origination,
    server_name: ServerName<'static>,
    io: IO,
    limit: std::time::Duration,
) -> Result<tokio_rustls::client::TlsStream<IO>, String> {
    let connector = TlsConnector::from(origination.config.clone());
    let handshake = connector.connect(server_name, io);
    match timeout(limit, handshake).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(crate::tls::describe(&e)),
        Err(_) => Err(format!("handshake timed out after {limit:?}")),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use tokio::net::TcpListener;

    use super::*;
    use crate::config::{Config, Role};
    use crate::endpoints::Registry;
    use crate::metrics::Metrics;
    use crate::route::{RouteTable, Routing};

    #[tokio::test]
    async fn a_refused_primary_falls_through_to_the_next_priority_and_is_ejected() {
        let live = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let text = format!(
            r#"
[[listener]]
name = "p"
address = "127.0.0.1:0"
route = "r"

[[route]]
name = "r"
upstreams = [{{ address = "{dead}", priority = 0 }}, {{ address = "{live}", priority = 1 }}]
upstream_tls = {{ mode = "disable" }}
outlier_detection = {{ consecutive_failures = 2, max_ejection_percent = 50 }}
"#,
            live = live.local_addr().unwrap()
        );
        let config = Config::parse(Path::new("t.toml"), text, Role::Egress).unwrap();
        let metrics = Arc::new(Metrics::new(None));
        let registry = Registry::new(metrics.clone());
        let table = RouteTable::build_with(&config, &registry).unwrap();
        let Routing::Plain(route) = &table.listener("p").unwrap().routing else { panic!("plain") };
        let resolver = Resolver::new(&crate::config::ResolverSettings::default()).unwrap();
        let dial = Dialer { route, resolver: &resolver, sni: None, proxy_header: None, cancels: None };
        for _ in 0..3 {
            let (_tcp, addr) = dial.tcp().await.unwrap();
            assert_eq!(addr, live.local_addr().unwrap());
        }
        let text = metrics.encode();
        let labels = format!("{{route=\"r\",endpoint=\"{dead}\"}}");
        assert!(text.contains(&format!("strait_upstream_endpoint_ejected{labels} 1")), "{text}");
        assert!(text.contains(&format!("strait_upstream_endpoint_ejections_total{labels} 1")), "{text}");
        assert!(text.contains(&format!("strait_upstream_endpoint_failovers_total{{route=\"r\",endpoint=\"{}\"}} 3", live.local_addr().unwrap())), "{text}");
        let report = registry.report();
        assert_eq!(report["r"][0]["endpoint"], dead.to_string(), "{report}");
        assert_eq!(report["r"][0]["addresses"][0]["state"], "ejected", "{report}");
        // The third connection did not try the ejected address at all.
        assert_eq!(report["r"][0]["addresses"][0]["consecutive_failures"], 0, "{report}");
    }
}
