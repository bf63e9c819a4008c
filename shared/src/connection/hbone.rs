//! The pipeline for HBONE ([`crate::hbone`]): at an HBONE listener every `CONNECT`
//! stream goes through the same stages as a connection — routed by its `:authority`,
//! authorized with the connection's client identity, dialled, answered `200` and relayed
//! — with a [`ConnectionRecord`] of its own. A stream that cannot be served is answered
//! with a status (`404` unknown authority, `403` identity not allowed, `503` upstream
//! unreachable, `405` not a CONNECT) and logged; never a bare reset. On an HBONE route,
//! the upstream is one stream on the route's pool.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::StatusCode;
use tokio::net::TcpStream;
use tracing::Instrument;

use super::{authorize, relay_recorded, Context};
use crate::access_log::ConnectionRecord;
use crate::error::{ConnError, UpstreamError};
use crate::hbone::server::{Connect, Session};
use crate::hbone::{Connected, Pool};
use crate::metrics::RouteLabels;
use crate::route::{HboneRouting, ListenerPlan};
use crate::upstream::{Dialer, Stream};

/// What every stream of one HBONE connection shares.
struct Shared {
    plan: Arc<ListenerPlan>,
    context: Arc<Context>,
    peer: SocketAddr,
    /// The address the client connected to here (for a PROXY header to the upstream).
    local: SocketAddr,
    session: Session,
}

/// Serves one accepted connection at an HBONE listener: the handshake, then its streams
/// until the client closes it. `record` is the connection's own (protocol `hbone`: one
/// line per pool connection); each stream writes its own.
pub(super) async fn serve(
    tcp: TcpStream,
    plan: Arc<ListenerPlan>,
    routing: &HboneRouting,
    context: Arc<Context>,
    record: &mut ConnectionRecord,
    watch: &mut super::Watch,
) -> Result<(), ConnError> {
    record.protocol = "hbone";
    let local = tcp.local_addr().unwrap_or(record.downstream);
    let (session, connection) = crate::hbone::server::accept(tcp, routing.server.clone(), plan.handshake_timeout).await?;
    record.sides.identity = session.identity.clone();
    record.sides.downstream_tls = true;
    record.sni = session.sni.clone();
    // The whole connection (every stream on it) is cut when a reload's trust no longer
    // verifies the client's chain.
    if !session.chain.is_empty() {
        watch.register(crate::recheck::Peer::Client { sni: session.sni.clone() }, Some(&session.chain));
    }
    let shared = Arc::new(Shared { plan, context, peer: record.downstream, local, session });
    let draining = shared.context.draining.clone();
    connection
        .run(&draining, |connect| {
            let shared = shared.clone();
            let span = tracing::info_span!("stream", listener = %shared.plan.name, peer = %shared.peer, route = tracing::field::Empty);
            stream(connect, shared).instrument(span)
        })
        .await
}

/// One `CONNECT` stream, to the end; its record is written when this returns.
async fn stream(connect: Connect, shared: Arc<Shared>) {
    let context = &shared.context;
    let mut record = ConnectionRecord::new(context.recorder.clone(), shared.plan.name.as_str().into(), context.direction(), shared.peer);
    record.sides.identity = shared.session.identity.clone();
    record.sides.downstream_tls = true;
    record.sni = shared.session.sni.clone();
    let end = tokio::select! {
        end = serve_stream(connect, &shared, &mut record) => end,
        () = context.force_close.cancelled() => Err(ConnError::Drained(**context.drain_timeout.load())),
    };
    record.finish(end);
}

async fn serve_stream(connect: Connect, shared: &Shared, record: &mut ConnectionRecord) -> Result<(), ConnError> {
    if !connect.is_connect() {
        let what = connect.describe();
        connect.refuse(StatusCode::METHOD_NOT_ALLOWED);
        return Err(ConnError::HboneRequest(format!("{what}: an HBONE listener serves CONNECT only")));
    }
    let authority = connect.authority();
    record.authority = Some(authority.clone());
    // The table as it is now: a reload's routes apply to the next stream.
    let table = shared.context.table.load_full();
    let Some(route) = table.listener(&shared.plan.name).and_then(|plan| plan.hbone()).and_then(|routing| routing.select(&authority)).cloned() else {
        connect.refuse(StatusCode::NOT_FOUND);
        return Err(ConnError::UnknownAuthority(authority));
    };
    record.route = Some(route.name.clone());
    record.destination_service = Some(route.host.clone());
    record.protocol = route.protocol.as_str();
    tracing::Span::current().record("route", route.name.as_str());
    if let Err(denied) = authorize(&route, record.sides.identity.as_ref()) {
        connect.refuse(StatusCode::FORBIDDEN);
        return Err(denied);
    }
    if !route.source_ranges.is_empty() && !crate::proxy_protocol::within(&route.source_ranges, record.downstream.ip()) {
        connect.refuse(StatusCode::FORBIDDEN);
        return Err(ConnError::SourceDenied { client: record.downstream.ip(), route: route.name.clone() });
    }
    let proxy_header = super::proxy_header(&route, record, shared.local)?;
    let dial = Dialer { route: &route, resolver: &shared.context.resolver, sni: None, proxy_header: proxy_header.as_deref(), cancels: None };
    let connecting = Instant::now();
    let (upstream, address) = match Box::pin(dial.connect()).await {
        Ok(connected) => connected,
        Err(e) => {
            connect.refuse(StatusCode::SERVICE_UNAVAILABLE);
            return Err(e.into());
        }
    };
    record.sides.upstream = Some(address);
    record.sides.upstream_tls = route.origination.is_some();
    record.sides.upstream_identity = crate::stream::PeerIdentity::peer_identity(&upstream);
    let downstream = connect.accept()?;
    record.metrics().upstream_connect_seconds.observe(&RouteLabels { route: route.name.clone() }, connecting.elapsed());
    relay_recorded(downstream, upstream, &route, &shared.plan, record).await
}

/// One `CONNECT` stream for a client connection of `dial`'s route, on the route's pool
/// (which opens a pool connection with `dial` — TCP, then the route's mutual TLS with
/// ALPN h2 — when none has room).
pub(super) async fn originate(dial: &Dialer<'_>, pool: &Pool) -> Result<Connected, UpstreamError> {
    let open = || async {
        let (tcp, addr) = dial.tcp().await?;
        let tls: Stream = dial.originate(addr, tcp).await?;
        Ok::<(Stream, SocketAddr), UpstreamError>((tls, addr))
    };
    pool.stream(open, dial.route.connect_timeout).await
}
