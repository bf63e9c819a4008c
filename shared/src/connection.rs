//! One accepted connection through the whole pipeline:
//! accept (plain | TLS) -> pick a route (by listener or by SNI) -> authorize -> connect
//! (plain | TLS, or a database negotiation that connects when its protocol says) ->
//! relay. Every stage returns a typed [`ConnError`]; the [`ConnectionRecord`] collects
//! what the stages learn and writes the access-log line, metrics and span when it drops.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rustls::server::Acceptor;
use tokio::net::TcpStream;
use tokio::time::timeout_at;
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::access_log::{ConnectionRecord, Recorder};
use crate::config::{PeerAuth, Protocol, Role};
use crate::error::{ConnError, Op, Side, UpstreamError};
use crate::identity::Identity;
use crate::metrics::{NegotiationLabels, RouteLabels};
use crate::recheck::{Cut, LiveConnections, Peer, Registration};
use crate::relay::relay;
use crate::resolve::Resolver;
use crate::route::{ListenerPlan, Route, RouteTable, Routing, TlsRouting};
use crate::stream::PeerIdentity;
use crate::upstream::{Dialer, Stream};

mod hbone;

/// First byte of every TLS record carrying a handshake message (the ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What every connection of a gateway shares.
pub struct Context {
    /// The current routing state; replaced whole on reload.
    pub table: ArcSwap<RouteTable>,
    /// Upstream name resolution (shared with the health checks).
    pub resolver: Arc<Resolver>,
    /// Which binary this is (labels metrics `outbound` or `inbound`).
    pub role: Role,
    /// Metrics and span export for the connection records.
    pub recorder: Arc<Recorder>,
    /// Cancelled when the drain runs out: every connection still open is cut, and its
    /// record says so.
    pub force_close: CancellationToken,
    /// Cancelled when the drain starts (the listeners stop accepting): long-lived
    /// HBONE connections then send GOAWAY, so their clients take new streams elsewhere
    /// while the open ones finish.
    pub draining: CancellationToken,
    /// The drain's length, for the record of a connection it cut.
    pub drain_timeout: ArcSwap<Duration>,
    /// Every open TLS connection's peer chain, re-verified when a reload changes the
    /// trust ([`crate::recheck`]).
    pub live: Arc<LiveConnections>,
    /// Every listener's abuse limits and their state ([`crate::limits`]).
    pub limits: crate::limits::Limiters,
    /// Every open connection with its idleness, for shedding under overload
    /// ([`crate::overload`]).
    pub overload: Arc<crate::overload::Overload>,
}

/// One connection's link to [`Context::live`]: the peers it registered (removed when
/// the connection ends) and the cut a failed re-check closes it with.
struct Watch {
    live: Arc<LiveConnections>,
    listener: Arc<str>,
    cut: Arc<Cut>,
    held: Vec<Registration>,
    /// The connection's overload registration, told when the relay starts.
    overload: Option<crate::overload::Registration>,
}

impl Watch {
    fn register(&mut self, peer: Peer, chain: Option<&[rustls_pki_types::CertificateDer<'_>]>) {
        if let Some(registration) = chain.and_then(|chain| self.live.register(self.listener.clone(), peer, chain, self.cut.clone())) {
            self.held.push(registration);
        }
    }
}

/// The peer's certificate chain of a TLS stream.
fn peer_chain(stream: &Stream) -> Option<&[rustls_pki_types::CertificateDer<'static>]> {
    match stream {
        Either::Left(_) => None,
        Either::Right(tls) => tls.get_ref().1.peer_certificates(),
    }
}

/// What the accept loop hands a connection besides its socket: how it can be cut from
/// outside, its byte counters, and its overload registration, made before its task is
/// spawned so that a flood's connections are known (and sheddable) from accept on.
pub struct Admitted {
    /// Closes the connection from outside (trust re-check, overload).
    pub cut: Arc<Cut>,
    /// Its byte counters and last activity, shared with overload.
    pub moved: Arc<crate::relay::Moved>,
    /// Its place in [`Context::overload`], if its listener sheds idle connections.
    pub overload: Option<crate::overload::Registration>,
}

impl Admitted {
    /// A connection just accepted at `listener`.
    pub fn new(context: &Context, listener: &Arc<str>) -> Admitted {
        let (cut, moved) = (Arc::new(Cut::default()), Arc::new(crate::relay::Moved::default()));
        let plan = context.table.load().listener(listener).map(|p| (p.shed_idle_under_pressure, p.handshake_timeout));
        let overload = match plan {
            Some((true, setup_timeout)) => Some(context.overload.register(listener.clone(), moved.clone(), setup_timeout, cut.clone())),
            _ => None,
        };
        Admitted { cut, moved, overload }
    }
}

impl Context {
    /// `outbound` (egress) or `inbound` (ingress), as Istio labels connections.
    pub fn direction(&self) -> &'static str {
        match self.role {
            Role::Egress => "outbound",
            Role::Ingress => "inbound",
        }
    }
}

