//! The byte pump between the two sides of a connection.
//!
//! Each direction copies through one fixed buffer, so memory per connection is bounded
//! whatever the peers do: a slow reader stops the copy, and backpressure reaches the
//! writer through TCP. When one side finishes sending, the other side's write half is
//! shut down (TLS: close_notify, then TCP FIN) and the opposite direction carries on, so
//! half-close survives the hop. An error on either side ends both directions at once.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;

use crate::error::{ConnError, Op, Side};

/// Size of each direction's copy buffer once more than the idle buffer arrives at once:
/// one TLS record's worth of plaintext (a database result set leaves in one record).
const BUFFER_SIZE: usize = 16 * 1024;

/// Size of the copy buffer while data streams (a read filled [`BUFFER_SIZE`]): four
/// records, so a bulk transfer moves four records per read and per write syscall (one
/// `writev` of four records on the TLS side) instead of one.
const BULK_BUFFER_SIZE: usize = 64 * 1024;

/// What an idle direction waits with. A connection spends most of its life waiting
/// for the next query; holding 2 x 16 KiB for that made idle connections cost more than
/// Envoy's. A read that fills this switches to the large buffer until reads come back
/// short again.
const IDLE_BUFFER_SIZE: usize = 512;

/// What the relay moved so far, kept in the connection record so a connection cut
/// mid-relay still reports its bytes, and a long one can be reported while it runs.
#[derive(Debug, Default)]
pub struct Moved {
    /// Bytes read from the downstream client and written upstream.
    pub from_downstream: AtomicU64,
    /// Bytes read from upstream and written to the downstream client.
    pub from_upstream: AtomicU64,
    /// When bytes last moved either way (or the connection was accepted), in milliseconds of
    /// [`clock_ms`]: how idle the connection is, for shedding under overload.
    last_moved_ms: AtomicU64,
}

impl Moved {
    /// (from downstream, from upstream) so far.
    pub fn get(&self) -> (u64, u64) {
        (self.from_downstream.load(Ordering::Relaxed), self.from_upstream.load(Ordering::Relaxed))
    }

    /// Marks bytes as moving now.
    pub fn touch(&self) {
        self.last_moved_ms.store(clock_ms(), Ordering::Relaxed);
    }

    /// How long no byte has moved either way (since the last [`Moved::touch`]).
    pub fn idle(&self) -> Duration {
        Duration::from_millis(clock_ms().saturating_sub(self.last_moved_ms.load(Ordering::Relaxed)))
    }
}

/// Milliseconds on a monotonic process clock (from its first use).
fn clock_ms() -> u64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64
}

/// Copies both ways between `downstream` and `upstream` until both directions finish,
/// either fails, or no byte moves either way for `idle_timeout`; counts into `moved`.
pub async fn relay<D, U>(downstream: D, upstream: U, idle_timeout: Duration, moved: &Moved) -> Result<(), ConnError>
where
    D: AsyncRead + AsyncWrite,
    U: AsyncRead + AsyncWrite,
{
    let (mut down_read, mut down_write) = tokio::io::split(downstream);
    let (mut up_read, mut up_write) = tokio::io::split(upstream);
    let activity = Activity::new(moved);
    tokio::select! {
        copied = async {
            tokio::try_join!(
                pump(&mut down_read, &mut up_write, &moved.from_downstream, &activity, Side::Downstream, Side::Upstream),
                pump(&mut up_read, &mut down_write, &moved.from_upstream, &activity, Side::Upstream, Side::Downstream),
            )
            .map(|_| ())
        } => copied,
        () = activity.expired(idle_timeout) => Err(ConnError::Idle(idle_timeout)),
    }
}

/// When bytes last moved in either direction, for the idle timeout; and how many
/// directions have finished.
struct Activity<'m> {
    base: Instant,
    /// Milliseconds after `base` of the latest read.
    last_ms: AtomicU64,
    /// Directions that reached EOF and passed it on.
    finished: std::sync::atomic::AtomicU8,
    /// The record's counters, whose idleness overload reads (touched when bytes are
    /// read).
    moved: &'m Moved,
}

