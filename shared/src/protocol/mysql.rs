//! MySQL / MariaDB: TLS negotiated in the connection phase.
//!
//! The server greets first (HandshakeV10, with CLIENT_SSL in its capabilities when it
//! can do TLS); a client that wants TLS answers with a 32-byte SSL request, upgrades,
//! then sends its handshake response. Strait sits in the middle of that: it gives the
//! client a greeting offering TLS only if this route terminates it, takes the client's
//! response (over TLS or not), makes its own SSL request upstream when the route
//! originates TLS, and then forwards the rest of the connection phase (auth switch, extra
//! auth rounds) packet by packet, renumbering sequence ids because the two sides did not
//! use the same number of packets to get there. After the server's OK or ERR, bytes are
//! relayed as they are.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::either::Either;

use super::{accept_client_tls, authorize, client_side, connect, originate, MAX_NEGOTIATION_PACKET};
use crate::access_log::Sides;
use crate::config::SslMode;
use crate::error::ConnError;
use crate::upstream::{unless_client_gone, Dialer, Stream};

/// Capability flag: the peer can switch to TLS.
pub const CLIENT_SSL: u32 = 0x0000_0800;
/// Capability flag: 4.1 protocol (every client and server since MySQL 4.1).
pub const CLIENT_PROTOCOL_41: u32 = 0x0000_0200;
/// Length of an SSL request payload.
const SSL_REQUEST_LEN: usize = 32;
/// MySQL's ER_SECURE_TRANSPORT_REQUIRED.
const ER_SECURE_TRANSPORT_REQUIRED: u16 = 3159;
/// ER_HANDSHAKE_ERROR: what MySQL answers to a broken handshake.
const ER_HANDSHAKE_ERROR: u16 = 1043;

/// One MySQL packet: sequence id and payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Sequence id.
    pub seq: u8,
    /// Payload (without the 4-byte header).
    pub payload: Vec<u8>,
}

impl Packet {
    /// Header plus payload, ready to write.
    pub fn encode(&self) -> Vec<u8> {
        let len = self.payload.len() as u32;
        let mut out = Vec::with_capacity(4 + self.payload.len());
        out.extend_from_slice(&len.to_le_bytes()[..3]);
        out.push(self.seq);
        out.extend_from_slice(&self.payload);
        out
    }
}

/// Splits the first complete packet off `buf`; `Ok(None)` when more bytes are needed.
/// A packet larger than `max` is an error (a hostile or broken peer).
pub fn parse_packet(buf: &mut Vec<u8>, max: usize) -> Result<Option<Packet>, String> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_le_bytes([buf[0], buf[1], buf[2], 0]) as usize;
    if len > max {
        return Err(format!("packet of {len} bytes exceeds the {max}-byte limit before the relay"));
    }
    if buf.len() < 4 + len {
        return Ok(None);
    }
    let seq = buf[3];
    let payload = buf[4..4 + len].to_vec();
    buf.drain(..4 + len);
    Ok(Some(Packet { seq, payload }))
}

