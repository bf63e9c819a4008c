//! The client side of HBONE: a route's pool of HTTP/2 mutual-TLS connections to its
//! remote HBONE listener, and one `CONNECT` stream per client connection over them.
//!
//! A pool belongs to one route of one route table: a reload builds new routes with the
//! new credentials, so new streams open new pool connections (keyed, in effect, by the
//! credential generation), while the old pool's connections carry their streams to the
//! end and then close. Each pool connection carries at most `max_streams` streams; when
//! every one is full, a new connection is opened (one at a time: streams arriving
//! meanwhile wait for it and share it). A connection without streams for
//! `idle_timeout` is closed; one that received GOAWAY or failed is taken out at once,
//! and a stream that had not started on it (no answer to its `CONNECT` yet) is tried
//! again on a fresh connection.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use tokio::time::{timeout, Instant};

use super::stream::H2Stream;
use super::{CONNECTION_WINDOW, MAX_FRAME_SIZE, STREAM_WINDOW};
use crate::error::UpstreamError;
use crate::identity::Identity;
use crate::stream::{PeerIdentity, Stream};

/// Tries for one stream: a stream refused by a connection that was going away is tried
/// on a fresh one, a bounded number of times.
const ATTEMPTS: usize = 3;

/// One route's pool of HBONE connections.
pub struct Pool {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let open = self.inner.conns.lock().map_or(0, |c| c.len());
        f.debug_struct("Pool").field("authority", &self.inner.authority).field("open", &open).finish()
    }
}

struct Inner {
    /// `:authority` of every `CONNECT`.
    authority: String,
    /// Streams per connection.
    max_streams: usize,
    /// A connection without streams this long is closed.
    idle_timeout: Duration,
    /// The open connections, newest last.
    conns: Mutex<Vec<Arc<Conn>>>,
    /// Held while a connection is being opened, so a burst of streams opens one.
    opening: tokio::sync::Mutex<()>,
}

/// One pooled HTTP/2 connection.
struct Conn {
    /// Where it goes (the pool's endpoint), for the access log.
    addr: SocketAddr,
    /// What the server's certificate says, for the access log and Istio's labels.
    identity: Option<Identity>,
    /// Cloned for each stream.
    send: SendRequest<Bytes>,
    state: Mutex<ConnState>,
}

struct ConnState {
    /// Streams leased now.
    active: usize,
    /// Taken out of the pool: no new streams.
    dead: bool,
    /// Since when no stream was leased.
    idle_since: Instant,
}

/// One stream's place on a connection; frees it when dropped.
struct Lease(Arc<Conn>);

impl Drop for Lease {
    fn drop(&mut self) {
        if let Ok(mut state) = self.0.state.lock() {
            state.active -= 1;
            if state.active == 0 {
                state.idle_since = Instant::now();
            }
        }
    }
}

/// Why one attempt at a stream failed.
enum Failure {
    /// Not started (the connection went away or refused it): try another connection.
    Retry(String),
    /// Answered, or timed out: the stream's end.
    Fatal(String),
}

/// A stream that reached its destination: the tunnel, the endpoint and its identity.
pub struct Connected {
    /// The stream, answered 200.
    pub stream: H2Stream,
    /// The pool connection's endpoint.
    pub addr: SocketAddr,
    /// The identity the endpoint's certificate proved.
    pub identity: Option<Identity>,
}

impl Pool {
    /// An empty pool whose streams ask for `authority`.
    pub fn new(authority: String, max_streams: usize, idle_timeout: Duration) -> Pool {
        let inner = Inner { authority, max_streams, idle_timeout, conns: Mutex::new(Vec::new()), opening: tokio::sync::Mutex::new(()) };
        Pool { inner: Arc::new(inner) }
    }

    /// Pool connections open now.
    pub fn open_connections(&self) -> usize {
        self.inner.conns.lock().map_or(0, |c| c.len())
    }

