//! One accepted connection through the whole pipeline:
//! accept (plain | TLS) -> pick a route (by listener or by SNI) -> authorize -> connect
//! (plain | TLS) -> relay -> one access-log line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use rustls::server::Acceptor;
use tokio::net::TcpStream;
use tokio::time::timeout_at;
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::either::Either;

use crate::access_log::{AccessLog, Outcome, Refusal};
use crate::config::{PeerAuth, Protocol, Role};
use crate::identity::Identity;
use crate::metrics;
use crate::relay::relay;
use crate::resolve::Resolver;
use crate::route::{Route, Routing, TlsRouting};
use crate::upstream::{self, Stream};

/// First byte of every TLS record carrying a handshake message (the ClientHello).
const TLS_HANDSHAKE_RECORD: u8 = 0x16;

/// What every connection of a process shares.
pub struct Context {
    /// The current routing state; replaced whole on reload.
    pub table: ArcSwap<crate::route::RouteTable>,
    /// Upstream name resolution.
    pub resolver: Resolver,
    /// Which binary this is (labels metrics `outbound` or `inbound`).
    pub role: Role,
}

/// Serves one accepted connection to the end and logs it.
pub async fn handle(tcp: TcpStream, peer: SocketAddr, listener: Arc<str>, context: Arc<Context>) {
    let _active = metrics::get().connection_active(&listener);
    let mut log = AccessLog {
        start: SystemTime::now(),
        listener,
        direction: match context.role {
            Role::Egress => "outbound",
            Role::Ingress => "inbound",
        },
        downstream: peer,
        ..AccessLog::default()
    };
    let clock = Instant::now();
    let outcome = serve(tcp, &context, &mut log).await;
    log.duration = clock.elapsed();
    log.emit(outcome);
}

async fn serve(tcp: TcpStream, context: &Context, log: &mut AccessLog) -> Outcome {
    let table = context.table.load_full();
    let Some(plan) = table.listener(&log.listener) else {
        return Outcome::Refused(Refusal::ListenerRemoved, "listener was removed".into());
    };
    crate::socket::tune(&tcp, &plan.keepalive);
    let (downstream, route) = match &plan.routing {
        Routing::Plain(route) => (Either::Left(tcp), route.clone()),
        // Boxed: the handshake's state is large and only needed until it completes, so
        // an idle connection's task does not carry it.
        Routing::Tls(routing) => match Box::pin(accept(tcp, routing, log)).await {
            Ok(accepted) => accepted,
            Err(outcome) => return outcome,
        },
    };
    log.route = Some(route.name.clone());
    log.protocol = route.protocol.as_str();
    if route.protocol != Protocol::Tcp {
        // A client already inside TLS is judged before the database sees a connection
        // (failed handshakes count towards MySQL's max_connect_errors host block).
        if log.downstream_tls && !route.allow.allows(log.identity.as_ref()) {
            return denied(&route, log);
        }
        let timeout = plan.handshake_timeout;
        let connecting = Instant::now();
        let negotiated = Box::pin(crate::protocol::negotiate(&route, downstream, &context.resolver, log, timeout)).await;
        let labels = metrics::NegotiationLabels {
            route: route.name.clone(),
            protocol: route.protocol.as_str(),
            tls: log.tls_sides(),
            outcome: negotiated.as_ref().map_or_else(|outcome| outcome.class(), |_| "ok"),
        };
        metrics::get().negotiated(&labels);
        let (downstream, upstream) = match negotiated {
            Ok(streams) => streams,
            Err(outcome) => return outcome,
        };
        metrics::get().connection_opened(&log.labels());
        metrics::get().upstream_connected(&route.name, connecting.elapsed());
        return relay_and_close(downstream, upstream, &route, log).await;
    }
    if !route.allow.allows(log.identity.as_ref()) {
        return denied(&route, log);
    }
    metrics::get().connection_opened(&log.labels());
    let connecting = Instant::now();
    let (upstream, address) = match Box::pin(upstream::connect(&route, &context.resolver)).await {
        Ok(connected) => connected,
        Err(e) => {
            metrics::get().upstream_failed(&route.name, matches!(e, upstream::UpstreamError::Resolve(_)));
            return Outcome::UpstreamFailed(e.to_string());
        }
    };
    metrics::get().upstream_connected(&route.name, connecting.elapsed());
    log.upstream = Some(address);
    log.upstream_tls = route.origination.is_some();
    relay_and_close(downstream, upstream, &route, log).await
}

