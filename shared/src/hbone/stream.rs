//! One HBONE stream as the relay sees it: an HTTP/2 `CONNECT` stream's send and receive
//! halves adapted to `AsyncRead + AsyncWrite`.
//!
//! Flow control is HTTP/2's: a write waits for the peer's window (capacity) and sends
//! at most what it allows; what a read hands on is released back to the peer as it is
//! consumed, so a slow reader stops the sender without buffering more than the window.
//! Shutting down the write side sends END_STREAM (TCP FIN's place); the peer's
//! END_STREAM reads as EOF, so half-close survives the hop. Dropping the stream before
//! its end resets it (RST_STREAM CANCEL), which the peer sees as an error, never as EOF.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use h2::{Reason, RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// An HTTP/2 `CONNECT` stream carrying one tunnelled connection.
pub struct H2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    /// Received but not yet read.
    pending: Bytes,
    /// END_STREAM was sent.
    ended: bool,
    /// Dropped with the stream: the pool's count of streams on its connection (client
    /// side only).
    _lease: Option<Box<dyn Send + Sync>>,
}

impl H2Stream {
    /// Wraps a stream whose `CONNECT` was answered 200.
    pub fn new(send: SendStream<Bytes>, recv: RecvStream) -> H2Stream {
        H2Stream { send, recv, pending: Bytes::new(), ended: false, _lease: None }
    }

    /// Holds `lease` (its pool slot) until the stream is dropped.
    pub fn holding(mut self, lease: Box<dyn Send + Sync>) -> H2Stream {
        self._lease = Some(lease);
        self
    }
}

/// An h2 error as an io error of the kind the relay classifies: a reset by the peer is
/// `ConnectionReset` (a normal way for a peer to give up), a lost connection is
/// `BrokenPipe`, anything else is `Other` with h2's words.
pub fn io_error(e: h2::Error) -> io::Error {
    let kind = if e.is_reset() || e.is_go_away() {
        io::ErrorKind::ConnectionReset
    } else if e.is_io() {
        e.get_io().map_or(io::ErrorKind::BrokenPipe, |io| io.kind())
    } else {
        io::ErrorKind::Other
    };
    io::Error::new(kind, e)
}

impl AsyncRead for H2Stream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        while this.pending.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                Some(Ok(data)) => this.pending = data,
                None => return Poll::Ready(Ok(())),
                // A peer that ends its side with NO_ERROR after END_STREAM has said all.
                Some(Err(e)) if e.reason() == Some(Reason::NO_ERROR) => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending.split_to(n));
        // Consumed: the peer may send this much more.
        this.recv.flow_control().release_capacity(n).map_err(io_error)?;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = &mut *self;
        this.send.reserve_capacity(buf.len());
        let granted = loop {
            let now = this.send.capacity();
            if now > 0 {
                break now;
            }
            match ready!(this.send.poll_capacity(cx)) {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Poll::Ready(Err(io_error(e))),
                None => return Poll::Ready(Err(io::Error::new(io::ErrorKind::BrokenPipe, "the HBONE stream was closed by the peer"))),
            }
        };
        let n = granted.min(buf.len());
        this.send.send_data(Bytes::copy_from_slice(&buf[..n]), false).map_err(io_error)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The connection's task writes frames as they are queued.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.ended {
            this.ended = true;
            this.send.reserve_capacity(0);
            this.send.send_data(Bytes::new(), true).map_err(io_error)?;
        }
        Poll::Ready(Ok(()))
    }
}