/// Serves one accepted connection to the end; its record is written when this returns
/// (or when the task is dropped).
pub async fn handle(tcp: TcpStream, peer: SocketAddr, listener: Arc<str>, context: Arc<Context>, admitted: Admitted) {
    let span = tracing::info_span!("connection", listener = %listener, %peer, route = tracing::field::Empty);
    async move {
        let Admitted { cut, moved, overload } = admitted;
        let mut watch = Watch { live: context.live.clone(), listener: listener.clone(), cut: cut.clone(), held: Vec::new(), overload };
        let mut record = ConnectionRecord::new(context.recorder.clone(), listener, context.direction(), peer);
        record.moved = moved;
        let end = tokio::select! {
            // Biased: a cut seen while relaying is handled inside `serve` (with a reset).
            biased;
            end = serve(tcp, &context, &mut record, &mut watch) => end,
            () = context.force_close.cancelled() => Err(ConnError::Drained(**context.drain_timeout.load())),
            reason = cut.cut() => Err(reason.into_error()),
        };
        if let (Err(ConnError::Limited(refusal)), Some(limits)) = (&end, context.limits.get(&record.listener)) {
            // Counted like every refusal, but logged by the limiter, once a second.
            record.quiet = true;
            limits.log_refusal(*refusal, record.downstream.ip());
        }
        record.finish(end);
    }
    .instrument(span)
    .await
}

