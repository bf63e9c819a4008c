//! Database protocols whose TLS starts inside the protocol (MySQL, PostgreSQL).
//!
//! Such a route runs a negotiation step between the TCP connections and the relay:
//! it answers or strips the client's TLS request, makes its own TLS request upstream,
//! upgrades each side that must be TLS, and hands the relay two streams. Nothing read
//! before a TLS handshake is carried into the encrypted session: PostgreSQL peers must
//! wait for the `S`, so bytes already there close the connection (the CVE-2021-23214 /
//! 23222 class); MySQL clients send their ClientHello right after the SSL request, so
//! those bytes are left in the socket for the handshake, which rejects anything that is
//! not TLS, and plaintext read earlier is never replayed into the session; every packet
//! before the relay has a size cap; the whole negotiation has the listener's handshake
//! timeout.

pub mod mysql;
pub mod postgres;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;

use crate::access_log::{AccessLog, Outcome, Refusal};
use crate::config::{Protocol, SslMode};
use crate::identity::Identity;
use crate::resolve::Resolver;
use crate::route::Route;
use crate::upstream::Stream;

/// Largest packet accepted before the relay starts (greetings, startup and auth
/// packets are far smaller; this only bounds what a hostile peer can make us hold).
pub const MAX_NEGOTIATION_PACKET: usize = 64 * 1024;

/// Runs `route`'s protocol negotiation; returns the two streams, ready to relay.
pub async fn negotiate(route: &Route, downstream: Stream, resolver: &Resolver, log: &mut AccessLog, timeout: Duration) -> Result<(Stream, Stream), Outcome> {
    let negotiation = async {
        match route.protocol {
            Protocol::Mysql => mysql::negotiate(route, downstream, resolver, log).await,
            Protocol::Postgres => postgres::negotiate(route, downstream, resolver, log).await,
            Protocol::Tcp => unreachable!("tcp routes have no negotiation"),
        }
    };
    match tokio::time::timeout(timeout, negotiation).await {
        Ok(result) => result,
        Err(_) => Err(Outcome::Refused(Refusal::Timeout, format!("{} negotiation not finished within {timeout:?}", route.protocol.as_str()))),
    }
}

/// What the client side may do, given the route and how the client arrived: a client
/// already inside TLS (a TLS listener) is neither offered nor required TLS again.
fn client_side(route: &Route, downstream: &Stream) -> SslMode {
    match downstream {
        Either::Right(_) => SslMode::Disabled,
        Either::Left(_) => route.downstream_ssl.mode,
    }
}

/// Refuses to go on if the peer sent anything after its TLS request: those bytes would
/// otherwise be taken as part of the TLS session.
async fn nothing_pending(tcp: &TcpStream, who: &str) -> Result<(), Outcome> {
    let mut probe = [0u8; 1];
    let pending = matches!(tokio::time::timeout(Duration::ZERO, tcp.peek(&mut probe)).await, Ok(Ok(n)) if n > 0);
    if pending {
        return Err(Outcome::Refused(Refusal::Other, format!("{who} sent data after its TLS request, before the handshake: refused (CVE-2021-23214 class)")));
    }
    Ok(())
}

/// Terminates the client's in-protocol TLS with the route's server config; records
/// the client's identity.
async fn accept_client_tls(route: &Route, tcp: TcpStream, log: &mut AccessLog) -> Result<Stream, Outcome> {
    let config = route.downstream_ssl.server.clone().expect("TLS is only offered with a server config");
    let tls = TlsAcceptor::from(config)
        .accept(tcp)
        .await
        .map_err(|e| Outcome::Refused(Refusal::of_handshake(&e), format!("client TLS handshake (inside {}) failed: {e}", route.protocol.as_str())))?;
    log.identity = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(Identity::from_cert);
    log.mtls = log.identity.is_some();
    log.downstream_tls = true;
    Ok(Either::Right(tls.into()))
}

/// The route's allow list, checked once the client's identity is known.
fn authorize(route: &Route, log: &AccessLog) -> Result<(), Outcome> {
    if route.allow.allows(log.identity.as_ref()) {
        return Ok(());
    }
    Err(crate::connection::denied(route, log))
}

/// Reads exactly `n` bytes (for length-prefixed messages read without over-reading).
async fn read_exact_vec<S: AsyncRead + Unpin>(stream: &mut S, n: usize, what: &str) -> Result<Vec<u8>, Outcome> {
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).await.map_err(|e| Outcome::Refused(Refusal::ClientClosed, format!("{what}: {e}")))?;
    Ok(buf)
}

/// An upstream failure during negotiation.
fn upstream_failed(what: impl Into<String>) -> Outcome {
    Outcome::UpstreamFailed(what.into())
}

/// A protocol violation by the client.
fn client_error(what: impl Into<String>) -> Outcome {
    Outcome::Refused(Refusal::Other, what.into())
}

/// The server's TLS, with our connection, bounded by the caller's timeout.
async fn originate(route: &Route, tcp: TcpStream, addr: std::net::SocketAddr, log: &mut AccessLog) -> Result<Stream, Outcome> {
    let stream = crate::upstream::originate(route, addr, tcp).await.map_err(|e| upstream_failed(e.to_string()))?;
    log.upstream_tls = matches!(stream, Either::Right(_));
    Ok(stream)
}

/// Shared by the two protocols: connects TCP to the route's upstream.
async fn connect(route: &Route, resolver: &Resolver, log: &mut AccessLog) -> Result<(TcpStream, std::net::SocketAddr), Outcome> {
    let (tcp, addr) = crate::upstream::connect_tcp(route, resolver).await.map_err(|e| {
        crate::metrics::get().upstream_failed(&route.name, matches!(e, crate::upstream::UpstreamError::Resolve(_)));
        upstream_failed(e.to_string())
    })?;
    log.upstream = Some(addr);
    Ok((tcp, addr))
}