/// A stream read packet by packet; cancel-safe (partial packets stay buffered).
struct PacketStream<S> {
    stream: S,
    buffer: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> PacketStream<S> {
    fn new(stream: S) -> Self {
        PacketStream { stream, buffer: Vec::new() }
    }

    async fn read(&mut self, who: &str) -> Result<Packet, String> {
        loop {
            if let Some(packet) = parse_packet(&mut self.buffer, MAX_NEGOTIATION_PACKET).map_err(|e| format!("{who}: {e}"))? {
                return Ok(packet);
            }
            let n = self.stream.read_buf(&mut self.buffer).await.map_err(|e| format!("{who} read: {e}"))?;
            if n == 0 {
                return Err(format!("{who} closed the connection during the handshake"));
            }
        }
    }

    /// Reads one packet without reading past it: after a client's SSL request its TLS
    /// ClientHello follows at once (MySQL sends nothing in between), and those bytes
    /// must stay in the socket for the TLS handshake.
    async fn read_exact(&mut self, who: &str) -> Result<Packet, String> {
        debug_assert!(self.buffer.is_empty());
        let mut header = [0u8; 4];
        self.stream.read_exact(&mut header).await.map_err(|e| format!("{who} read: {e}"))?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
        if len > MAX_NEGOTIATION_PACKET {
            return Err(format!("{who}: packet of {len} bytes exceeds the {MAX_NEGOTIATION_PACKET}-byte limit before the relay"));
        }
        let mut payload = vec![0u8; len];
        self.stream.read_exact(&mut payload).await.map_err(|e| format!("{who} read: {e}"))?;
        Ok(Packet { seq: header[3], payload })
    }

    async fn write(&mut self, packet: &Packet, who: &str) -> Result<(), String> {
        self.stream.write_all(&packet.encode()).await.map_err(|e| format!("{who} write: {e}"))?;
        self.stream.flush().await.map_err(|e| format!("{who} flush: {e}"))
    }
}

/// The parts of a HandshakeV10 greeting Strait needs: where the capability flags are.
#[derive(Debug, PartialEq, Eq)]
pub struct Greeting {
    /// Capability flags (lower and upper halves combined).
    pub capabilities: u32,
    /// Offset of the lower two capability bytes in the payload.
    lower_caps_at: usize,
}

/// Reads a server greeting. An ERR packet (0xff) is returned as `Err` with its message.
pub fn parse_greeting(payload: &[u8]) -> Result<Greeting, String> {
    match payload.first() {
        Some(0x0a) => {}
        Some(0xff) => return Err(format!("the server refused the connection: {}", error_message(payload))),
        Some(v) => return Err(format!("unsupported protocol version {v} in the server greeting (expected 10)")),
        None => return Err("empty server greeting".into()),
    }
    let version_end = payload[1..].iter().position(|&b| b == 0).ok_or("server version not terminated")? + 1;
    let lower_caps_at = version_end + 1 + 4 + 8 + 1;
    let lower = payload.get(lower_caps_at..lower_caps_at + 2).ok_or("greeting truncated before its capability flags")?;
    let mut capabilities = u16::from_le_bytes([lower[0], lower[1]]) as u32;
    if let Some(upper) = payload.get(lower_caps_at + 5..lower_caps_at + 7) {
        capabilities |= (u16::from_le_bytes([upper[0], upper[1]]) as u32) << 16;
    }
    Ok(Greeting { capabilities, lower_caps_at })
}

/// The greeting with CLIENT_SSL set or cleared.
pub fn greeting_with_ssl(payload: &[u8], greeting: &Greeting, offer: bool) -> Vec<u8> {
    let mut out = payload.to_vec();
    let at = greeting.lower_caps_at;
    let mut lower = u16::from_le_bytes([out[at], out[at + 1]]);
    if offer {
        lower |= CLIENT_SSL as u16;
    } else {
        lower &= !(CLIENT_SSL as u16);
    }
    out[at..at + 2].copy_from_slice(&lower.to_le_bytes());
    out
}

/// Capability flags at the start of a client's SSL request or handshake response.
pub fn client_capabilities(payload: &[u8]) -> Result<u32, String> {
    let caps = payload.get(..4).ok_or("handshake response truncated")?;
    let caps = u32::from_le_bytes([caps[0], caps[1], caps[2], caps[3]]);
    if caps & CLIENT_PROTOCOL_41 == 0 {
        return Err("pre-4.1 handshake response: unsupported".into());
    }
    if payload.len() < SSL_REQUEST_LEN {
        return Err(format!("handshake response of {} bytes is shorter than the fixed {SSL_REQUEST_LEN}", payload.len()));
    }
    Ok(caps)
}

/// Whether a client's first packet is an SSL request (32 bytes, CLIENT_SSL set).
pub fn is_ssl_request(payload: &[u8], caps: u32) -> bool {
    caps & CLIENT_SSL != 0 && payload.len() == SSL_REQUEST_LEN
}

/// A copy of a handshake response (or SSL request) with CLIENT_SSL set or cleared;
/// callers have checked it with [`client_capabilities`] (a shorter payload is returned
/// unchanged).
pub fn with_ssl_flag(payload: &[u8], on: bool) -> Vec<u8> {
    let mut out = payload.to_vec();
    if out.len() < 4 {
        return out;
    }
    let mut caps = u32::from_le_bytes([out[0], out[1], out[2], out[3]]);
    if on {
        caps |= CLIENT_SSL;
    } else {
        caps &= !CLIENT_SSL;
    }
    out[..4].copy_from_slice(&caps.to_le_bytes());
    out
}

/// An ERR packet the client's library shows as a MySQL error.
pub fn error_packet(seq: u8, code: u16, message: &str) -> Packet {
    let mut payload = vec![0xff];
    payload.extend_from_slice(&code.to_le_bytes());
    payload.extend_from_slice(b"#HY000");
    payload.extend_from_slice(message.as_bytes());
    Packet { seq, payload }
}

fn error_message(payload: &[u8]) -> String {
    let text = payload.get(3..).unwrap_or_default();
    let text = text.strip_prefix(b"#").map_or(text, |t| t.get(5..).unwrap_or_default());
    String::from_utf8_lossy(text).into_owned()
}

/// Tells the client why, in MySQL's own terms, then ends with `error`.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(client: &mut PacketStream<S>, seq: u8, code: u16, error: ConnError) -> ConnError {
    let message = format!("strait: {error}");
    let _ = client.write(&error_packet(seq, code, &message), "client").await;
    error
}

