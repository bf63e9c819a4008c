//! PostgreSQL: TLS negotiated with an SSLRequest before the StartupMessage.
//!
//! A client that wants TLS sends SSLRequest (8 bytes) and upgrades on `S`; `N` means
//! plaintext. Strait answers the client itself — `S` when the route terminates TLS,
//! `N` otherwise (and always `N` to GSSENCRequest) — then sends its own SSLRequest
//! upstream when the route originates TLS, requires `S` (an `N` is refused: no silent
//! plaintext), upgrades, forwards the StartupMessage and relays. A CancelRequest, which
//! libpq sends on a new connection when the user presses Ctrl-C, takes the same way
//! upstream on its own connection, so query cancel works through the gateway.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::either::Either;

use super::{accept_client_tls, authorize, client_side, connect, nothing_pending, originate, read_exact_vec};
use crate::access_log::Sides;
use crate::config::SslMode;
use crate::error::ConnError;
use crate::upstream::{unless_client_gone, Dialer, Stream};

/// SSLRequest's code (1234 << 16 | 5679).
pub const SSL_REQUEST: u32 = 80_877_103;
/// GSSENCRequest's code (1234 << 16 | 5680).
pub const GSSENC_REQUEST: u32 = 80_877_104;
/// CancelRequest's code (1234 << 16 | 5678).
pub const CANCEL_REQUEST: u32 = 80_877_102;
/// Protocol 3.0, the StartupMessage every current client sends.
pub const PROTOCOL_3_0: u32 = 196_608;
/// PostgreSQL's own limit on a startup packet.
pub const MAX_STARTUP: usize = 10_000;

/// A client's first messages, by their code.
#[derive(Debug, PartialEq, Eq)]
pub enum Startup {
    /// Asks for TLS.
    SslRequest,
    /// Asks for GSSAPI encryption (always declined).
    GssEncRequest,
    /// Cancels a query of another connection; the whole message is kept.
    Cancel(Vec<u8>),
    /// The StartupMessage (protocol 3.x); the whole message is kept.
    Startup(Vec<u8>),
}

/// Classifies a complete length-prefixed first message.
pub fn parse_startup(message: &[u8]) -> Result<Startup, String> {
    if message.len() < 8 {
        return Err(format!("startup packet of {} bytes is too short", message.len()));
    }
    let code = u32::from_be_bytes([message[4], message[5], message[6], message[7]]);
    match (code, message.len()) {
        (SSL_REQUEST, 8) => Ok(Startup::SslRequest),
        (GSSENC_REQUEST, 8) => Ok(Startup::GssEncRequest),
        (CANCEL_REQUEST, 16) => Ok(Startup::Cancel(message.to_vec())),
        (code, _) if code >> 16 == 3 => Ok(Startup::Startup(message.to_vec())),
        (code, len) => Err(format!("unsupported startup code {code} (length {len})")),
    }
}

/// The length a startup packet announces, checked against PostgreSQL's own limits.
pub fn startup_length(header: [u8; 4]) -> Result<usize, String> {
    let len = u32::from_be_bytes(header) as usize;
    if !(8..=MAX_STARTUP).contains(&len) {
        return Err(format!("startup packet length {len} is outside 8..={MAX_STARTUP}"));
    }
    Ok(len)
}

async fn read_startup<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Startup, ConnError> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).await.map_err(|e| ConnError::client_closed(format!("startup packet: {e}")))?;
    let len = startup_length(header).map_err(ConnError::client)?;
    let mut message = header.to_vec();
    message.extend(read_exact_vec(stream, len - 4, "startup packet").await?);
    parse_startup(&message).map_err(ConnError::client)
}