    /// One `CONNECT` stream, on a pooled connection with room or on a new one that
    /// `dial` (TCP + mutual TLS with ALPN h2) opens; `limit` bounds each wait for the
    /// peer (the route's connect timeout).
    pub async fn stream<F, Fut>(&self, dial: F, limit: Duration) -> Result<Connected, UpstreamError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(Stream, SocketAddr), UpstreamError>>,
    {
        let mut last = None;
        for _ in 0..ATTEMPTS {
            let lease = match self.inner.lease() {
                Some(lease) => lease,
                None => self.open(&dial, limit).await?,
            };
            let conn = lease.0.clone();
            match connect(&conn, &self.inner.authority, limit).await {
                Ok((send, recv)) => {
                    return Ok(Connected { stream: H2Stream::new(send, recv).holding(Box::new(lease)), addr: conn.addr, identity: conn.identity.clone() })
                }
                Err(Failure::Retry(reason)) => {
                    conn.retire();
                    self.inner.remove(&conn);
                    tracing::debug!(endpoint = %conn.addr, %reason, "HBONE stream not started: trying a fresh pool connection");
                    last = Some((conn.addr, reason));
                }
                Err(Failure::Fatal(reason)) => return Err(self.error(conn.addr, reason)),
            }
        }
        let (addr, reason) = last.unwrap_or_else(|| (SocketAddr::from(([0, 0, 0, 0], 0)), "no attempt".into()));
        Err(self.error(addr, format!("{reason} (after {ATTEMPTS} pool connections)")))
    }

    fn error(&self, addr: SocketAddr, reason: String) -> UpstreamError {
        UpstreamError::Hbone { addr, authority: self.inner.authority.clone(), reason }
    }

    /// A lease on a new connection, or on one another stream opened meanwhile.
    async fn open<F, Fut>(&self, dial: &F, limit: Duration) -> Result<Lease, UpstreamError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(Stream, SocketAddr), UpstreamError>>,
    {
        let _opening = self.inner.opening.lock().await;
        if let Some(lease) = self.inner.lease() {
            return Ok(lease);
        }
        let (tls, addr) = dial().await?;
        let identity = tls.peer_identity();
        let mut builder = h2::client::Builder::new();
        builder.initial_window_size(STREAM_WINDOW).initial_connection_window_size(CONNECTION_WINDOW).max_frame_size(MAX_FRAME_SIZE);
        let (send, connection) = match timeout(limit, builder.handshake::<_, Bytes>(tls)).await {
            Ok(Ok(handshake)) => handshake,
            Ok(Err(e)) => return Err(self.error(addr, format!("HTTP/2 handshake failed: {e}"))),
            Err(_) => return Err(self.error(addr, format!("HTTP/2 handshake not done within {limit:?}"))),
        };
        let state = Mutex::new(ConnState { active: 1, dead: false, idle_since: Instant::now() });
        let conn = Arc::new(Conn { addr, identity, send, state });
        if let Ok(mut conns) = self.inner.conns.lock() {
            conns.push(conn.clone());
        }
        tracing::info!(endpoint = %addr, authority = %self.inner.authority, "HBONE pool connection opened");
        tokio::spawn(drive(connection, conn.clone(), Arc::downgrade(&self.inner), self.inner.idle_timeout));
        Ok(Lease(conn))
    }
}

impl Inner {
    /// A place on the first live connection with room.
    fn lease(&self) -> Option<Lease> {
        let conns = self.conns.lock().ok()?;
        conns.iter().find(|c| c.try_acquire(self.max_streams)).map(|c| Lease(c.clone()))
    }

    fn remove(&self, conn: &Arc<Conn>) {
        if let Ok(mut conns) = self.conns.lock() {
            conns.retain(|c| !Arc::ptr_eq(c, conn));
        }
    }
}

impl Conn {
    fn try_acquire(&self, max_streams: usize) -> bool {
        let room = max_streams.min(self.send.current_max_send_streams());
        let Ok(mut state) = self.state.lock() else { return false };
        if state.dead || state.active >= room {
            return false;
        }
        state.active += 1;
        true
    }