/// Sends the server our SSL request and upgrades (when the route originates TLS), then
/// the client's handshake response with CLIENT_SSL matching; returns the server stream
/// and the sequence id the response went out with.
async fn upgrade_server(
    dial: &Dialer<'_>,
    mut server: PacketStream<Stream>,
    greeting_seq: u8,
    response: &Packet,
    addr: std::net::SocketAddr,
    sides: &mut Sides,
) -> Result<(PacketStream<Stream>, u8), ConnError> {
    let upstream_tls = dial.route.origination.is_some();
    let mut seq = greeting_seq.wrapping_add(1);
    if upstream_tls {
        let request = Packet { seq, payload: with_ssl_flag(&response.payload[..SSL_REQUEST_LEN], true) };
        server.write(&request, "server").await.map_err(ConnError::upstream)?;
        let PacketStream { stream, buffer } = server;
        let Either::Left(tcp) = stream else { unreachable!("the upstream starts plain") };
        if !buffer.is_empty() {
            return Err(ConnError::upstream("the server sent data after its greeting, before the TLS handshake"));
        }
        server = PacketStream::new(originate(dial, tcp, addr, sides).await?);
        seq = seq.wrapping_add(1);
    }
    let forwarded = Packet { seq, payload: with_ssl_flag(&response.payload, upstream_tls) };
    server.write(&forwarded, "server").await.map_err(ConnError::upstream)?;
    Ok((server, seq))
}