async fn serve(mut tcp: TcpStream, context: &Arc<Context>, record: &mut ConnectionRecord, watch: &mut Watch) -> Result<(), ConnError> {
    let table = context.table.load_full();
    let plan = table.listener(&record.listener).ok_or(ConnError::ListenerRemoved)?;
    crate::socket::tune(&tcp, &plan.keepalive);
    let local = tcp.local_addr().unwrap_or(record.downstream);
    if let Some(trusted) = &plan.proxy_trusted {
        // Behind a load balancer: the client is who its PROXY header says.
        if let Some(client) = crate::proxy_protocol::accept(&mut tcp, record.downstream, trusted, plan.handshake_timeout).await? {
            record.downstream = client;
        }
    }
    let (downstream, route) = match &plan.routing {
        Routing::Plain(route) => (Either::Left(tcp), route.clone()),
        // Boxed: the handshake's state is large and only needed until it completes, so
        // an idle connection's task does not carry it.
        Routing::Tls(routing) => Box::pin(accept(tcp, routing, record)).await?,
        // Each stream is a connection of its own, with its own record.
        Routing::Hbone(routing) => return Box::pin(hbone::serve(tcp, plan.clone(), routing, context.clone(), record, watch)).await,
    };
    let tls_at_listener = record.sides.downstream_tls;
    if tls_at_listener {
        watch.register(Peer::Client { sni: record.sni.clone() }, peer_chain(&downstream));
    }
    let limits = context.limits.get(&record.listener);
    let _identity_counted = match (&limits, &record.sides.identity) {
        (Some(limits), Some(identity)) => limits.admit_identity(&identity.to_string()).map_err(ConnError::Limited)?,
        _ => None,
    };
    record.route = Some(route.name.clone());
    // An `{sni}` upstream's destination is the name the client sent.
    let sni = record.sni.as_deref().map(str::to_ascii_lowercase);
    let destination = if route.host == crate::config::sni::SNI_HOST { sni.clone() } else { None };
    record.destination_service = Some(destination.unwrap_or_else(|| route.host.clone()));
    record.protocol = route.protocol.as_str();
    tracing::Span::current().record("route", route.name.as_str());
    if !route.source_ranges.is_empty() && !crate::proxy_protocol::within(&route.source_ranges, record.downstream.ip()) {
        return Err(ConnError::SourceDenied { client: record.downstream.ip(), route: route.name.clone() });
    }
    let proxy_header = proxy_header(&route, record, local)?;
    let cancels = limits.as_deref().map(|limits| crate::limits::CancelGate { limits, source: record.downstream.ip() });
    let dial = Dialer { route: &route, resolver: &context.resolver, sni: sni.as_deref(), proxy_header: proxy_header.as_deref(), cancels };
    let connecting = Instant::now();
    let upstream = if route.protocol == Protocol::Tcp {
        authorize(&route, record.sides.identity.as_ref())?;
        let (upstream, address, identity) = match &route.hbone {
            None => crate::upstream::unless_client_gone(&downstream, Box::pin(dial.connect())).await.map(|(u, a)| (Either::Left(u), a, None))?,
            Some(pool) => {
                let stream = crate::upstream::unless_client_gone(&downstream, Box::pin(hbone::originate(&dial, pool))).await?;
                // Boxed: a direct connection's relay then stays the size it was (the
                // idle-memory note in `stream.rs`).
                (Either::Right(Box::new(stream.stream)), stream.addr, stream.identity)
            }
        };
        record.sides.upstream = Some(address);
        record.sides.upstream_tls = route.origination.is_some();
        record.sides.upstream_identity = match &upstream {
            Either::Left(direct) => direct.peer_identity(),
            Either::Right(_) => identity,
        };
        (downstream, upstream)
    } else {
        // A client already inside TLS is judged before the database sees a connection
        // (failed handshakes count towards MySQL's max_connect_errors host block).
        if record.sides.downstream_tls {
            authorize(&route, record.sides.identity.as_ref())?;
        }
        let negotiated = Box::pin(crate::protocol::negotiate(downstream, &dial, &mut record.sides, plan.handshake_timeout)).await;
        let labels = NegotiationLabels {
            route: route.name.clone(),
            protocol: route.protocol.as_str(),
            tls: record.sides.tls(),
            outcome: negotiated.as_ref().map_or_else(|e| e.classify().outcome.as_str(), |_| "ok"),
        };
        record.metrics().negotiations.add(&labels, 1);
        negotiated.map(|(downstream, upstream)| (downstream, Either::Left(upstream)))?
    };
    record.metrics().upstream_connect_seconds.observe(&RouteLabels { route: route.name.clone() }, connecting.elapsed());
    let (mut downstream, mut upstream) = upstream;
    if let Either::Left(direct) = &upstream {
        watch.register(Peer::Server { route: route.name.clone() }, peer_chain(direct));
    }
    if !tls_at_listener {
        watch.register(Peer::ProtocolClient { route: route.name.clone() }, peer_chain(&downstream));
    }
    if let Some(registered) = &watch.overload {
        registered.relaying(route.idle_timeout);
    }
    let cut = watch.cut.clone();
    tokio::select! {
        ended = relay_recorded(&mut downstream, &mut upstream, &route, plan, record) => ended,
        reason = cut.cut() => {
            // Cut with a reset, both ways: a FIN would be relayed as a half-close and
            // leave the far side's connection open.
            abort(&downstream);
            if let Either::Left(direct) = &upstream {
                abort(direct);
            }
            Err(reason.into_error())
        }
    }
}

/// The relay stage of a connection (or an HBONE stream): counts it opened, relays
/// until the end, and writes the periodic records the listener asks for.
pub(crate) async fn relay_recorded<D, U>(downstream: D, upstream: U, route: &Route, plan: &ListenerPlan, record: &mut ConnectionRecord) -> Result<(), ConnError>
where
    D: tokio::io::AsyncRead + tokio::io::AsyncWrite,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    record.opened();
    let record: &ConnectionRecord = record;
    // Boxed, like the set-up stages: the task itself then stays small.
    let mut relaying = Box::pin(relay(downstream, upstream, route.idle_timeout, &record.moved));
    let ended = match plan.flush_interval {
        None => relaying.await,
        Some(every) => {
            record.report_open();
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tokio::select! {
                    ended = &mut relaying => break ended,
                    _ = ticks.tick() => record.report_periodic(),
                }
            }
        }
    };
    ended.map_err(|e| refused_after_handshake(e, route, record))
}

/// Makes closing `stream` send a TCP reset instead of a FIN.
fn abort(stream: &Stream) {
    let tcp = match stream {
        Either::Left(tcp) => tcp,
        Either::Right(tls) => tls.get_ref().0,
    };
    let _ = socket2::SockRef::from(tcp).set_linger(Some(Duration::ZERO));
}

