//! Everything a connection can end with, typed until one classifier turns it into the
//! access-log `outcome` and `reason`, the metric labels and the log level.
//!
//! The pipeline's stages return [`ConnError`]; nothing downstream of them matches on
//! strings. [`ConnError::classify`] is the only place that decides what an error means
//! to an operator (as ztunnel's `proxy::Error` and linkerd2-proxy's error metrics do).

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use crate::identity::Identity;
use crate::resolve::ResolveError;

/// How a connection ended, as a stable class: the access log's `outcome`, the closed
/// metric's `outcome` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Both sides closed cleanly.
    Closed,
    /// Refused before a route was taken, or by the client-side protocol.
    Refused,
    /// The client's identity is not on the route's allow list.
    Denied,
    /// The route's upstream could not be reached, or refused us.
    UpstreamFailed,
    /// An error on either side after the relay started.
    RelayFailed,
    /// Still open when the drain ended, and cut.
    Drained,
    /// Closed idle to make room at the open-file budget or `max_connections`.
    Shed,
    /// Closed because its peer's certificate no longer verified after a reload changed
    /// the trust (a CRL, a CA bundle, a trust domain).
    Revoked,
}

impl Outcome {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Closed => "closed",
            Outcome::Refused => "refused",
            Outcome::Denied => "denied",
            Outcome::UpstreamFailed => "upstream_failed",
            Outcome::RelayFailed => "relay_failed",
            Outcome::Drained => "drained",
            Outcome::Revoked => "revoked",
            Outcome::Shed => "shed",
        }
    }
}

/// Why a connection was refused before it was relayed; a fixed set, so it can be a
/// metrics label (`strait_handshake_failures_total{reason}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// SNI names no route at this listener.
    UnknownSni,
    /// No SNI and no `default_route`.
    NoSni,
    /// The first bytes were not a TLS ClientHello.
    NotTls,
    /// Mutual TLS, and the client presented no certificate.
    NoClientCert,
    /// The client certificate does not chain to the listener's CA.
    UnknownCa,
    /// The client certificate is expired, not yet valid, revoked, lacks clientAuth, ...
    BadCertificate,
    /// The client offered only TLS versions below the listener's minimum.
    ProtocolVersion,
    /// The client offered nothing we accept (cipher suites, groups, signatures).
    Incompatible,
    /// The client did not finish its handshake (or send its first byte) in time.
    Timeout,
    /// A plaintext client where only TLS is accepted, or with no route for plaintext.
    Plaintext,
    /// The client closed before finishing its handshake.
    ClientClosed,
    /// The listener went away under the connection (reload).
    ListenerRemoved,
    /// The client's identity is not on the route's allow list.
    DeniedIdentity,
    /// The client's address is outside the route's `source_ranges`.
    DeniedSource,
    /// A PROXY protocol header was missing, invalid, or sent from an untrusted address.
    ProxyProtocol,
    /// An HBONE `CONNECT` whose `:authority` names no route at this listener.
    UnknownAuthority,
    /// The source address opened connections faster than `limits` allow.
    SourceRate,
    /// The source address has `limits.concurrent_per_source` connections open.
    SourceConcurrency,
    /// The client identity opened connections faster than `limits` allow.
    IdentityRate,
    /// The client identity has `limits.concurrent_per_identity` connections open.
    IdentityConcurrency,
    /// The source address sent PostgreSQL CancelRequests faster than `limits` allow.
    CancelRate,
    /// Anything else: I/O errors, alerts from the client, protocol violations, ...
    Other,
}