/// The MySQL connection phase through the gateway; see the module documentation.
pub async fn negotiate(downstream: Stream, dial: &Dialer<'_>, sides: &mut Sides) -> Result<(Stream, Stream), ConnError> {
    let route = dial.route;
    let client_mode = client_side(route, &downstream);
    let mut client = PacketStream::new(downstream);
    // Until the greeting is passed on, the client is silent: its close is seen at once.
    let (tcp, addr) = match unless_client_gone(&client.stream, connect(dial, sides)).await {
        Ok(connected) => connected,
        Err(ConnError::ClientGone) => return Err(ConnError::ClientGone),
        Err(outcome) => return Err(refuse(&mut client, 0, ER_HANDSHAKE_ERROR, outcome).await),
    };
    let mut server = PacketStream::new(Either::Left(tcp));
    let hello = match unless_client_gone(&client.stream, async { server.read("server").await.map_err(ConnError::upstream) }).await {
        Ok(hello) => hello,
        Err(ConnError::ClientGone) => return Err(ConnError::ClientGone),
        Err(outcome) => return Err(refuse(&mut client, 0, ER_HANDSHAKE_ERROR, outcome).await),
    };
    let greeting = match parse_greeting(&hello.payload) {
        Ok(g) => g,
        Err(e) => return Err(refuse(&mut client, 0, ER_HANDSHAKE_ERROR, ConnError::upstream(e)).await),
    };
    if route.origination.is_some() && greeting.capabilities & CLIENT_SSL == 0 {
        let outcome = ConnError::upstream("the server does not offer TLS (no CLIENT_SSL in its greeting): refusing to fall back to plaintext");
        return Err(refuse(&mut client, 0, ER_HANDSHAKE_ERROR, outcome).await);
    }
    let offer = client_mode != SslMode::Disabled;
    let greeting_out = Packet { seq: hello.seq, payload: greeting_with_ssl(&hello.payload, &greeting, offer) };
    client.write(&greeting_out, "client").await.map_err(ConnError::client)?;

    // The client's answer: an SSL request, or its handshake response in plaintext.
    let first = client.read_exact("client").await.map_err(ConnError::client)?;
    let caps = match client_capabilities(&first.payload) {
        Ok(caps) => caps,
        Err(e) => return Err(refuse(&mut client, first.seq.wrapping_add(1), ER_HANDSHAKE_ERROR, ConnError::client(e)).await),
    };
    let (mut client, response) = if is_ssl_request(&first.payload, caps) {
        if !offer {
            return Err(ConnError::client("the client sent an SSL request although TLS was not offered"));
        }
        // What follows in the socket is the client's ClientHello: the TLS handshake takes
        // it from there, and anything that is not TLS fails that handshake.
        let Either::Left(tcp) = client.stream else { unreachable!("TLS is only offered to plain clients") };
        let mut client = PacketStream::new(accept_client_tls(route, tcp, sides).await?);
        let response = client.read("client").await.map_err(ConnError::client)?;
        if let Err(e) = client_capabilities(&response.payload) {
            return Err(refuse(&mut client, response.seq.wrapping_add(1), ER_HANDSHAKE_ERROR, ConnError::client(e)).await);
        }
        (client, response)
    } else {
        if client_mode == SslMode::Required {
            return Err(refuse(&mut client, first.seq.wrapping_add(1), ER_SECURE_TRANSPORT_REQUIRED, ConnError::ClientNotTls).await);
        }
        (client, first)
    };
    if let Err(outcome) = authorize(route, sides) {
        return Err(refuse(&mut client, response.seq.wrapping_add(1), ER_HANDSHAKE_ERROR, outcome).await);
    }

    // Upstream: our own SSL request, then the client's response with CLIENT_SSL set.
    let reply_seq = response.seq.wrapping_add(1);
    let (mut server, upstream_seq) = match upgrade_server(dial, server, hello.seq, &response, addr, sides).await {
        Ok(upgraded) => upgraded,
        Err(outcome) => return Err(refuse(&mut client, reply_seq, ER_HANDSHAKE_ERROR, outcome).await),
    };

    // The rest of the connection phase, renumbered, until the server's OK or ERR.
    let shift = upstream_seq.wrapping_sub(response.seq);
    let mut next_to_client = reply_seq;
    loop {
        tokio::select! {
            packet = server.read("server") => {
                // TLS 1.3: a server that refuses our client certificate says so here,
                // after the handshake; the client gets it as a MySQL error.
                let mut packet = match packet {
                    Ok(packet) => packet,
                    Err(e) => {
                        let why = if sides.upstream_tls && e.contains("alert") {
                            format!("the server ended our TLS session ({e}): check that its client CA trusts this route's client certificate")
                        } else {
                            e
                        };
                        return Err(refuse(&mut client, next_to_client, ER_HANDSHAKE_ERROR, ConnError::upstream(why)).await);
                    }
                };
                packet.seq = packet.seq.wrapping_sub(shift);
                next_to_client = packet.seq.wrapping_add(1);
                client.write(&packet, "client").await.map_err(ConnError::client)?;
                match packet.payload.first() {
                    Some(0x00) => break,
                    Some(0xff) => return Err(ConnError::LoginRefused(error_message(&packet.payload))),
                    _ => {}
                }
            }
            packet = client.read("client") => {
                let mut packet = packet.map_err(ConnError::client)?;
                next_to_client = packet.seq.wrapping_add(1);
                packet.seq = packet.seq.wrapping_add(shift);
                server.write(&packet, "server").await.map_err(ConnError::upstream)?;
            }
        }
    }
    // Anything already buffered belongs to the command phase: pass it on as it is.
    let (mut down, client_rest) = (client.stream, client.buffer);
    let (mut up, server_rest) = (server.stream, server.buffer);
    if !client_rest.is_empty() {
        up.write_all(&client_rest).await.map_err(|e| ConnError::upstream(e.to_string()))?;
    }
    if !server_rest.is_empty() {
        down.write_all(&server_rest).await.map_err(|e| ConnError::client(e.to_string()))?;
    }
    Ok((down, up))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A MariaDB 10.11 greeting, as captured on the wire (payload only).
    fn mariadb_greeting() -> Vec<u8> {
        let mut p = vec![0x0a];
        p.extend_from_slice(b"5.5.5-10.11.6-MariaDB\0");
        p.extend_from_slice(&7u32.to_le_bytes());
        p.extend_from_slice(b"abcdefgh\0");
        p.extend_from_slice(&(0xf7feu16 | CLIENT_SSL as u16).to_le_bytes());
        p.push(8);
        p.extend_from_slice(&2u16.to_le_bytes());
        p.extend_from_slice(&0x81bfu16.to_le_bytes());
        p.push(21);
        p.extend_from_slice(&[0; 6]);
        p.extend_from_slice(&[0; 4]);
        p.extend_from_slice(b"ijklmnopqrst\0mysql_native_password\0");
        p
    }

    #[test]
    fn greeting_capabilities_are_found_and_ssl_toggled() {
        let payload = mariadb_greeting();
        let g = parse_greeting(&payload).unwrap();
        assert_ne!(g.capabilities & CLIENT_SSL, 0);
        assert_ne!(g.capabilities & (0x81bf << 16), 0);
        let stripped = greeting_with_ssl(&payload, &g, false);
        assert_eq!(parse_greeting(&stripped).unwrap().capabilities & CLIENT_SSL, 0);
        assert_eq!(stripped.len(), payload.len());
        assert_eq!(greeting_with_ssl(&stripped, &g, true), payload);
    }

    #[test]
    fn bad_greetings_are_errors_not_panics() {
        assert!(parse_greeting(&[]).is_err());
        assert!(parse_greeting(&[0x0a, b'x']).is_err());
        assert!(parse_greeting(&[0x0a, b'x', 0, 1, 2]).is_err());
        let mut err = vec![0xff, 0x6a, 0x04];
        err.extend_from_slice(b"#HY000Host is blocked");
        assert_eq!(parse_greeting(&err).unwrap_err(), "the server refused the connection: Host is blocked");
    }

    #[test]
    fn packets_split_and_cap() {
        let mut buf = Packet { seq: 3, payload: b"hello".to_vec() }.encode();
        buf.extend_from_slice(&[1, 0]);
        assert_eq!(parse_packet(&mut buf, 100).unwrap(), Some(Packet { seq: 3, payload: b"hello".to_vec() }));
        assert_eq!(parse_packet(&mut buf, 100).unwrap(), None);
        let mut huge = vec![0xff, 0xff, 0xff, 0];
        assert!(parse_packet(&mut huge, 1024).is_err());
    }

    #[test]
    fn ssl_request_is_recognised_and_flag_rewritten() {
        let mut request = (CLIENT_PROTOCOL_41 | CLIENT_SSL).to_le_bytes().to_vec();
        request.extend_from_slice(&[0; 28]);
        let caps = client_capabilities(&request).unwrap();
        assert!(is_ssl_request(&request, caps));
        let mut response = request.clone();
        response.extend_from_slice(b"app\0");
        assert!(!is_ssl_request(&response, caps));
        let plain = with_ssl_flag(&response, false);
        assert_eq!(client_capabilities(&plain).unwrap() & CLIENT_SSL, 0);
        assert!(client_capabilities(&[0; 31]).is_err());
    }
}