/// An ErrorResponse the client's library shows as a PostgreSQL error.
pub fn error_response(code: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for (field, value) in [(b'S', "FATAL"), (b'V', "FATAL"), (b'C', code), (b'M', message)] {
        body.push(field);
        body.extend_from_slice(value.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut out = vec![b'E'];
    out.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    out.extend(body);
    out
}

async fn refuse<S: AsyncWrite + Unpin>(client: &mut S, code: &str, error: ConnError) -> ConnError {
    let _ = client.write_all(&error_response(code, &format!("strait: {error}"))).await;
    let _ = client.flush().await;
    error
}

/// The PostgreSQL start-up through the gateway; see the module documentation.
pub async fn negotiate(downstream: Stream, dial: &Dialer<'_>, sides: &mut Sides) -> Result<(Stream, Stream), ConnError> {
    let route = dial.route;
    let client_mode = client_side(route, &downstream);
    let mut client = downstream;
    let mut first = read_startup(&mut client).await?;
    // At most one GSSENCRequest and one SSLRequest precede the StartupMessage.
    for _ in 0..2 {
        match first {
            Startup::GssEncRequest => {
                write(&mut client, b"N").await?;
                first = read_startup(&mut client).await?;
            }
            Startup::SslRequest if client_mode == SslMode::Disabled || matches!(client, Either::Right(_)) => {
                write(&mut client, b"N").await?;
                first = read_startup(&mut client).await?;
            }
            Startup::SslRequest => {
                let Either::Left(tcp) = client else { unreachable!("checked above") };
                nothing_pending(&tcp, "the client").await?;
                let mut plain = tcp;
                write(&mut plain, b"S").await?;
                client = accept_client_tls(route, plain, sides).await?;
                first = read_startup(&mut client).await?;
            }
            _ => break,
        }
    }
    let message = match first {
        Startup::Startup(message) => {
            if client_mode == SslMode::Required && !sides.downstream_tls {
                return Err(refuse(&mut client, "28000", ConnError::ClientNotTls).await);
            }
            if let Err(outcome) = authorize(route, sides) {
                return Err(refuse(&mut client, "28000", outcome).await);
            }
            message
        }
        // A cancel is authorized by its secret key, as PostgreSQL itself does; libpq
        // before 17 sends it in plaintext even for TLS sessions.
        Startup::Cancel(message) => {
            // Each CancelRequest is a guess at a cancel key: limited per source address.
            // Refused as PostgreSQL answers every cancel: by closing, without a word.
            if let Some(gate) = &dial.cancels {
                gate.admit()?;
            }
            message
        }
        other => return Err(refuse(&mut client, "08P01", ConnError::client(format!("unexpected {other:?} after the TLS negotiation"))).await),
    };
    let mut server = match unless_client_gone(&client, connect_server(dial, sides)).await {
        Ok(server) => server,
        Err(ConnError::ClientGone) => return Err(ConnError::ClientGone),
        Err(outcome) => return Err(refuse(&mut client, "08006", outcome).await),
    };
    server.write_all(&message).await.map_err(|e| ConnError::upstream(format!("server write: {e}")))?;
    server.flush().await.map_err(|e| ConnError::upstream(format!("server flush: {e}")))?;
    Ok((client, server))
}

/// Connects to the server and, when the route originates TLS, negotiates it: our
/// SSLRequest must be answered `S`.
async fn connect_server(dial: &Dialer<'_>, sides: &mut Sides) -> Result<Stream, ConnError> {
    let (mut tcp, addr) = connect(dial, sides).await?;
    if dial.route.origination.is_none() {
        return Ok(Either::Left(tcp));
    }
    let mut request = 8u32.to_be_bytes().to_vec();
    request.extend_from_slice(&SSL_REQUEST.to_be_bytes());
    tcp.write_all(&request).await.map_err(|e| ConnError::upstream(format!("server write: {e}")))?;
    let mut answer = [0u8; 1];
    tcp.read_exact(&mut answer).await.map_err(|e| ConnError::upstream(format!("server closed after our SSLRequest: {e}")))?;
    match answer[0] {
        b'S' => {
            // Nothing may follow `S` before our ClientHello (CVE-2021-23222: injected
            // bytes taken as part of the session).
            nothing_pending(&tcp, "the server")
                .await
                .map_err(|_| ConnError::upstream("the server sent data after S, before the TLS handshake: refused (CVE-2021-23222 class)"))?;
            originate(dial, tcp, addr, sides).await
        }
        b'N' => Err(ConnError::upstream("the server answered N to our SSLRequest (no TLS): refusing to fall back to plaintext")),
        other => Err(ConnError::upstream(format!("the server answered {:?} to our SSLRequest", other as char))),
    }
}

async fn write<S: AsyncWrite + Unpin>(stream: &mut S, bytes: &[u8]) -> Result<(), ConnError> {
    stream.write_all(bytes).await.map_err(|e| ConnError::client(format!("client write: {e}")))?;
    stream.flush().await.map_err(|e| ConnError::client(format!("client flush: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(code: u32, rest: &[u8]) -> Vec<u8> {
        let mut m = ((8 + rest.len()) as u32).to_be_bytes().to_vec();
        m.extend_from_slice(&code.to_be_bytes());
        m.extend_from_slice(rest);
        m
    }

    #[test]
    fn first_messages_are_classified() {
        assert_eq!(parse_startup(&message(SSL_REQUEST, &[])).unwrap(), Startup::SslRequest);
        assert_eq!(parse_startup(&message(GSSENC_REQUEST, &[])).unwrap(), Startup::GssEncRequest);
        assert!(matches!(parse_startup(&message(CANCEL_REQUEST, &[0; 8])).unwrap(), Startup::Cancel(_)));
        assert!(matches!(parse_startup(&message(PROTOCOL_3_0, b"user\0app\0\0")).unwrap(), Startup::Startup(_)));
        assert!(parse_startup(&message(SSL_REQUEST, &[1])).is_err());
        assert!(parse_startup(&message(1234, &[])).is_err());
        assert!(parse_startup(&[0, 0, 0, 8]).is_err());
    }

    #[test]
    fn startup_length_is_bounded() {
        assert!(startup_length(7u32.to_be_bytes()).is_err());
        assert!(startup_length(10_001u32.to_be_bytes()).is_err());
        assert_eq!(startup_length(8u32.to_be_bytes()).unwrap(), 8);
    }

    #[test]
    fn error_response_is_well_formed() {
        let e = error_response("28000", "no");
        assert_eq!(e[0], b'E');
        assert_eq!(u32::from_be_bytes([e[1], e[2], e[3], e[4]]) as usize, e.len() - 1);
        assert_eq!(*e.last().unwrap(), 0);
    }
}