impl Refusal {
    /// Stable label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::UnknownSni => "unknown_sni",
            Refusal::NoSni => "no_sni",
            Refusal::NotTls => "not_tls",
            Refusal::NoClientCert => "no_client_cert",
            Refusal::UnknownCa => "unknown_ca",
            Refusal::BadCertificate => "bad_certificate",
            Refusal::ProtocolVersion => "protocol_version",
            Refusal::Incompatible => "incompatible",
            Refusal::Timeout => "timeout",
            Refusal::Plaintext => "plaintext",
            Refusal::ClientClosed => "client_closed",
            Refusal::ListenerRemoved => "listener_removed",
            Refusal::DeniedIdentity => "denied_identity",
            Refusal::DeniedSource => "denied_source",
            Refusal::ProxyProtocol => "proxy_protocol",
            Refusal::UnknownAuthority => "unknown_authority",
            Refusal::SourceRate => "source_rate_limited",
            Refusal::SourceConcurrency => "source_concurrency_limited",
            Refusal::IdentityRate => "identity_rate_limited",
            Refusal::IdentityConcurrency => "identity_concurrency_limited",
            Refusal::CancelRate => "cancel_rate_limited",
            Refusal::Other => "other",
        }
    }

    /// Classifies a failed server handshake from the error tokio-rustls returned.
    pub fn of_handshake(error: &std::io::Error) -> Refusal {
        use rustls::{CertificateError as C, Error as E, PeerIncompatible as P};
        let Some(tls) = error.get_ref().and_then(|e| e.downcast_ref::<E>()) else {
            return match error.kind() {
                std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset => Refusal::ClientClosed,
                _ => Refusal::Other,
            };
        };
        match tls {
            E::NoCertificatesPresented => Refusal::NoClientCert,
            E::InvalidCertificate(C::UnknownIssuer) => Refusal::UnknownCa,
            E::InvalidCertificate(C::Other(other)) => match other.0.downcast_ref::<crate::trust::TrustRefusal>() {
                Some(trust) if trust.is_unknown_ca() => Refusal::UnknownCa,
                _ => Refusal::BadCertificate,
            },
            E::InvalidCertificate(_) => Refusal::BadCertificate,
            // TLS 1.0/1.1 ClientHellos lack signature_algorithms (added in 1.2): that is
            // how an old version shows up before any version negotiation.
            E::PeerIncompatible(
                P::Tls12NotOffered | P::Tls12NotOfferedOrEnabled | P::SupportedVersionsExtensionRequired | P::SignatureAlgorithmsExtensionRequired,
            ) => Refusal::ProtocolVersion,
            E::PeerIncompatible(_) => Refusal::Incompatible,
            E::InvalidMessage(_) => Refusal::NotTls,
            _ => Refusal::Other,
        }
    }
}

/// Which side of the relay an I/O error happened on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The client.
    Downstream,
    /// The route's upstream.
    Upstream,
}

impl Side {
    /// The word the access log uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Side::Downstream => "downstream",
            Side::Upstream => "upstream",
        }
    }
}

/// What the relay was doing when an I/O error struck.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Reading.
    Read,
    /// Writing.
    Write,
    /// Flushing what was written.
    Flush,
    /// Passing on the end of stream (TLS close_notify, TCP FIN).
    Shutdown,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Read => "read",
            Op::Write => "write",
            Op::Flush => "flush",
            Op::Shutdown => "shutdown",
        }
    }
}

/// Why a route's upstream could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// DNS gave nothing to connect to.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// Every address refused or timed out.
    #[error("no upstream address accepted the connection: {}", ConnectFailures(.0))]
    Connect(Vec<ConnectFailure>),
    /// The TCP connection was made but the origination handshake failed.
    #[error("TLS origination to {addr} (SNI {sni}) failed: {reason}")]
    Tls {
        /// The address connected to.
        addr: SocketAddr,
        /// The name sent and verified.
        sni: String,
        /// What went wrong, in words (from the rustls error).
        reason: String,
    },
    /// The upstream broke its database protocol before the relay started.
    #[error("{0}")]
    Protocol(String),
    /// An HBONE route's stream could not be opened, or its `CONNECT` was refused.
    #[error("HBONE CONNECT {authority} via {addr} failed: {reason}")]
    Hbone {
        /// The pool connection's endpoint.
        addr: SocketAddr,
        /// The `:authority` asked for.
        authority: String,
        /// What went wrong, in words (the peer's status, or h2's error).
        reason: String,
    },
}

impl UpstreamError {
    /// Whether DNS is why (counted in `strait_dns_resolution_failures_total` too).
    pub fn is_dns(&self) -> bool {
        matches!(self, UpstreamError::Resolve(_))
    }
}

/// One address that did not accept a connection.
#[derive(Debug)]
pub struct ConnectFailure {
    /// The address tried.
    pub addr: SocketAddr,
    /// Refused, unreachable, ... or `None` for a timeout.
    pub error: Option<std::io::Error>,
    /// The connect timeout, for the message.
    pub timeout: Duration,
}

struct ConnectFailures<'a>(&'a [ConnectFailure]);

impl fmt::Display for ConnectFailures<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, failure) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            match &failure.error {
                Some(e) => write!(f, "{}: {e}", failure.addr)?,
                None => write!(f, "{}: timed out after {:?}", failure.addr, failure.timeout)?,
            }
        }
        Ok(())
    }
}

