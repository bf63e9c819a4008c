//! A connection on either side of the relay: plain TCP, or TLS over TCP.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::either::Either;

/// Plain TCP or TLS; what the relay pumps between.
pub type Stream = Either<TcpStream, TlsConn>;

/// The socket under a TLS session: what rustls reads its records from.
pub type TlsSocket = ReadAhead;

/// How much [`ReadAhead`] takes from the socket at once: two full TLS records.
const READ_AHEAD_SIZE: usize = 32 * 1024;

/// A TCP socket that reads ahead for rustls once records arrive larger than rustls asks.
///
/// rustls reads a record in steps of 4 KiB (after a record it shrinks its buffer back to
/// 4 KiB), so a 12 KiB database result set costs four `recvfrom`s and a bulk transfer
/// about one per record. A read that fills what rustls asked for says more is waiting:
/// the next reads take up to [`READ_AHEAD_SIZE`] from the socket into a buffer of its own
/// and hand it out from there. The buffer is freed as soon as the socket has nothing
/// more, so an idle connection holds none; small records are read straight into rustls'
/// buffer, as before.
pub struct ReadAhead {
    tcp: TcpStream,
    /// Bytes read ahead; `buffer[start..end]` is not handed out yet. Empty when idle.
    buffer: Vec<u8>,
    start: usize,
    end: usize,
}

impl ReadAhead {
    /// Wraps the socket a TLS session is about to use.
    pub fn new(tcp: TcpStream) -> ReadAhead {
        ReadAhead { tcp, buffer: Vec::new(), start: 0, end: 0 }
    }

    /// The socket.
    pub fn get_ref(&self) -> &TcpStream {
        &self.tcp
    }
}

impl AsyncRead for ReadAhead {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.start == this.end {
            if this.buffer.is_empty() {
                let asked = out.remaining();
                let before = out.filled().len();
                let read = Pin::new(&mut this.tcp).poll_read(cx, out);
                if matches!(read, Poll::Ready(Ok(()))) && asked > 0 && out.filled().len() - before == asked {
                    // Filled: more is likely waiting (a large record); read ahead from now on.
                    this.buffer = vec![0u8; READ_AHEAD_SIZE];
                }
                return read;
            }
            let mut ahead = ReadBuf::new(&mut this.buffer);
            match Pin::new(&mut this.tcp).poll_read(cx, &mut ahead) {
                Poll::Ready(Ok(())) => {
                    let n = ahead.filled().len();
                    (this.start, this.end) = (0, n);
                    if n == 0 {
                        this.buffer = Vec::new();
                        return Poll::Ready(Ok(()));
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // Nothing waiting: the socket is drained, so hold no buffer while idle.
                    this.buffer = Vec::new();
                    return Poll::Pending;
                }
            }
        }
        let n = out.remaining().min(this.end - this.start);
        out.put_slice(&this.buffer[this.start..this.start + n]);
        this.start += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for ReadAhead {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tcp).poll_shutdown(cx)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }
}

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
pub struct TlsConn(Box<tokio_rustls::TlsStream<TlsSocket>>);

impl TlsConn {
    /// The TCP socket and the TLS state.
    pub fn get_ref(&self) -> (&TcpStream, &rustls::CommonState) {
        let (socket, state) = self.0.get_ref();
        (socket.get_ref(), state)
    }
}

impl From<tokio_rustls::server::TlsStream<TlsSocket>> for TlsConn {
    fn from(tls: tokio_rustls::server::TlsStream<TlsSocket>) -> Self {
        TlsConn(Box::new(tls.into()))
    }
}

impl From<tokio_rustls::client::TlsStream<TlsSocket>> for TlsConn {
    fn from(tls: tokio_rustls::client::TlsStream<TlsSocket>) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn read_ahead_hands_out_every_byte_in_order_and_holds_nothing_when_drained() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let mut socket = ReadAhead::new(listener.accept().await.unwrap().0);
        // A small record first: read straight through, no buffer taken.
        client.write_all(b"hello").await.unwrap();
        let mut small = [0u8; 4096];
        let n = socket.read(&mut small).await.unwrap();
        assert_eq!(&small[..n], b"hello");
        assert!(socket.buffer.is_empty(), "a short read takes no read-ahead buffer");
        // A large one, read in rustls' 4 KiB steps.
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        client.write_all(&data).await.unwrap();
        let mut received = Vec::new();
        while received.len() < data.len() {
            let mut step = [0u8; 4096];
            let n = socket.read(&mut step).await.unwrap();
            assert!(n > 0, "EOF before the end");
            received.extend_from_slice(&step[..n]);
        }
        assert_eq!(received, data);
        // Drained: the next read waits, and the buffer is gone while it does.
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), socket.read(&mut small)).await;
        assert!(waiting.is_err(), "nothing more was sent");
        assert!(socket.buffer.is_empty(), "an idle socket holds no read-ahead buffer");
        drop(client);
        assert_eq!(socket.read(&mut small).await.unwrap(), 0, "EOF passes through");
    }
}
