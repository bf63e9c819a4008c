//! The server side of HBONE: one mutual-TLS connection with ALPN h2 at an HBONE
//! listener, serving HTTP/2; every `CONNECT` stream on it is a connection of its own
//! through the pipeline — routed by its `:authority`, authorized with the connection's
//! client identity, dialled, answered `200` and relayed — with its own
//! [`ConnectionRecord`]. A stream that cannot be served is answered with a status
//! (`404` unknown authority, `403` identity not allowed, `503` upstream unreachable,
//! `405` not a CONNECT) and logged; never a bare reset.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use h2::server::SendResponse;
use http::{Method, Request, Response, StatusCode};
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tracing::Instrument;

use super::stream::H2Stream;
use super::{CONNECTION_WINDOW, MAX_FRAME_SIZE, SERVER_MAX_STREAMS, STREAM_WINDOW};
use crate::access_log::ConnectionRecord;
use crate::connection::{authorize, relay_recorded, Context};
use crate::error::ConnError;
use crate::identity::Identity;
use crate::metrics::RouteLabels;
use crate::route::{HboneRouting, ListenerPlan};
use crate::upstream::Dialer;

/// What every stream of one HBONE connection shares.
struct Shared {
    plan: Arc<ListenerPlan>,
    context: Arc<Context>,
    peer: SocketAddr,
    sni: Option<String>,
    identity: Option<Identity>,
}

/// Serves one accepted connection at an HBONE listener: the TLS handshake, then its
/// streams until the client closes the connection. `record` is the connection's own
/// (protocol `hbone`: one line per pool connection); each stream writes its own.
pub async fn serve(
    tcp: TcpStream,
    plan: Arc<ListenerPlan>,
    routing: &HboneRouting,
    context: Arc<Context>,
    record: &mut ConnectionRecord,
) -> Result<(), ConnError> {
    record.protocol = "hbone";
    let limit = plan.handshake_timeout;
    let tls = match timeout(limit, TlsAcceptor::from(routing.server.clone()).accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return Err(ConnError::Handshake(e)),
        Err(_) => return Err(ConnError::HandshakeTimeout(limit)),
    };
    let (_, session) = tls.get_ref();
    let identity = session.peer_certificates().and_then(|chain| chain.first()).map(Identity::from_cert);
    let sni = session.server_name().map(str::to_owned);
    record.sides.identity = identity.clone();
    record.sides.downstream_tls = true;
    record.sni = sni.clone();
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_concurrent_streams(SERVER_MAX_STREAMS);
    let mut h2 = match timeout(limit, builder.handshake::<_, Bytes>(tls)).await {
        Ok(Ok(h2)) => h2,
        Ok(Err(e)) => return Err(ConnError::HboneRequest(format!("HTTP/2 handshake failed: {e}"))),
        Err(_) => return Err(ConnError::HandshakeTimeout(limit)),
    };
    let shared = Arc::new(Shared { plan, context, peer: record.downstream, sni, identity });
    let mut streams = JoinSet::new();
    let ended = loop {
        tokio::select! {
            next = h2.accept() => match next {
                Some(Ok((request, respond))) => {
                    let shared = shared.clone();
                    let span = tracing::info_span!("stream", listener = %shared.plan.name, peer = %shared.peer, route = tracing::field::Empty);
                    streams.spawn(stream(request, respond, shared).instrument(span));
                }
                Some(Err(e)) => break Err(ConnError::Hbone(e)),
                None => break Ok(()),
            },
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    };
    // The connection is gone: each stream's relay ends with it, and records itself.
    while streams.join_next().await.is_some() {}
    ended
}

/// One `CONNECT` stream, to the end; its record is written when this returns.
async fn stream(request: Request<h2::RecvStream>, respond: SendResponse<Bytes>, shared: Arc<Shared>) {
    let context = &shared.context;
    let mut record = ConnectionRecord::new(context.recorder.clone(), shared.plan.name.as_str().into(), context.direction(), shared.peer);
    record.sides.identity = shared.identity.clone();
    record.sides.downstream_tls = true;
    record.sni = shared.sni.clone();
    let end = tokio::select! {
        end = serve_stream(request, respond, &shared, &mut record) => end,
        () = context.force_close.cancelled() => Err(ConnError::Drained(**context.drain_timeout.load())),
    };
    record.finish(end);
}

async fn serve_stream(
    request: Request<h2::RecvStream>,
    mut respond: SendResponse<Bytes>,
    shared: &Shared,
    record: &mut ConnectionRecord,
) -> Result<(), ConnError> {
    if request.method() != Method::CONNECT {
        refuse(&mut respond, StatusCode::METHOD_NOT_ALLOWED);
        return Err(ConnError::HboneRequest(format!("{} {}: an HBONE listener serves CONNECT only", request.method(), request.uri())));
    }
    let authority = request.uri().authority().map(|a| a.as_str().to_owned()).unwrap_or_default();
    record.authority = Some(authority.clone());
    let table = shared.context.table.load_full();
    let Some(route) = table.listener(&shared.plan.name).and_then(|plan| plan.hbone()).and_then(|routing| routing.select(&authority)).cloned() else {
        refuse(&mut respond, StatusCode::NOT_FOUND);
        return Err(ConnError::UnknownAuthority(authority));
    };
    record.route = Some(route.name.clone());
    record.destination_service = Some(route.host.clone());
    record.protocol = route.protocol.as_str();
    tracing::Span::current().record("route", route.name.as_str());
    if let Err(denied) = authorize(&route, record.sides.identity.as_ref()) {
        refuse(&mut respond, StatusCode::FORBIDDEN);
        return Err(denied);
    }
    let dial = Dialer { route: &route, resolver: &shared.context.resolver };
    let connecting = Instant::now();
    let (upstream, address) = match Box::pin(dial.connect()).await {
        Ok(connected) => connected,
        Err(e) => {
            refuse(&mut respond, StatusCode::SERVICE_UNAVAILABLE);
            return Err(e.into());
        }
    };
    record.sides.upstream = Some(address);
    record.sides.upstream_tls = route.origination.is_some();
    let send = respond.send_response(Response::new(()), false).map_err(ConnError::Hbone)?;
    let downstream = H2Stream::new(send, request.into_body());
    record.metrics().upstream_connect_seconds.observe(&RouteLabels { route: route.name.clone() }, connecting.elapsed());
    relay_recorded(downstream, upstream, &route, &shared.plan, record).await
}

/// Answers a stream that will not be served with `status` and ends it.
fn refuse(respond: &mut SendResponse<Bytes>, status: StatusCode) {
    let mut response = Response::new(());
    *response.status_mut() = status;
    // The peer may already have reset the stream; its record says why it ended anyway.
    let _ = respond.send_response(response, true);
}
