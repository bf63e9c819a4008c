//! The per-connection access log: one line at close, the per-hop record an operator
//! follows a stream by (Istio's TCP access log, field for field where they overlap).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::identity::Identity;

/// How a connection ended; the class is stable (for metrics), the text is for people.
#[derive(Debug)]
pub enum Outcome {
    /// Both sides closed cleanly.
    Closed,
    /// Refused before a route was taken: handshake failure, unknown SNI, timeout.
    Refused(String),
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
            Outcome::Refused(_) => "refused",
            Outcome::UpstreamFailed(_) => "upstream_failed",
            Outcome::RelayFailed(_) => "relay_failed",
        }
    }

    fn reason(&self) -> &str {
        match self {
            Outcome::Closed => "eof",
            Outcome::Refused(r) | Outcome::UpstreamFailed(r) | Outcome::RelayFailed(r) => r,
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
    /// Writes the line: `info` for a clean close, `warn` for anything else.
    pub fn emit(&self, outcome: Outcome) {
        let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let start = humantime::format_rfc3339_millis(self.start).to_string();
        let route = dash(self.route.clone());
        let upstream = dash(self.upstream.map(|a| a.to_string()));
        let sni = dash(self.sni.clone());
        let identity = dash(self.identity.as_ref().map(|i| i.to_string()));
        let duration_ms = self.duration.as_millis() as u64;
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
