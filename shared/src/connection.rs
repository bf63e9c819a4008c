//! One accepted connection through the whole pipeline:
//! accept (plain | TLS) -> pick a route (by listener or by SNI) -> connect (plain | TLS)
//! -> relay -> one access-log line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use rustls::server::Acceptor;
use tokio::net::TcpStream;
use tokio::time::timeout_at;
use tokio_rustls::LazyConfigAcceptor;
use tokio_util::either::Either;

use crate::access_log::{AccessLog, Outcome};
use crate::identity::Identity;
use crate::relay::relay;
use crate::resolve::Resolver;
use crate::route::{Route, Routing, TlsRouting};
use crate::upstream::{self, Stream};

/// What every connection of a process shares.
pub struct Context {
    /// The current routing state; replaced whole on reload.
    pub table: ArcSwap<crate::route::RouteTable>,
    /// Upstream name resolution.
    pub resolver: Resolver,
}

/// Serves one accepted connection to the end and logs it.
pub async fn handle(tcp: TcpStream, peer: SocketAddr, listener: Arc<str>, context: Arc<Context>) {
    let mut log = AccessLog {
        start: SystemTime::now(),
        listener,
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
        return Outcome::Refused("listener was removed".into());
    };
    let (downstream, route) = match &plan.routing {
        Routing::Plain(route) => (Either::Left(tcp), route.clone()),
        Routing::Tls(routing) => match accept_tls(tcp, routing, log).await {
            Ok(accepted) => accepted,
            Err(outcome) => return outcome,
        },
    };
    log.route = Some(route.name.clone());
    let (upstream, address) = match upstream::connect(&route, &context.resolver).await {
        Ok(connected) => connected,
        Err(e) => return Outcome::UpstreamFailed(e.to_string()),
    };
    log.upstream = Some(address);
    let moved = relay(downstream, upstream).await;
    log.bytes_received = moved.from_downstream;
    log.bytes_sent = moved.from_upstream;
    match moved.error {
        None => Outcome::Closed,
        Some(e) => Outcome::RelayFailed(e),
    }
}

/// Reads the ClientHello, picks the route by SNI and completes the handshake with that
/// route's certificate, all within the listener's handshake timeout.
async fn accept_tls(tcp: TcpStream, routing: &TlsRouting, log: &mut AccessLog) -> Result<(Stream, Arc<Route>), Outcome> {
    let deadline = tokio::time::Instant::now() + routing.handshake_timeout;
    let timed_out = || Outcome::Refused(format!("TLS handshake not completed within {:?}", routing.handshake_timeout));
    let start = timeout_at(deadline, LazyConfigAcceptor::new(Acceptor::default(), tcp))
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| Outcome::Refused(format!("bad ClientHello: {e}")))?;
    let sni = start.client_hello().server_name().map(str::to_owned);
    log.sni = sni.clone();
    let Some(entry) = routing.select(sni.as_deref()) else {
        // Finish the handshake with a config that has no certificate, so the client gets
        // an alert instead of a bare reset.
        let _ = timeout_at(deadline, start.into_stream(routing.refuse.clone())).await;
        return Err(Outcome::Refused(match sni {
            Some(host) => format!("unknown SNI {host:?}"),
            None => "no SNI and the listener has no default_route".into(),
        }));
    };
    let tls = timeout_at(deadline, start.into_stream(entry.server.clone()))
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| Outcome::Refused(format!("TLS handshake failed: {e}")))?;
    log.identity = tls.get_ref().1.peer_certificates().and_then(|chain| chain.first()).map(Identity::from_cert);
    Ok((Either::Right(tls.into()), entry.route.clone()))
}