/// In TLS 1.3 the client's handshake completes before the server has judged the client
/// certificate; a server that refuses it says so with an alert on the first read. That
/// is an origination failure (the route's credential is not trusted there), not a relay
/// failure, and is classified and counted as one.
fn refused_after_handshake(error: ConnError, route: &Route, record: &ConnectionRecord) -> ConnError {
    let ConnError::Relay { side: Side::Upstream, op: Op::Read, source } = &error else { return error };
    let alert = source.get_ref().and_then(|e| e.downcast_ref::<rustls::Error>()).is_some_and(|e| matches!(e, rustls::Error::AlertReceived(_)));
    match (alert, &route.origination, record.sides.upstream, record.moved.get().1) {
        (true, Some(origination), Some(addr), 0) => ConnError::Upstream(UpstreamError::Tls {
            addr,
            sni: origination.server_name.to_str().into_owned(),
            reason: format!("the server refused our client certificate after the handshake ({source}): its client CA must trust this route's certificate"),
        }),
        _ => error,
    }
}

/// The PROXY protocol header the route writes upstream: the client's address, the
/// address it connected to, and the identity it presented (known here at TLS listeners;
/// a database client's in-protocol TLS comes after the upstream connect).
pub(crate) fn proxy_header(route: &Route, record: &ConnectionRecord, local: std::net::SocketAddr) -> Result<Option<Vec<u8>>, ConnError> {
    let Some(version) = route.send_proxy else { return Ok(None) };
    let identity = record.sides.identity.as_ref().map(ToString::to_string);
    crate::proxy_protocol::header(version, record.downstream, local, identity.as_deref())
        .map(Some)
        .map_err(|e| ConnError::upstream(format!("cannot build the PROXY protocol header: {e}")))
}

/// The route's allow list against the client's identity.
pub(crate) fn authorize(route: &Route, identity: Option<&Identity>) -> Result<(), ConnError> {
    if route.allow.allows(identity) {
        return Ok(());
    }
    Err(ConnError::Denied { identity: identity.cloned(), route: route.name.clone() })
}

/// Accepts at a TLS listener: TLS, or plaintext where peer authentication allows it.
async fn accept(tcp: TcpStream, routing: &TlsRouting, record: &mut ConnectionRecord) -> Result<(Stream, Arc<Route>), ConnError> {
    let deadline = tokio::time::Instant::now() + routing.handshake_timeout;
    let plaintext = match routing.peer_auth {
        PeerAuth::Strict => false,
        PeerAuth::Disable => true,
        PeerAuth::Permissive => !starts_with_tls(&tcp, deadline, routing.detection_window, routing.handshake_timeout).await?,
    };
    if plaintext {
        let entry = routing.default.as_ref().ok_or(ConnError::PlaintextWithoutRoute)?;
        return Ok((Either::Left(tcp), entry.route.clone()));
    }
    accept_tls(tcp, routing, deadline, record).await
}

/// Whether a connection's first bytes start a TLS handshake record (a ClientHello).
pub fn looks_like_tls(first: &[u8]) -> bool {
    first.first() == Some(&TLS_HANDSHAKE_RECORD)
}

/// Peeks (without consuming) until the first byte shows whether the client speaks TLS.
///
/// With a detection `window` (a permissive listener whose default route is
/// server-first, such as MySQL), a client still silent when the window ends is taken as
/// plaintext: it is waiting for the server's greeting, which the default route's
/// negotiation then sends at once, where Istio's permissive mode would wait it out. TLS
/// clients send their ClientHello on connect, well inside the window. Without a window
/// (a `tcp` or client-first default route) the first byte is waited for up to `limit`.
async fn starts_with_tls(tcp: &TcpStream, deadline: tokio::time::Instant, window: Option<Duration>, limit: Duration) -> Result<bool, ConnError> {
    let mut first = [0u8; 1];
    let until = window.map_or(deadline, |window| deadline.min(tokio::time::Instant::now() + window));
    match timeout_at(until, tcp.peek(&mut first)).await {
        Err(_) if window.is_some() => Ok(false),
        Err(_) => Err(ConnError::NoFirstByte(limit)),
        Ok(Err(e)) => Err(ConnError::FirstByte(e)),
        Ok(Ok(0)) => Err(ConnError::ClosedBeforeFirstByte),
        Ok(Ok(_)) => Ok(looks_like_tls(&first)),
    }
}

