//! The accept loop of one listener, with its connection limit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Role;
use crate::connection::{handle, Context};
use crate::error::{Outcome, Refusal};
use crate::limits::ListenerLimits;
use crate::metrics::{ClosedLabels, RefusalLabels};

/// How often, at most, a listener logs that it is shedding connections.
const SHED_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// One listener's accept loop and what it needs.
pub struct AcceptLoop {
    /// The bound socket.
    pub socket: TcpListener,
    /// Listener name, to find its plan in each snapshot.
    pub name: Arc<str>,
    /// Shared connection state.
    pub context: Arc<Context>,
    /// Open connections against `max_connections`.
    pub limit: Arc<ConnectionLimit>,
    /// Stops this loop (and every loop on shutdown).
    pub stop: CancellationToken,
    /// Where connection tasks go, so shutdown can wait for them.
    pub tracker: TaskTracker,
    /// Per-source (and per-identity) abuse limits, updated in place on reload.
    pub limits: Arc<ListenerLimits>,
}

impl AcceptLoop {
    /// Accepts until stopped. Beyond the connection limit a new connection is closed at
    /// once (never queued), and the shedding is logged at most once a second.
    pub async fn run(self) {
        let mut shed = 0u64;
        let mut last_shed_log: Option<Instant> = None;
        loop {
            let accepted = tokio::select! {
                _ = self.stop.cancelled() => return,
                accepted = self.socket.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(listener = %self.name, error = %e, "accept failed; retrying in 100ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(permit) = self.limit.try_acquire() else {
                drop(tcp);
                shed += 1;
                self.context.recorder.metrics.shed.add(&crate::metrics::ListenerLabels { listener: self.name.to_string() }, 1);
                if last_shed_log.is_none_or(|t| t.elapsed() >= SHED_LOG_INTERVAL) {
                    tracing::warn!(listener = %self.name, %peer, shed, "connection limit reached: closing new connections");
                    last_shed_log = Some(Instant::now());
                    shed = 0;
                }
                continue;
            };
            let counted = match self.limits.admit_source(peer.ip()) {
                Ok(counted) => counted,
                Err(refusal) => {
                    drop(tcp);
                    self.count_refusal(refusal);
                    self.limits.log_refusal(refusal, peer.ip());
                    continue;
                }
            };
            let (name, context) = (self.name.clone(), self.context.clone());
            self.tracker.spawn(async move {
                handle(tcp, peer, name, context).await;
                drop((permit, counted));
            });
        }
    }
}

impl AcceptLoop {
    /// Counts a connection refused at accept by the per-source limits as every refusal
    /// is counted (closed with outcome `refused`, and the reason); no record is made, so
    /// a flood costs no log line per connection.
    fn count_refusal(&self, refusal: Refusal) {
        let metrics = &self.context.recorder.metrics;
        let listener = self.name.to_string();
        metrics.handshake_failures.add(&RefusalLabels { listener: listener.clone(), reason: refusal.as_str() }, 1);
        let direction = match self.context.role {
            Role::Egress => "outbound",
            Role::Ingress => "inbound",
        };
        metrics.closed.add(&ClosedLabels { listener, route: String::new(), direction, mtls: "false", outcome: Outcome::Refused.as_str() }, 1);
    }
}

/// A listener's open connections against its `max_connections`. A reload changes the
/// limit in place: connections already open stay, and new ones count against the new
/// value.
pub struct ConnectionLimit {
    open: AtomicUsize,
    limit: AtomicUsize,
}

impl ConnectionLimit {
    /// A limit of `max` open connections.
    pub fn new(max: usize) -> ConnectionLimit {
        ConnectionLimit { open: AtomicUsize::new(0), limit: AtomicUsize::new(max) }
    }

    /// Changes the limit (on reload).
    pub fn set(&self, max: usize) {
        self.limit.store(max, Ordering::Relaxed);
    }

    /// Counts one more open connection, unless the limit is reached.
    pub fn try_acquire(self: &Arc<Self>) -> Option<OpenConnection> {
        let limit = self.limit.load(Ordering::Relaxed);
        self.open.fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| (open < limit).then_some(open + 1)).ok().map(|_| OpenConnection(self.clone()))
    }
}

/// One open connection; dropping it frees its place.
pub struct OpenConnection(Arc<ConnectionLimit>);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_holds_and_follows_a_reload() {
        let limit = Arc::new(ConnectionLimit::new(2));
        let a = limit.try_acquire().unwrap();
        let _b = limit.try_acquire().unwrap();
        assert!(limit.try_acquire().is_none());
        limit.set(1);
        drop(a);
        assert!(limit.try_acquire().is_none(), "two were open, one closed: still at the new limit of 1");
        limit.set(3);
        assert!(limit.try_acquire().is_some());
    }

    #[test]
    fn racing_acquirers_never_exceed_the_limit() {
        let limit = Arc::new(ConnectionLimit::new(8));
        let peak = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (limit, peak) = (limit.clone(), peak.clone());
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for round in 0..5_000 {
                        if let Some(permit) = limit.try_acquire() {
                            held.push(permit);
                        }
                        peak.fetch_max(limit.open.load(Ordering::Acquire), Ordering::AcqRel);
                        if round % 3 == 0 {
                            held.pop();
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(peak.load(Ordering::Acquire) <= 8, "peak {}", peak.load(Ordering::Acquire));
        assert_eq!(limit.open.load(Ordering::Acquire), 0, "every permit was returned");
    }

    #[test]
    fn a_closed_connection_frees_its_place() {
        let limit = Arc::new(ConnectionLimit::new(1));
        let only = limit.try_acquire().expect("room for one");
        assert!(limit.try_acquire().is_none());
        drop(only);
        assert!(limit.try_acquire().is_some(), "a closed connection frees its place");
    }
}
