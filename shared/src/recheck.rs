//! Re-checking live connections when the trust changes.
//!
//! A reload that changes a CRL, a CA bundle or a trust domain only affects new
//! handshakes by itself; a database session accepted under the old trust could stay
//! open for hours. So every open TLS connection registers what is needed to verify its
//! peer again — the peer's chain and where its verifier is found (its listener and SNI,
//! or its route's origination) — in the gateway's [`LiveConnections`]. After a reload
//! whose trust files changed, each chain is verified under the *new* table's verifier;
//! a connection that fails is closed through its own [`Cut`], with the reason in its
//! access-log record. A registration is removed when its connection ends, so the
//! registry holds exactly the open TLS connections.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rustls::CertificateError;
use rustls_pki_types::{CertificateDer, UnixTime};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::route::{Route, RouteTable, Routing};

/// Which peer of a connection a chain belongs to, and so which verifier judges it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// The client at a TLS listener, judged by the verifier of the SNI entry it took.
    Client {
        /// The SNI it sent (`None`: the listener's default route).
        sni: Option<String>,
    },
    /// A database client that upgraded to TLS inside its protocol, judged by the
    /// route's in-protocol client verifier.
    ProtocolClient {
        /// The route's name.
        route: String,
    },
    /// The server of a route's origination, judged by the route's server verifier.
    Server {
        /// The route's name.
        route: String,
    },
}

/// Why a connection was closed from outside.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CutReason {
    /// Its peer's chain no longer verifies after a trust change.
    Trust(String),
    /// Shed idle under overload ([`crate::overload`]): idle this long, and why.
    Overload {
        /// How long it had been idle.
        idle: std::time::Duration,
        /// What pressure shed it.
        why: &'static str,
    },
}

impl CutReason {
    /// The error the connection's record ends with.
    pub fn into_error(self) -> crate::error::ConnError {
        match self {
            CutReason::Trust(reason) => crate::error::ConnError::TrustChanged(reason),
            CutReason::Overload { idle, why } => crate::error::ConnError::Shed { idle, why },
        }
    }
}

/// Closes one connection from outside, with a reason; the first reason wins.
#[derive(Debug, Default)]
pub struct Cut {
    token: CancellationToken,
    reason: OnceLock<CutReason>,
}

impl Cut {
    /// Resolves, with the reason, once the connection is to be closed.
    pub async fn cut(&self) -> CutReason {
        self.token.cancelled().await;
        self.reason.get().cloned().unwrap_or(CutReason::Trust(String::new()))
    }

    /// Whether the connection was already asked to close (it may still be closing).
    pub fn is_closed(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Asks the connection to close; `false` if it was already asked.
    pub fn close(&self, reason: CutReason) -> bool {
        let first = self.reason.set(reason).is_ok();
        self.token.cancel();
        first
    }
}

struct Live {
    listener: Arc<str>,
    peer: Peer,
    chain: Vec<CertificateDer<'static>>,
    cut: Arc<Cut>,
}

/// The open TLS connections of a gateway, with what re-verifies each one's peer.
#[derive(Default)]
pub struct LiveConnections {
    next: AtomicU64,
    entries: Mutex<HashMap<u64, Arc<Live>>>,
}

/// Keeps one connection's peer registered; removes it when dropped (the connection
/// ended).
pub struct Registration {
    id: u64,
    registry: Arc<LiveConnections>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.id);
    }
}

/// One connection closed by a re-check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closed {
    /// Its listener.
    pub listener: Arc<str>,
    /// Why, as its access-log record says.
    pub reason: String,
}