/// Reads the ClientHello, picks the route by SNI and completes the handshake with that
/// route's certificate, all before `deadline`.
async fn accept_tls(
    tcp: TcpStream,
    routing: &TlsRouting,
    deadline: tokio::time::Instant,
    record: &mut ConnectionRecord,
) -> Result<(Stream, Arc<Route>), ConnError> {
    let timed_out = || ConnError::HandshakeTimeout(routing.handshake_timeout);
    let start = timeout_at(deadline, LazyConfigAcceptor::new(Acceptor::default(), crate::stream::ReadAhead::new(tcp)))
        .await
        .map_err(|_| timed_out())?
        .map_err(ConnError::ClientHello)?;
    let sni = start.client_hello().server_name().map(str::to_owned);
    record.sni = sni.clone();
    let Some(entry) = routing.select(sni.as_deref()) else {
        // Finish the handshake with a config that has no certificate, so the client gets
        // an alert instead of a bare reset.
        let _ = timeout_at(deadline, start.into_stream(routing.refuse.clone())).await;
        return Err(match sni {
            Some(host) => ConnError::UnknownSni(host),
            None => ConnError::NoSni,
        });
    };
    let tls = timeout_at(deadline, start.into_stream(entry.server.clone())).await.map_err(|_| timed_out())?.map_err(ConnError::Handshake)?;
    record.sides.identity = tls.get_ref().1.peer_certificates().and_then(|chain| chain.first()).map(Identity::from_cert);
    record.sides.downstream_tls = true;
    Ok((Either::Right(tls.into()), entry.route.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// A loopback connection: the client end and the accepted end.
    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        (client, accepted)
    }

    async fn decide(first: Option<&[u8]>, window: Option<Duration>, limit: Duration) -> Result<bool, ConnError> {
        let (mut client, accepted) = pair().await;
        if let Some(bytes) = first {
            client.write_all(bytes).await.unwrap();
        }
        let deadline = tokio::time::Instant::now() + limit;
        let verdict = starts_with_tls(&accepted, deadline, window, limit).await;
        if let Some(bytes) = first {
            // Peeked, never consumed: the bytes are still there for the next stage.
            let mut kept = vec![0u8; bytes.len()];
            let peeked = accepted.peek(&mut kept).await.unwrap();
            assert_eq!(&kept[..peeked], &bytes[..peeked]);
        }
        drop(client);
        verdict
    }

    #[tokio::test]
    async fn a_silent_client_is_plaintext_only_with_a_detection_window() {
        let window = Some(Duration::from_millis(20));
        let limit = Duration::from_secs(5);
        let started = Instant::now();
        assert!(!decide(None, window, limit).await.unwrap(), "silence within the window is plaintext");
        assert!(started.elapsed() < Duration::from_secs(2), "waited {:?}, not the window", started.elapsed());
        // The window decides only silence: bytes decide as without it.
        assert!(decide(Some(&[TLS_HANDSHAKE_RECORD, 3, 1]), window, limit).await.unwrap());
        assert!(!decide(Some(b"GET / HTTP/1.1\r\n"), window, limit).await.unwrap());
        // Without a window (a tcp default route), silence is waited out and refused.
        let short = Duration::from_millis(50);
        assert!(matches!(decide(None, None, short).await, Err(ConnError::NoFirstByte(d)) if d == short));
        assert!(decide(Some(&[TLS_HANDSHAKE_RECORD]), None, limit).await.unwrap());
    }

    #[tokio::test]
    async fn a_client_that_closes_at_once_is_refused_with_or_without_window() {
        for window in [None, Some(Duration::from_millis(200))] {
            let (client, accepted) = pair().await;
            drop(client);
            let verdict = starts_with_tls(&accepted, tokio::time::Instant::now() + Duration::from_secs(5), window, Duration::from_secs(5)).await;
            assert!(matches!(verdict, Err(ConnError::ClosedBeforeFirstByte)), "{window:?}: {verdict:?}");
        }
    }

    #[tokio::test]
    async fn the_window_never_outlasts_the_handshake_deadline() {
        let (_client, accepted) = pair().await;
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + Duration::from_millis(30);
        let verdict = starts_with_tls(&accepted, deadline, Some(Duration::from_secs(30)), Duration::from_millis(30)).await;
        assert!(matches!(verdict, Ok(false)), "{verdict:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }
}
