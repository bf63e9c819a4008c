//! The accept loop of one listener, with its connection limit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Role;
use crate::connection::{handle, Admitted, Context};
use crate::error::{Outcome, Refusal};
use crate::limits::ListenerLimits;
use crate::metrics::{ClosedLabels, RefusalLabels};

/// How often, at most, a listener logs that it is shedding connections.
const SHED_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// How often a listener checks its pressure and sweeps idle connections.
const SWEEP_INTERVAL: Duration = Duration::from_millis(500);

/// `accept` errors that mean the process (EMFILE) or the system (ENFILE) is out of
/// file descriptors.
const EMFILE: i32 = 24;
const ENFILE: i32 = 23;

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
        let (mut emfile_freed, mut last_emfile_log): (usize, Option<Instant>) = (0, None);
        let mut sweeps = tokio::time::interval(SWEEP_INTERVAL);
        sweeps.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let accepted = tokio::select! {
                _ = self.stop.cancelled() => return,
                accepted = self.socket.accept() => accepted,
                _ = sweeps.tick() => {
                    self.sweep();
                    continue;
                }
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) if matches!(e.raw_os_error(), Some(code) if code == EMFILE || code == ENFILE) => {
                    // Out of descriptors: make room by closing the process's idlest
                    // connections, then retry at once; back off only if none is idle.
                    let freed = self.count_shed(self.context.overload.shed_idlest(None, crate::overload::EMFILE_BATCH, "out of file descriptors"));
                    emfile_freed += freed;
                    if last_emfile_log.is_none_or(|t| t.elapsed() >= SHED_LOG_INTERVAL) {
                        tracing::warn!(listener = %self.name, error = %e, freed = emfile_freed, "accept failed: out of file descriptors; idlest connections shed");
                        (emfile_freed, last_emfile_log) = (0, Some(Instant::now()));
                    }
                    tokio::time::sleep(if freed > 0 { Duration::from_millis(10) } else { Duration::from_millis(100) }).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(listener = %self.name, error = %e, "accept failed; retrying in 100ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            // At the limit, the connection idle longest (at least a second) makes room.
            let permit = self.limit.try_acquire().or_else(|| {
                let shed = self.context.overload.shed_idlest(Some(&self.name), 1, "max_connections reached");
                (self.count_shed(shed) > 0).then(|| self.limit.acquire_beyond())
            });
            let Some(permit) = permit else {
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
            let admitted = Admitted::new(&context, &name);
            self.tracker.spawn(async move {
                handle(tcp, peer, name, context, admitted).await;
                drop((permit, counted));
            });
        }
    }
}

impl AcceptLoop {
    /// Counts connections shed idle; returns how many.
    fn count_shed(&self, shed: Vec<(Arc<str>, Duration)>) -> usize {
        for (listener, _) in &shed {
            self.context.recorder.metrics.shed_idle.add(&crate::metrics::ListenerLabels { listener: listener.to_string() }, 1);
        }
        shed.len()
    }

    /// Under pressure (open connections against `max_connections`, or the process's
    /// descriptors against the soft limit), closes what outlived the shrunk idle
    /// timeouts.
    fn sweep(&self) {
        let pressure = self.limit.pressure().max(self.context.overload.fd_pressure());
        let closed = self.context.overload.sweep(&self.name, pressure);
        if closed > 0 {
            self.context.recorder.metrics.shed_idle.add(&crate::metrics::ListenerLabels { listener: self.name.to_string() }, closed as u64);
            tracing::warn!(listener = %self.name, closed, pressure, "under pressure: idle timeouts shrunk, idle connections closed");
        }
    }

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

    /// Open connections as a fraction of the limit.
    pub fn pressure(&self) -> f64 {
        self.open.load(Ordering::Relaxed) as f64 / self.limit.load(Ordering::Relaxed).max(1) as f64
    }

    /// Counts one more open connection even at the limit: for a connection taking the
    /// place of one just shed, whose own place frees as soon as its task ends.
    pub fn acquire_beyond(self: &Arc<Self>) -> OpenConnection {
        self.open.fetch_add(1, Ordering::AcqRel);
        OpenConnection(self.clone())
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