/// Everything that can end a connection other than a clean close.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// The listener was removed by a reload between accept and routing.
    #[error("listener was removed")]
    ListenerRemoved,
    /// A permissive listener waited for the first byte in vain.
    #[error("no first byte within {0:?}")]
    NoFirstByte(Duration),
    /// The client closed (or failed) before sending anything.
    #[error("closed before sending anything")]
    ClosedBeforeFirstByte,
    /// Reading the first byte failed.
    #[error("read failed before the first byte: {0}")]
    FirstByte(std::io::Error),
    /// A plaintext client at a listener with no route for plaintext.
    #[error("plaintext client and no default_route")]
    PlaintextWithoutRoute,
    /// The ClientHello could not be read.
    #[error("bad ClientHello: {0}")]
    ClientHello(std::io::Error),
    /// The client's SNI names no route here.
    #[error("unknown SNI {0:?}")]
    UnknownSni(String),
    /// No SNI and no default route.
    #[error("no SNI and the listener has no default_route")]
    NoSni,
    /// The client's TLS handshake failed.
    #[error("TLS handshake failed: {}", crate::tls::describe(.0))]
    Handshake(std::io::Error),
    /// The client's TLS handshake inside a database protocol failed.
    #[error("client TLS handshake (inside {protocol}) failed: {source}")]
    ProtocolHandshake {
        /// `mysql` or `postgres`.
        protocol: &'static str,
        /// What rustls or the socket said.
        source: std::io::Error,
    },
    /// The client did not finish its handshake in time.
    #[error("TLS handshake not completed within {0:?}")]
    HandshakeTimeout(Duration),
    /// A database negotiation did not finish in time.
    #[error("{protocol} negotiation not finished within {limit:?}")]
    NegotiationTimeout {
        /// `mysql` or `postgres`.
        protocol: &'static str,
        /// The listener's handshake timeout.
        limit: Duration,
    },
    /// A database client stayed plaintext where the route requires TLS.
    #[error("the client did not request TLS, which this route requires")]
    ClientNotTls,
    /// The client broke its database protocol (or closed) before the relay started.
    #[error("{detail}")]
    ClientProtocol {
        /// The fixed reason label.
        refusal: Refusal,
        /// What it did, in words.
        detail: String,
    },
    /// The server refused the client's login (passed on to the client as it is).
    #[error("the server refused the login: {0}")]
    LoginRefused(String),
    /// The client's identity is not on the route's allow list.
    #[error("{} is not on route {route:?}'s allow list", Who(.identity))]
    Denied {
        /// Who the client is, if it presented a certificate.
        identity: Option<Identity>,
        /// The route it asked for.
        route: String,
    },
    /// The client's address is outside the route's `source_ranges`.
    #[error("client address {client} is outside route {route:?}'s source_ranges")]
    SourceDenied {
        /// The client's address (the PROXY header's source, where one was accepted).
        client: std::net::IpAddr,
        /// The route it asked for.
        route: String,
    },
    /// The listener's PROXY protocol header was refused.
    #[error(transparent)]
    ProxyProtocol(#[from] crate::proxy_protocol::ProxyError),
    /// The upstream could not be reached or refused us.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// A side failed while the relay ran.
    #[error("{} {}: {source}", side.as_str(), op.as_str())]
    Relay {
        /// Which side.
        side: Side,
        /// Doing what.
        op: Op,
        /// The socket's or TLS's error.
        source: std::io::Error,
    },
    /// No byte moved either way for the route's idle timeout.
    #[error("idle timeout: no bytes either way for {0:?}")]
    Idle(Duration),
    /// Still open when the drain ended.
    #[error("cut by the drain: still open when drain_timeout ({0:?}) ran out")]
    Drained(Duration),
    /// The client closed while its upstream was still being set up; the set-up was
    /// abandoned then, not run on to its timeout.
    #[error("the client closed while the upstream was being set up: set-up abandoned")]
    ClientGone,
    /// An HBONE `CONNECT` asked for an authority no route at this listener serves.
    #[error("unknown HBONE authority {0:?}")]
    UnknownAuthority(String),
    /// An HBONE request that is not a `CONNECT`, or an HTTP/2 handshake that failed.
    #[error("{0}")]
    HboneRequest(String),
    /// The HTTP/2 connection of an HBONE stream failed.
    #[error("HBONE connection: {0}")]
    Hbone(h2::Error),
    /// Relaying, idle, and closed to make room under overload.
    #[error("shed under overload ({why}): idle for {idle:?}")]
    Shed {
        /// How long it had been idle.
        idle: Duration,
        /// What pressure shed it.
        why: &'static str,
    },
    /// Refused by the listener's abuse limits.
    #[error("refused by the listener's limits: {}", .0.as_str())]
    Limited(Refusal),
    /// Closed after a reload changed the trust: the peer's chain no longer verifies.
    #[error("{0}")]
    TrustChanged(String),
    /// The process stopped under the connection (its task was dropped unfinished).
    #[error("the gateway stopped before the connection ended")]
    Abandoned,
}

