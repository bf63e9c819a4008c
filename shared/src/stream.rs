//! A connection on either side of the relay: plain TCP, or TLS over TCP.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::either::Either;

/// Plain TCP or TLS; what the relay pumps between.
pub type Stream = Either<TcpStream, TlsConn>;

/// The identity a stream's peer proved with its certificate, if it is TLS and sent one.
pub trait PeerIdentity {
    /// The peer's certificate identity.
    fn peer_identity(&self) -> Option<crate::identity::Identity>;
}

impl PeerIdentity for Stream {
    fn peer_identity(&self) -> Option<crate::identity::Identity> {
        match self {
            Either::Left(_) => None,
            Either::Right(tls) => tls.get_ref().1.peer_certificates().and_then(|chain| chain.first()).map(crate::identity::Identity::from_cert),
        }
    }
}

/// A TLS connection that also sends what rustls queued while reading.
///
/// tokio-rustls writes TLS records only when its writer is polled. Records rustls
/// produces in response to what it reads — the `no_renegotiation` alert for a TLS 1.2
/// renegotiation attempt, key-update answers — would otherwise wait for the next
/// application write, which may never come: the peer hangs until the idle timeout.
///
/// Boxed: the rustls state is over a kilobyte, and inline it would make every `Stream`
/// that size, plain ones included, in every future that holds one — memory each idle
/// connection pays for.
pub struct TlsConn(Box<tokio_rustls::TlsStream<TcpStream>>);

impl TlsConn {
    /// The TCP socket and the TLS state.
    pub fn get_ref(&self) -> (&TcpStream, &rustls::CommonState) {
        self.0.get_ref()
    }
}

impl From<tokio_rustls::server::TlsStream<TcpStream>> for TlsConn {
    fn from(tls: tokio_rustls::server::TlsStream<TcpStream>) -> Self {
        TlsConn(Box::new(tls.into()))
    }
}

impl From<tokio_rustls::client::TlsStream<TcpStream>> for TlsConn {
    fn from(tls: tokio_rustls::client::TlsStream<TcpStream>) -> Self {
        TlsConn(Box::new(tls.into()))
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let read = Pin::new(&mut *self.0).poll_read(cx, buf);
        if self.0.get_ref().1.wants_write() {
            // Best effort: a write error will surface on the next write or read.
            let _ = Pin::new(&mut *self.0).poll_flush(cx);
        }
        read
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}