impl Activity<'_> {
    fn new(moved: &Moved) -> Activity<'_> {
        Activity { base: Instant::now(), last_ms: AtomicU64::new(0), finished: std::sync::atomic::AtomicU8::new(0), moved }
    }

    fn touch(&self) {
        self.last_ms.store(self.base.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `limit`.
    async fn expired(&self, limit: Duration) {
        loop {
            let deadline = self.base + Duration::from_millis(self.last_ms.load(Ordering::Relaxed)) + limit;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

/// Copies one direction until EOF, then shuts down the writer to pass the EOF on.
async fn pump<R, W>(reader: &mut R, writer: &mut W, moved: &AtomicU64, activity: &Activity<'_>, from: Side, to: Side) -> Result<(), ConnError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut small = [0u8; IDLE_BUFFER_SIZE];
    let mut large: Vec<u8> = Vec::new();
    // An error met while topping up the buffer, reported once what came before it is written.
    let mut deferred: Option<std::io::Error> = None;
    loop {
        activity.touch();
        let read = match deferred.take() {
            Some(e) => Err(e),
            None if large.is_empty() => reader.read(&mut small).await,
            None => reader.read(&mut large).await,
        };
        let mut n = match read {
            Ok(0) => break,
            Ok(n) => {
                // Only bytes make a connection active for overload: a relay that just
                // started after a slow set-up is as idle as its client.
                activity.moved.touch();
                n
            }
            // A TLS peer that closes without close_notify has still sent all it meant to.
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            // A reset after the other direction already closed is the peer's abortive
            // close of a finished exchange (a database after COM_QUIT, say), not a failure.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset && activity.finished.load(Ordering::Relaxed) > 0 => break,
            Err(source) => return Err(ConnError::Relay { side: from, op: Op::Read, source }),
        };
        if large.is_empty() && n == IDLE_BUFFER_SIZE {
            // More than the idle buffer holds has arrived (a result set, say): move to the
            // large buffer now, so all of it leaves in one write (one TLS record) rather
            // than a small write ahead of the rest.
            large = vec![0u8; BUFFER_SIZE];
            large[..n].copy_from_slice(&small[..n]);
        } else if n == BUFFER_SIZE && large.len() == BUFFER_SIZE {
            large.resize(BULK_BUFFER_SIZE, 0);
        }
        if !large.is_empty() {
            // A TLS reader hands over one record per read; take what else is already
            // here (more records, more TCP data) into the same write.
            while n < large.len() {
                match read_now(reader, &mut large[n..]) {
                    Some(Ok(0)) | None => break,
                    Some(Ok(more)) => n += more,
                    Some(Err(e)) => {
                        deferred = Some(e);
                        break;
                    }
                }
            }
        }
        let data = if large.is_empty() { &small[..n] } else { &large[..n] };
        writer.write_all(data).await.map_err(|source| ConnError::Relay { side: to, op: Op::Write, source })?;
        moved.fetch_add(n as u64, Ordering::Relaxed);
        if n < IDLE_BUFFER_SIZE {
            large = Vec::new();
        }
    }
    writer.flush().await.map_err(|source| ConnError::Relay { side: to, op: Op::Flush, source })?;
    activity.finished.fetch_add(1, Ordering::Relaxed);
    match writer.shutdown().await {
        Ok(()) => Ok(()),
        // The peer may already be gone after its own close; the data was delivered.
        Err(e) if e.kind() == std::io::ErrorKind::NotConnected => Ok(()),
        Err(source) => Err(ConnError::Relay { side: to, op: Op::Shutdown, source }),
    }
}

/// One read that does not wait: what `reader` has ready now, `None` when it would wait.
/// The no-op waker is harmless: the next read that does wait registers the task's own.
fn read_now<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8]) -> Option<std::io::Result<usize>> {
    let mut cx = Context::from_waker(Waker::noop());
    let mut read = ReadBuf::new(buf);
    match Pin::new(reader).poll_read(&mut cx, &mut read) {
        Poll::Ready(Ok(())) => Some(Ok(read.filled().len())),
        Poll::Ready(Err(e)) => Some(Err(e)),
        Poll::Pending => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    #[tokio::test]
    async fn half_close_still_carries_the_reply() {
        let (client, down) = duplex(64);
        let (up, server) = duplex(64);
        let relay = tokio::spawn(async move {
            let moved = Moved::default();
            relay(down, up, Duration::from_secs(60), &moved).await.map(|()| moved.get())
        });
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let (mut server_read, mut server_write) = tokio::io::split(server);
        client_write.write_all(b"question").await.unwrap();
        client_write.shutdown().await.unwrap();
        let mut asked = Vec::new();
        server_read.read_to_end(&mut asked).await.unwrap();
        assert_eq!(asked, b"question");
        server_write.write_all(b"answer").await.unwrap();
        server_write.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client_read.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"answer");
        let moved = relay.await.unwrap().expect("a clean close");
        assert_eq!(moved, (8, 6));
    }

    #[tokio::test]
    async fn bulk_then_small_writes_arrive_intact() {
        let (client, down) = duplex(64 * 1024);
        let (up, server) = duplex(64 * 1024);
        let relay = tokio::spawn(async move {
            let moved = Moved::default();
            relay(down, up, Duration::from_secs(60), &moved).await.map(|()| moved.get())
        });
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let data: Vec<u8> = (0..1_000_003u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            client_write.write_all(&sent).await.unwrap();
            client_write.write_all(b"tail").await.unwrap();
            client_write.shutdown().await.unwrap();
        });
        let (mut server_read, mut server_write) = tokio::io::split(server);
        let mut received = Vec::new();
        server_read.read_to_end(&mut received).await.unwrap();
        writer.await.unwrap();
        assert_eq!(&received[..data.len()], &data[..]);
        assert_eq!(&received[data.len()..], b"tail");
        server_write.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client_read.read_to_end(&mut rest).await.unwrap();
        assert_eq!(relay.await.unwrap().unwrap().0, data.len() as u64 + 4);
    }

    /// A stream that records the size of every write it is given.
    struct CountingWrites {
        inner: tokio::io::DuplexStream,
        writes: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
    }

    impl AsyncRead for CountingWrites {
        fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl AsyncWrite for CountingWrites {
        fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            let written = Pin::new(&mut self.inner).poll_write(cx, buf);
            if let Poll::Ready(Ok(n)) = written {
                self.writes.lock().unwrap().push(n);
            }
            written
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    #[tokio::test]
    async fn a_reply_larger_than_the_idle_buffer_leaves_in_one_write() {
        let (mut client, down) = duplex(256 * 1024);
        let (up, mut server) = duplex(256 * 1024);
        let writes = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let up = CountingWrites { inner: up, writes: writes.clone() };
        // Both arrive before the relay reads: a small query, then (after it is read) a
        // result set of several idle buffers that is already all there.
        client.write_all(b"q").await.unwrap();
        let relay = tokio::spawn(async move {
            let moved = Moved::default();
            relay(down, up, Duration::from_secs(60), &moved).await.map(|()| moved.get())
        });
        let mut first = [0u8; 1];
        server.read_exact(&mut first).await.unwrap();
        let result_set = vec![7u8; 5 * IDLE_BUFFER_SIZE + 17];
        client.write_all(&result_set).await.unwrap();
        let mut received = vec![0u8; result_set.len()];
        server.read_exact(&mut received).await.unwrap();
        assert_eq!(received, result_set);
        assert_eq!(*writes.lock().unwrap(), vec![1, result_set.len()], "one write for the query, one for the whole result set");
        client.shutdown().await.unwrap();
        server.shutdown().await.unwrap();
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).await.unwrap();
        assert_eq!(relay.await.unwrap().unwrap(), (1 + result_set.len() as u64, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn idle_connection_is_closed() {
        let (_client, down) = duplex(64);
        let (up, _server) = duplex(64);
        let moved = Moved::default();
        let ended = relay(down, up, Duration::from_secs(5), &moved).await;
        assert!(matches!(ended, Err(ConnError::Idle(_))), "{ended:?}");
    }
}