/// The refusal of a client the route's allow list does not name.
pub fn denied(route: &Route, log: &AccessLog) -> Outcome {
    let who = log.identity.as_ref().map_or_else(|| "a client without a certificate".to_owned(), |id| format!("identity {id}"));
    Outcome::Denied(format!("{who} is not on route {:?}'s allow list", route.name))
}

/// Relays until both sides close, and records what moved.
async fn relay_and_close(downstream: Stream, upstream: Stream, route: &Route, log: &mut AccessLog) -> Outcome {
    // Boxed, like the set-up stages: the task itself then stays small.
    let moved = Box::pin(relay(downstream, upstream, route.idle_timeout)).await;
    log.bytes_received = moved.from_downstream;
    log.bytes_sent = moved.from_upstream;
    match moved.error {
        None => Outcome::Closed,
        Some(e) => Outcome::RelayFailed(e),
    }
}

/// Accepts at a TLS listener: TLS, or plaintext where peer authentication allows it.
async fn accept(tcp: TcpStream, routing: &TlsRouting, log: &mut AccessLog) -> Result<(Stream, Arc<Route>), Outcome> {
    let deadline = tokio::time::Instant::now() + routing.handshake_timeout;
    let plaintext = match routing.peer_auth {
        PeerAuth::Strict => false,
        PeerAuth::Disable => true,
        PeerAuth::Permissive => !starts_with_tls(&tcp, deadline, routing.handshake_timeout).await?,
    };
    if plaintext {
        let entry = routing.default.as_ref().ok_or_else(|| Outcome::Refused(Refusal::Plaintext, "plaintext client and no default_route".into()))?;
        return Ok((Either::Left(tcp), entry.route.clone()));
    }
    accept_tls(tcp, routing, deadline, log).await
}

/// Whether a connection's first bytes start a TLS handshake record (a ClientHello).
pub fn looks_like_tls(first: &[u8]) -> bool {
    first.first() == Some(&TLS_HANDSHAKE_RECORD)
}

/// Peeks (without consuming) until the first byte shows whether the client speaks TLS.
async fn starts_with_tls(tcp: &TcpStream, deadline: tokio::time::Instant, limit: Duration) -> Result<bool, Outcome> {
    let mut first = [0u8; 1];
    match timeout_at(deadline, tcp.peek(&mut first)).await {
        Err(_) => Err(Outcome::Refused(Refusal::Timeout, format!("no first byte within {limit:?}"))),
        Ok(Err(e)) => Err(Outcome::Refused(Refusal::Other, format!("read failed before the first byte: {e}"))),
        Ok(Ok(0)) => Err(Outcome::Refused(Refusal::Other, "closed before sending anything".into())),
        Ok(Ok(_)) => Ok(looks_like_tls(&first)),
    }
}

/// Reads the ClientHello, picks the route by SNI and completes the handshake with that
/// route's certificate, all before `deadline`.
async fn accept_tls(tcp: TcpStream, routing: &TlsRouting, deadline: tokio::time::Instant, log: &mut AccessLog) -> Result<(Stream, Arc<Route>), Outcome> {
    let timed_out = || Outcome::Refused(Refusal::Timeout, format!("TLS handshake not completed within {:?}", routing.handshake_timeout));
    let start = timeout_at(deadline, LazyConfigAcceptor::new(Acceptor::default(), tcp))
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| Outcome::Refused(Refusal::of_handshake(&e), format!("bad ClientHello: {e}")))?;
    let sni = start.client_hello().server_name().map(str::to_owned);
    log.sni = sni.clone();
    let Some(entry) = routing.select(sni.as_deref()) else {
        // Finish the handshake with a config that has no certificate, so the client gets
        // an alert instead of a bare reset.
        let _ = timeout_at(deadline, start.into_stream(routing.refuse.clone())).await;
        return Err(match sni {
            Some(host) => Outcome::Refused(Refusal::UnknownSni, format!("unknown SNI {host:?}")),
            None => Outcome::Refused(Refusal::NoSni, "no SNI and the listener has no default_route".into()),
        });
    };
    let tls = timeout_at(deadline, start.into_stream(entry.server.clone()))
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| Outcome::Refused(Refusal::of_handshake(&e), format!("TLS handshake failed: {e}")))?;
    log.identity = tls.get_ref().1.peer_certificates().and_then(|chain| chain.first()).map(Identity::from_cert);
    log.mtls = log.identity.is_some();
    log.downstream_tls = true;
    Ok((Either::Right(tls.into()), entry.route.clone()))
}