    /// Takes no more streams.
    fn retire(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.dead = true;
        }
    }

    /// Retires the connection if it has no stream and has been idle for `limit` (or at
    /// once, when its pool is gone); whether it did.
    fn retire_if_idle(&self, limit: Duration, pool_gone: bool) -> bool {
        let Ok(mut state) = self.state.lock() else { return true };
        if state.active == 0 && (pool_gone || state.idle_since.elapsed() >= limit) {
            state.dead = true;
        }
        state.dead && state.active == 0
    }
}

/// Sends the `CONNECT` and waits for its answer.
async fn connect(conn: &Conn, authority: &str, limit: Duration) -> Result<(h2::SendStream<Bytes>, h2::RecvStream), Failure> {
    let not_started = |e: h2::Error| Failure::Retry(e.to_string());
    let send = match timeout(limit, conn.send.clone().ready()).await {
        Ok(ready) => ready.map_err(not_started)?,
        Err(_) => return Err(Failure::Fatal(format!("no room for a stream within {limit:?}"))),
    };
    let request = http::Request::connect(authority).body(()).map_err(|e| Failure::Fatal(format!("bad authority {authority:?}: {e}")))?;
    let mut send = send;
    let (response, stream) = send.send_request(request, false).map_err(not_started)?;
    let response = match timeout(limit, response).await {
        Ok(response) => response.map_err(not_started)?,
        Err(_) => return Err(Failure::Fatal(format!("no answer to CONNECT within {limit:?}"))),
    };
    if response.status() != http::StatusCode::OK {
        return Err(Failure::Fatal(format!("the peer answered the CONNECT with {}", response.status())));
    }
    Ok((stream, response.into_body()))
}