struct Who<'a>(&'a Option<Identity>);

impl fmt::Display for Who<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(id) => write!(f, "identity {id}"),
            None => f.write_str("a client without a certificate"),
        }
    }
}

/// What an error means to an operator: decided once, in [`ConnError::classify`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Class {
    /// The outcome class.
    pub outcome: Outcome,
    /// The handshake-failure label, for refusals and denials.
    pub refusal: Option<Refusal>,
    /// The access-log line's level: `WARN` for what an operator may need to act on,
    /// `INFO` for the normal ways a connection ends (a peer reset, an idle timeout).
    pub level: tracing::Level,
}

impl ConnError {
    /// A client-side protocol violation.
    pub fn client(detail: impl Into<String>) -> ConnError {
        ConnError::ClientProtocol { refusal: Refusal::Other, detail: detail.into() }
    }

    /// A client that closed or broke off reading a negotiation message.
    pub fn client_closed(detail: impl Into<String>) -> ConnError {
        ConnError::ClientProtocol { refusal: Refusal::ClientClosed, detail: detail.into() }
    }

    /// An upstream that broke its protocol during negotiation.
    pub fn upstream(detail: impl Into<String>) -> ConnError {
        ConnError::Upstream(UpstreamError::Protocol(detail.into()))
    }

    /// The one classification of every error.
    pub fn classify(&self) -> Class {
        use tracing::Level;
        let refused = |refusal| Class { outcome: Outcome::Refused, refusal: Some(refusal), level: Level::WARN };
        match self {
            ConnError::ListenerRemoved => refused(Refusal::ListenerRemoved),
            // A client giving up (a flood ending, an impatient client) is no operator's
            // problem.
            ConnError::ClientGone => Class { outcome: Outcome::Refused, refusal: Some(Refusal::ClientClosed), level: Level::INFO },
            ConnError::NoFirstByte(_) | ConnError::HandshakeTimeout(_) | ConnError::NegotiationTimeout { .. } => refused(Refusal::Timeout),
            ConnError::ClosedBeforeFirstByte | ConnError::FirstByte(_) | ConnError::LoginRefused(_) => refused(Refusal::Other),
            ConnError::PlaintextWithoutRoute | ConnError::ClientNotTls => refused(Refusal::Plaintext),
            ConnError::ClientHello(e) | ConnError::Handshake(e) | ConnError::ProtocolHandshake { source: e, .. } => refused(Refusal::of_handshake(e)),
            ConnError::UnknownSni(_) => refused(Refusal::UnknownSni),
            ConnError::NoSni => refused(Refusal::NoSni),
            ConnError::UnknownAuthority(_) => refused(Refusal::UnknownAuthority),
            ConnError::HboneRequest(_) => refused(Refusal::Other),
            ConnError::Hbone(e) => {
                Class { outcome: Outcome::RelayFailed, refusal: None, level: if e.is_io() || e.is_go_away() { Level::INFO } else { Level::WARN } }
            }
            ConnError::ClientProtocol { refusal, .. } => refused(*refusal),
            ConnError::Denied { .. } => Class { outcome: Outcome::Denied, refusal: Some(Refusal::DeniedIdentity), level: Level::WARN },
            ConnError::SourceDenied { .. } => Class { outcome: Outcome::Denied, refusal: Some(Refusal::DeniedSource), level: Level::WARN },
            ConnError::ProxyProtocol(_) => refused(Refusal::ProxyProtocol),
            ConnError::Upstream(_) => Class { outcome: Outcome::UpstreamFailed, refusal: None, level: Level::WARN },
            ConnError::Relay { source, .. } => {
                let normal = matches!(source.kind(), std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe);
                Class { outcome: Outcome::RelayFailed, refusal: None, level: if normal { Level::INFO } else { Level::WARN } }
            }
            ConnError::Idle(_) => Class { outcome: Outcome::RelayFailed, refusal: None, level: Level::INFO },
            ConnError::Drained(_) | ConnError::Abandoned => Class { outcome: Outcome::Drained, refusal: None, level: Level::WARN },
            ConnError::Limited(refusal) => refused(*refusal),
            ConnError::Shed { .. } => Class { outcome: Outcome::Shed, refusal: None, level: Level::INFO },
            ConnError::TrustChanged(_) => Class { outcome: Outcome::Revoked, refusal: None, level: Level::WARN },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Error, ErrorKind};

    fn tls_error(e: rustls::Error) -> Error {
        Error::new(ErrorKind::InvalidData, e)
    }

    #[test]
    fn handshake_failures_get_their_label() {
        use rustls::{CertificateError as C, Error as E, PeerIncompatible as P};
        let cases = [
            (tls_error(E::NoCertificatesPresented), Refusal::NoClientCert),
            (tls_error(E::InvalidCertificate(C::UnknownIssuer)), Refusal::UnknownCa),
            (tls_error(E::InvalidCertificate(C::Expired)), Refusal::BadCertificate),
            (tls_error(E::InvalidCertificate(C::Revoked)), Refusal::BadCertificate),
            (tls_error(E::PeerIncompatible(P::SignatureAlgorithmsExtensionRequired)), Refusal::ProtocolVersion),
            (tls_error(E::PeerIncompatible(P::NoCipherSuitesInCommon)), Refusal::Incompatible),
            (tls_error(E::InvalidMessage(rustls::InvalidMessage::MessageTooLarge)), Refusal::NotTls),
            (Error::from(ErrorKind::UnexpectedEof), Refusal::ClientClosed),
            (Error::from(ErrorKind::ConnectionReset), Refusal::ClientClosed),
            (Error::from(ErrorKind::PermissionDenied), Refusal::Other),
        ];
        for (error, label) in cases {
            let shown = error.to_string();
            assert_eq!(ConnError::Handshake(error).classify().refusal, Some(label), "{shown}");
        }
    }

    #[test]
    fn every_error_has_one_class() {
        let denied = ConnError::Denied { identity: None, route: "db".into() };
        assert_eq!(denied.classify(), Class { outcome: Outcome::Denied, refusal: Some(Refusal::DeniedIdentity), level: tracing::Level::WARN });
        assert_eq!(denied.to_string(), "a client without a certificate is not on route \"db\"'s allow list");
        let dns = ConnError::from(UpstreamError::Resolve(ResolveError::Lookup { host: "x".into(), reason: "NXDOMAIN".into() }));
        assert_eq!(dns.classify().outcome, Outcome::UpstreamFailed);
        assert_eq!(ConnError::Drained(Duration::from_secs(1)).classify().outcome, Outcome::Drained);
        assert_eq!(ConnError::ClientNotTls.classify().refusal, Some(Refusal::Plaintext));
        let gone = ConnError::ClientGone.classify();
        assert_eq!((gone.outcome, gone.refusal, gone.level), (Outcome::Refused, Some(Refusal::ClientClosed), tracing::Level::INFO));
    }

    #[test]
    fn a_peer_reset_is_a_normal_end_but_a_decrypt_error_is_not() {
        let reset = ConnError::Relay { side: Side::Upstream, op: Op::Read, source: Error::from(ErrorKind::ConnectionReset) };
        assert_eq!(reset.classify().level, tracing::Level::INFO);
        let bad = ConnError::Relay { side: Side::Downstream, op: Op::Read, source: tls_error(rustls::Error::DecryptError) };
        assert_eq!(bad.classify().level, tracing::Level::WARN);
        assert!(bad.to_string().starts_with("downstream read: cannot decrypt"), "{bad}");
    }

    #[test]
    fn connect_failures_list_every_address() {
        let e = UpstreamError::Connect(vec![
            ConnectFailure { addr: "127.0.0.1:1".parse().unwrap(), error: Some(Error::from(ErrorKind::ConnectionRefused)), timeout: Duration::from_secs(1) },
            ConnectFailure { addr: "127.0.0.2:1".parse().unwrap(), error: None, timeout: Duration::from_secs(2) },
        ]);
        let shown = e.to_string();
        assert!(shown.starts_with("no upstream address accepted the connection: 127.0.0.1:1: "), "{shown}");
        assert!(shown.ends_with("; 127.0.0.2:1: timed out after 2s"), "{shown}");
    }
}
