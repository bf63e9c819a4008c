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

use crate::access_log::Sides;
use crate::config::{Protocol, SslMode};
use crate::error::ConnError;
use crate::identity::Identity;
use crate::route::Route;
use crate::stream::PeerIdentity;
use crate::upstream::{Dialer, Stream};

/// Largest packet accepted before the relay starts (greetings, startup and auth
/// packets are far smaller; this only bounds what a hostile peer can make us hold).
pub const MAX_NEGOTIATION_PACKET: usize = 64 * 1024;

/// Runs the route's protocol negotiation within `timeout`: `dial` reaches the upstream
/// when the protocol says so, and `sides` learns the client's identity, the upstream
/// address and which sides became TLS. Returns the two streams, ready to relay.
pub async fn negotiate(downstream: Stream, dial: &Dialer<'_>, sides: &mut Sides, timeout: Duration) -> Result<(Stream, Stream), ConnError> {
    let protocol = dial.route.protocol;
    let negotiation = async {
        match protocol {
            Protocol::Mysql => mysql::negotiate(downstream, dial, sides).await,
            Protocol::Postgres => postgres::negotiate(downstream, dial, sides).await,
            Protocol::Tcp => unreachable!("tcp routes have no negotiation"),
        }
    };
    match tokio::time::timeout(timeout, negotiation).await {
        Ok(result) => result,
        Err(_) => Err(ConnError::NegotiationTimeout { protocol: protocol.as_str(), limit: timeout }),
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
async fn nothing_pending(tcp: &TcpStream, who: &str) -> Result<(), ConnError> {
    let mut probe = [0u8; 1];
    let pending = matches!(tokio::time::timeout(Duration::ZERO, tcp.peek(&mut probe)).await, Ok(Ok(n)) if n > 0);
    if pending {
        return Err(ConnError::client(format!("{who} sent data after its TLS request, before the handshake: refused (CVE-2021-23214 class)")));
    }
    Ok(())
}

/// Terminates the client's in-protocol TLS with the route's server config; records
/// the client's identity.
async fn accept_client_tls(route: &Route, tcp: TcpStream, sides: &mut Sides) -> Result<Stream, ConnError> {
    let config = route.downstream_ssl.server.clone().expect("TLS is only offered with a server config");
    let tls = TlsAcceptor::from(config)
        .accept(crate::stream::ReadAhead::new(tcp))
        .await
        .map_err(|source| ConnError::ProtocolHandshake { protocol: route.protocol.as_str(), source })?;
    sides.identity = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(Identity::from_cert);
    sides.downstream_tls = true;
    Ok(Either::Right(tls.into()))
}

/// The route's allow list, checked once the client's identity is known.
fn authorize(route: &Route, sides: &Sides) -> Result<(), ConnError> {
    if route.allow.allows(sides.identity.as_ref()) {
        return Ok(());
    }
    Err(ConnError::Denied { identity: sides.identity.clone(), route: route.name.clone() })
}

/// Reads exactly `n` bytes (for length-prefixed messages read without over-reading).
async fn read_exact_vec<S: AsyncRead + Unpin>(stream: &mut S, n: usize, what: &str) -> Result<Vec<u8>, ConnError> {
    let mut buf = vec![0u8; n];
    stream.read_exact(&mut buf).await.map_err(|e| ConnError::client_closed(format!("{what}: {e}")))?;
    Ok(buf)
}

/// The server's TLS, with our connection, bounded by the caller's timeout.
async fn originate(dial: &Dialer<'_>, tcp: TcpStream, addr: std::net::SocketAddr, sides: &mut Sides) -> Result<Stream, ConnError> {
    let stream = dial.originate(addr, tcp).await?;
    sides.upstream_tls = matches!(stream, Either::Right(_));
    sides.upstream_identity = stream.peer_identity();
    Ok(stream)
}

/// Shared by the two protocols: connects TCP to the route's upstream.
async fn connect(dial: &Dialer<'_>, sides: &mut Sides) -> Result<(TcpStream, std::net::SocketAddr), ConnError> {
    let (tcp, addr) = dial.tcp().await?;
    sides.upstream = Some(addr);
    Ok((tcp, addr))
}