impl LiveConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Live>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers a peer chain verified at handshake; `cut` closes the connection.
    /// An empty chain (no certificate) is not registered.
    pub fn register(self: &Arc<Self>, listener: Arc<str>, peer: Peer, chain: &[CertificateDer<'_>], cut: Arc<Cut>) -> Option<Registration> {
        if chain.is_empty() {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let chain = chain.iter().map(|c| c.clone().into_owned()).collect();
        self.lock().insert(id, Arc::new(Live { listener, peer, chain, cut }));
        Some(Registration { id, registry: self.clone() })
    }

    /// Registered connections now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Verifies every registered peer under `table` and closes those that fail, at
    /// listeners with `recheck_on_trust_change`. A peer whose listener, SNI entry or
    /// route is gone from `table`, or that `table` no longer asks a certificate of, is
    /// left alone (a removed listener drains its connections by itself). CPU-bound:
    /// call it off the async workers.
    pub fn recheck(&self, table: &RouteTable) -> Vec<Closed> {
        // Verify outside the lock: connections keep opening and closing meanwhile.
        let live: Vec<Arc<Live>> = self.lock().values().cloned().collect();
        let now = UnixTime::now();
        let mut closed = Vec::new();
        for conn in live {
            let Some(plan) = table.listener(&conn.listener) else { continue };
            if !plan.recheck_on_trust_change {
                continue;
            }
            let (end_entity, intermediates) = (&conn.chain[0], &conn.chain[1..]);
            let (side, verdict) = match &conn.peer {
                Peer::Client { sni } => {
                    let verifier = match &plan.routing {
                        Routing::Tls(routing) => routing.select(sni.as_deref()).and_then(|e| e.verifier.as_ref()),
                        Routing::Hbone(routing) => routing.verifier.as_ref(),
                        Routing::Plain(_) => None,
                    };
                    let Some(verifier) = verifier else { continue };
                    ("client", verifier.verify_client_cert(end_entity, intermediates, now).map(|_| ()))
                }
                Peer::ProtocolClient { route } => {
                    let Some(verifier) = route_named(table, route).and_then(|r| r.downstream_ssl.verifier.as_ref()) else { continue };
                    ("client", verifier.verify_client_cert(end_entity, intermediates, now).map(|_| ()))
                }
                Peer::Server { route } => {
                    let Some(origination) = route_named(table, route).and_then(|r| r.origination.as_ref()) else { continue };
                    let verdict = origination.verifier.verify_server_cert(end_entity, intermediates, &origination.server_name, &[], now);
                    ("server", verdict.map(|_| ()))
                }
            };
            if let Err(e) = verdict {
                let reason = reason(side, &e);
                conn.cut.close(CutReason::Trust(reason.clone()));
                closed.push(Closed { listener: conn.listener.clone(), reason });
            }
        }
        closed
    }
}

fn route_named<'t>(table: &'t RouteTable, name: &str) -> Option<&'t Arc<Route>> {
    table.listeners.iter().find_map(|plan| match &plan.routing {
        Routing::Plain(route) => (route.name == name).then_some(route),
        Routing::Tls(tls) => tls.by_sni.values().chain(tls.wildcards.iter().map(|(_, e)| e)).chain(&tls.default).map(|e| &e.route).find(|r| r.name == name),
        Routing::Hbone(hbone) => hbone.by_host.values().find(|r| r.name == name),
    })
}

/// Why a chain that verified at handshake no longer does, in an operator's words.
fn reason(side: &str, error: &rustls::Error) -> String {
    let rustls::Error::InvalidCertificate(cert) = error else {
        return format!("{side} certificate no longer verifies after the reload: {error}");
    };
    match cert {
        CertificateError::Revoked => format!("{side} certificate revoked by the reloaded CRL"),
        CertificateError::UnknownIssuer => format!("{side} certificate no longer chains to a trusted CA after the reload (its CA left the bundle)"),
        CertificateError::UnknownRevocationStatus => {
            format!("{side} certificate's revocation status is unknown after the reload: the CRL file has no CRL for its issuer")
        }
        CertificateError::Other(other) => format!("{side} certificate no longer trusted after the reload: {}", other.0),
        other => format!("{side} certificate no longer verifies after the reload: {other:?}"),
    }
}

/// A digest of every file that decides whom the gateway trusts — CA bundles, trust
/// domains' bundles, CRLs — so a reload re-checks live connections only when one of
/// them changed, not on every route edit.
pub fn trust_fingerprint(config: &Config) -> u64 {
    let mut files = Vec::new();
    for tls in config.listeners.iter().filter_map(|l| l.get_ref().tls()) {
        files.extend(tls.ca.iter().chain(&tls.ca_crl).chain(tls.trust_domains.values()).cloned());
    }
    for route in config.routes.iter().map(|r| r.get_ref()) {
        if let Some(up) = &route.upstream_tls {
            files.extend(up.ca.iter().chain(up.trust_domains.values()).cloned());
        }
        if let Some(down) = &route.downstream_tls {
            files.extend(down.ca.iter().chain(&down.ca_crl).cloned());
        }
    }
    files.sort();
    files.dedup();
    crate::watch::fingerprint(&files)
}
