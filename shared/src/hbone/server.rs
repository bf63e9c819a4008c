//! The server side of HBONE's HTTP/2: the mutual-TLS handshake (ALPN h2) at an HBONE
//! listener, the HTTP/2 connection, and its requests handed one by one to the pipeline
//! as [`Connect`]s, each served on a task of its own. What a stream *means* (its route,
//! its authorization, its upstream, its record) is the pipeline's business
//! (`connection`); this module only speaks HTTP/2, so it imports nothing above it.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use http::{Method, Request, Response, StatusCode};
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::stream::H2Stream;
use super::{CONNECTION_WINDOW, MAX_FRAME_SIZE, SERVER_MAX_STREAMS, STREAM_WINDOW};
use crate::error::ConnError;
use crate::identity::Identity;

/// What the TLS handshake of an HBONE connection established, shared by its streams.
#[derive(Clone, Debug)]
pub struct Session {
    /// The client certificate's identity (mutual TLS: always there in practice).
    pub identity: Option<Identity>,
    /// The SNI the client sent, if any.
    pub sni: Option<String>,
    /// The client's certificate chain, to verify again when a reload changes the trust.
    pub chain: Vec<rustls_pki_types::CertificateDer<'static>>,
}

/// An accepted HBONE connection, ready to serve its streams.
pub struct Connection(h2::server::Connection<TlsStream<TcpStream>, Bytes>);

/// One request on an HBONE connection: normally a `CONNECT`; answered by the pipeline
/// with [`Connect::accept`] or [`Connect::refuse`].
pub struct Connect {
    request: Request<h2::RecvStream>,
    respond: SendResponse<Bytes>,
}

/// Handshakes with a client at an HBONE listener: TLS with `server` (which requires
/// ALPN h2 of a client that offers ALPN), then HTTP/2's preface and settings, both
/// within `limit`.
pub async fn accept(tcp: TcpStream, server: Arc<ServerConfig>, limit: Duration) -> Result<(Session, Connection), ConnError> {
    let tls = match timeout(limit, TlsAcceptor::from(server).accept(tcp)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => return Err(ConnError::Handshake(e)),
        Err(_) => return Err(ConnError::HandshakeTimeout(limit)),
    };
    let (_, state) = tls.get_ref();
    let session = Session {
        identity: state.peer_certificates().and_then(|chain| chain.first()).map(Identity::from_cert),
        sni: state.server_name().map(str::to_owned),
        chain: state.peer_certificates().map(<[_]>::to_vec).unwrap_or_default(),
    };
    let mut builder = h2::server::Builder::new();
    builder
        .initial_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME_SIZE)
        .max_concurrent_streams(SERVER_MAX_STREAMS);
    match timeout(limit, builder.handshake::<_, Bytes>(tls)).await {
        Ok(Ok(h2)) => Ok((session, Connection(h2))),
        Ok(Err(e)) => Err(ConnError::HboneRequest(format!("HTTP/2 handshake failed: {e}"))),
        Err(_) => Err(ConnError::HandshakeTimeout(limit)),
    }
}

impl Connection {
    /// Serves requests until the client closes the connection (or it fails), each one
    /// on a task of its own made by `each`; returns once every stream's task has ended
    /// too, so a drain that waits for this connection waits for its streams. When
    /// `draining` is cancelled the connection sends GOAWAY: no new streams, the open ones
    /// run to their end, then it closes.
    pub async fn run<F, Fut>(mut self, draining: &CancellationToken, mut each: F) -> Result<(), ConnError>
    where
        F: FnMut(Connect) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let mut streams = JoinSet::new();
        let mut going_away = false;
        let ended = loop {
            tokio::select! {
                () = draining.cancelled(), if !going_away => {
                    going_away = true;
                    self.0.graceful_shutdown();
                }
                next = self.0.accept() => match next {
                    Some(Ok((request, respond))) => {
                        streams.spawn(each(Connect { request, respond }));
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
}

impl Connect {
    /// Whether this is a `CONNECT` (anything else is refused with 405).
    pub fn is_connect(&self) -> bool {
        self.request.method() == Method::CONNECT
    }

    /// The method and target, for the record of a request that is not a `CONNECT`.
    pub fn describe(&self) -> String {
        format!("{} {}", self.request.method(), self.request.uri())
    }

    /// The `:authority` (`host:port`); empty when there is none.
    pub fn authority(&self) -> String {
        self.request.uri().authority().map(|a| a.as_str().to_owned()).unwrap_or_default()
    }

    /// Answers `200` and hands over the tunnel.
    pub fn accept(mut self) -> Result<H2Stream, ConnError> {
        let send = self.respond.send_response(Response::new(()), false).map_err(ConnError::Hbone)?;
        Ok(H2Stream::new(send, self.request.into_body()))
    }

    /// Answers `status` and ends the stream: the peer learns why, never a bare reset.
    pub fn refuse(mut self, status: StatusCode) {
        let mut response = Response::new(());
        *response.status_mut() = status;
        // The peer may already have reset the stream; its record says why it ended anyway.
        let _ = self.respond.send_response(response, true);
    }
}
