//! The per-connection access log: one line at close, the per-hop record an operator
//! follows a stream by (Istio's TCP access log, field for field where they overlap).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::identity::Identity;
use crate::metrics::{self, ConnectionLabels};

/// Why a connection was refused before a route was taken; a fixed set, so it can be a
/// metrics label.
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
    /// Anything else: I/O errors, alerts from the client, ...
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

/// How a connection ended; the class is stable (for metrics), the text is for people.
#[derive(Debug)]
pub enum Outcome {
    /// Both sides closed cleanly.
    Closed,
    /// Refused before a route was taken: handshake failure, unknown SNI, timeout.
    Refused(Refusal, String),
    /// The client's identity is not on the route's allow list.
    Denied(String),
    /// The route's upstream could not be reached or refused origination.
    UpstreamFailed(String),
    /// An error on either side after the relay started.
    RelayFailed(String),
}

impl Outcome {
    /// Short stable name, logged as `outcome`.
    pub fn class(&self) -> &'static str {
        match self {
            Outcome::Closed => "closed",
            Outcome::Refused(..) => "refused",
            Outcome::Denied(_) => "denied",
            Outcome::UpstreamFailed(_) => "upstream_failed",
            Outcome::RelayFailed(_) => "relay_failed",
        }
    }

    /// The words behind the class.
    pub fn reason(&self) -> &str {
        match self {
            Outcome::Closed => "eof",
            Outcome::Refused(_, r) | Outcome::Denied(r) | Outcome::UpstreamFailed(r) | Outcome::RelayFailed(r) => r,
        }
    }
}

/// What is known about a connection; filled in as it progresses.
#[derive(Debug)]
pub struct AccessLog {
    /// When it was accepted.
    pub start: SystemTime,
    /// Listener name.
    pub listener: Arc<str>,
    /// `outbound` (egress) or `inbound` (ingress), as Istio labels it.
    pub direction: &'static str,
    /// Whether the client side completed mutual TLS.
    pub mtls: bool,
    /// `tcp`, `mysql` or `postgres`.
    pub protocol: &'static str,
    /// Whether the client side is TLS (from the first byte, or inside the protocol).
    pub downstream_tls: bool,
    /// Whether the upstream side is TLS.
    pub upstream_tls: bool,
    /// Route name, once chosen.
    pub route: Option<String>,
    /// The client's address.
    pub downstream: SocketAddr,
    /// The upstream address connected to, once connected.
    pub upstream: Option<SocketAddr>,
    /// SNI the client sent, at TLS listeners.
    pub sni: Option<String>,
    /// The client certificate's identity, in mutual TLS.
    pub identity: Option<Identity>,
    /// Bytes from the client (Istio's `bytes_received`).
    pub bytes_received: u64,
    /// Bytes to the client (Istio's `bytes_sent`).
    pub bytes_sent: u64,
    /// Time from accept to close.
    pub duration: Duration,
}

impl Default for AccessLog {
    fn default() -> Self {
        AccessLog {
            start: SystemTime::UNIX_EPOCH,
            listener: Arc::from(""),
            direction: "outbound",
            mtls: false,
            protocol: "tcp",
            downstream_tls: false,
            upstream_tls: false,
            route: None,
            downstream: SocketAddr::from(([0, 0, 0, 0], 0)),
            upstream: None,
            sni: None,
            identity: None,
            bytes_received: 0,
            bytes_sent: 0,
            duration: Duration::ZERO,
        }
    }
}

impl AccessLog {
    /// Which sides are TLS: `none`, `downstream`, `upstream` or `both`.
    pub fn tls_sides(&self) -> &'static str {
        match (self.downstream_tls, self.upstream_tls) {
            (true, true) => "both",
            (true, false) => "downstream",
            (false, true) => "upstream",
            (false, false) => "none",
        }
    }

    /// Labels for the connection metrics of this connection.
    pub fn labels(&self) -> ConnectionLabels {
        ConnectionLabels {
            listener: self.listener.to_string(),
            route: self.route.clone().unwrap_or_default(),
            direction: self.direction,
            mtls: if self.mtls { "true" } else { "false" },
        }
    }

    /// Counts the closed connection in the metrics.
    fn count(&self, outcome: &Outcome) {
        let refusal = match outcome {
            Outcome::Refused(reason, _) => Some(reason.as_str()),
            Outcome::Denied(_) => Some("denied_identity"),
            _ => None,
        };
        metrics::get().connection_closed(&self.labels(), outcome.class(), self.bytes_sent, self.bytes_received, refusal);
    }

    /// Writes the line (`info` for a clean close, `warn` for anything else) and counts
    /// the connection in the metrics.
    pub fn emit(&self, outcome: Outcome) {
        self.count(&outcome);
        crate::otel::record(self, &outcome, SystemTime::now());
        let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let start = humantime::format_rfc3339_millis(self.start).to_string();
        let route = dash(self.route.clone());
        let upstream = dash(self.upstream.map(|a| a.to_string()));
        let sni = dash(self.sni.clone());
        let identity = dash(self.identity.as_ref().map(|i| i.to_string()));
        let duration_ms = self.duration.as_millis() as u64;
        let tls_sides = self.tls_sides();
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(
                    target: "strait::access",
                    start = %start,
                    listener = %self.listener,
                    route = %route,
                    downstream = %self.downstream,
                    upstream = %upstream,
                    sni = %sni,
                    identity = %identity,
                    protocol = %self.protocol,
                    tls = %tls_sides,
                    bytes_received = self.bytes_received,
                    bytes_sent = self.bytes_sent,
                    duration_ms,
                    outcome = %outcome.class(),
                    reason = %outcome.reason(),
                )
            };
        }
        match outcome {
            Outcome::Closed => line!(info),
            _ => line!(warn),
        }
    }
}