/// Runs one pool connection until it fails, the server ends it (GOAWAY), or it is idle
/// (or its pool gone) with no stream left; then takes it out of the pool.
async fn drive(connection: h2::client::Connection<Stream, Bytes>, conn: Arc<Conn>, pool: Weak<Inner>, idle_timeout: Duration) {
    let tick = (idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5));
    let mut connection = std::pin::pin!(connection);
    let why = loop {
        tokio::select! {
            ended = &mut connection => break ended.map_or_else(|e| e.to_string(), |()| "closed by the server".into()),
            () = tokio::time::sleep(tick) => {
                if conn.retire_if_idle(idle_timeout, pool.strong_count() == 0) {
                    break "idle".into();
                }
            }
        }
    };
    conn.retire();
    if let Some(pool) = pool.upgrade() {
        pool.remove(&conn);
    }
    tracing::info!(endpoint = %conn.addr, reason = %why, "HBONE pool connection closed");
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_util::either::Either;

    use super::*;

    /// A plain-TCP HTTP/2 server on loopback answering every CONNECT 200 and echoing its
    /// stream; its `n`th connection (from 0) in `goaway` is sent GOAWAY at once instead.
    async fn echo_server(goaway: &'static [usize]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for n in 0.. {
                let (tcp, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut h2 = h2::server::handshake(tcp).await.unwrap();
                    if goaway.contains(&n) {
                        h2.abrupt_shutdown(h2::Reason::NO_ERROR);
                    }
                    while let Some(Ok((request, mut respond))) = h2.accept().await {
                        tokio::spawn(async move {
                            let send = respond.send_response(http::Response::new(()), false).unwrap();
                            let mut stream = H2Stream::new(send, request.into_body());
                            let mut buf = [0u8; 1024];
                            while let Ok(n @ 1..) = stream.read(&mut buf).await {
                                stream.write_all(&buf[..n]).await.unwrap();
                            }
                            let _ = stream.shutdown().await;
                        });
                    }
                });
            }
        });
        addr
    }

    /// Dials `addr` in plain TCP, counting the dials.
    type Dialing<'a> = std::pin::Pin<Box<dyn Future<Output = Result<(Stream, SocketAddr), UpstreamError>> + Send + 'a>>;

    fn dialer<'a>(addr: SocketAddr, dials: &'a AtomicUsize) -> impl Fn() -> Dialing<'a> + 'a {
        move || {
            Box::pin(async move {
                dials.fetch_add(1, Ordering::Relaxed);
                let tcp = TcpStream::connect(addr).await.unwrap();
                Ok((Either::Left(tcp), addr))
            })
        }
    }

    async fn echo(stream: &mut H2Stream, text: &[u8]) {
        stream.write_all(text).await.unwrap();
        let mut back = vec![0u8; text.len()];
        stream.read_exact(&mut back).await.unwrap();
        assert_eq!(back, text);
    }

    const LIMIT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn a_full_connection_makes_the_pool_open_another() {
        let addr = echo_server(&[]).await;
        let dials = AtomicUsize::new(0);
        let pool = Pool::new("db.test:3306".into(), 2, Duration::from_secs(60));
        let mut held = Vec::new();
        for i in 0..5u8 {
            let mut connected = pool.stream(dialer(addr, &dials), LIMIT).await.unwrap();
            echo(&mut connected.stream, &[i; 10]).await;
            held.push(connected);
        }
        assert_eq!(pool.open_connections(), 3, "5 streams at 2 per connection");
        assert_eq!(dials.load(Ordering::Relaxed), 3);
        // A stream that ends frees its place: the next one reuses a connection.
        held.truncate(4);
        let mut again = pool.stream(dialer(addr, &dials), LIMIT).await.unwrap();
        echo(&mut again.stream, b"reused").await;
        assert_eq!(dials.load(Ordering::Relaxed), 3, "no new connection for a freed place");
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_and_the_next_stream_opens_a_new_one() {
        let addr = echo_server(&[]).await;
        let dials = AtomicUsize::new(0);
        let pool = Pool::new("db.test:3306".into(), 100, Duration::from_millis(100));
        let mut connected = pool.stream(dialer(addr, &dials), LIMIT).await.unwrap();
        echo(&mut connected.stream, b"one").await;
        drop(connected);
        let deadline = Instant::now() + LIMIT;
        while pool.open_connections() > 0 {
            assert!(Instant::now() < deadline, "the idle connection was not closed");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut next = pool.stream(dialer(addr, &dials), LIMIT).await.unwrap();
        echo(&mut next.stream, b"two").await;
        assert_eq!(dials.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn a_stream_refused_by_goaway_is_tried_again_on_a_fresh_connection() {
        let addr = echo_server(&[0]).await;
        let dials = AtomicUsize::new(0);
        let pool = Pool::new("db.test:3306".into(), 100, Duration::from_secs(60));
        let mut connected = pool.stream(dialer(addr, &dials), LIMIT).await.expect("served on the second connection");
        echo(&mut connected.stream, b"after goaway").await;
        assert_eq!(dials.load(Ordering::Relaxed), 2, "the GOAWAY connection, then a fresh one");
        assert_eq!(pool.open_connections(), 1);
    }

    #[tokio::test]
    async fn a_refusal_status_is_not_retried() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut h2 = h2::server::handshake(tcp).await.unwrap();
            while let Some(Ok((_, mut respond))) = h2.accept().await {
                let mut response = http::Response::new(());
                *response.status_mut() = http::StatusCode::FORBIDDEN;
                let _ = respond.send_response(response, true);
            }
        });
        let dials = AtomicUsize::new(0);
        let pool = Pool::new("db.test:3306".into(), 100, Duration::from_secs(60));
        let refused = pool.stream(dialer(addr, &dials), LIMIT).await.err().expect("a 403");
        assert!(refused.to_string().contains("403 Forbidden"), "{refused}");
        assert_eq!(dials.load(Ordering::Relaxed), 1);
    }
}
