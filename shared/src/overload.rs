//! Overload at the file-descriptor budget: shedding idle connections, idlest first.
//!
//! A flood of idle connections can fill a listener's `max_connections` (or, with caps
//! set above the budget, the process's open-file table); then every new client is shed
//! at accept, the legitimate ones with the flood. Exhaustion becomes a policy here, as
//! in Envoy's overload manager: every relaying connection is known with how long it has
//! been idle, and
//! - a new connection at a full listener closes that listener's connection idle
//!   longest (if idle at least [`MIN_IDLE`]) and takes its place;
//! - an accept that fails for want of descriptors closes the process's idlest
//!   connections ([`EMFILE_BATCH`] of them) before it retries;
//! - while a listener is under pressure (open connections, or the process's open
//!   descriptors against its soft limit, above [`PRESSURE_START`]), its idle timeouts
//!   shrink in proportion, down to [`MIN_SCALED_IDLE`] when full, and a sweep closes
//!   what outlived them.
//!
//! Active connections (bytes moved within the last second) are never shed. Each shed
//! connection is cut with a reset, logged `outcome=shed` and counted.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::recheck::{Cut, CutReason};
use crate::relay::Moved;

/// The least idle time for which a connection is shed to admit a new one.
pub const MIN_IDLE: Duration = Duration::from_secs(1);

/// The shortest idle timeout pressure scales down to.
pub const MIN_SCALED_IDLE: Duration = Duration::from_secs(10);

/// Pressure (a fraction of the limit) from which idle timeouts start to shrink.
pub const PRESSURE_START: f64 = 0.9;

/// How many of the idlest connections an accept that hit EMFILE closes.
pub const EMFILE_BATCH: usize = 16;

/// How long a count of the process's open descriptors is reused.
const FD_COUNT_TTL: Duration = Duration::from_millis(250);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One open connection, as overload sees it: from accept (a flood's connections hold
/// their places while their upstreams are set up, too), idle since accept until its
/// relay moves bytes.
struct Relaying {
    listener: Arc<str>,
    moved: Arc<Moved>,
    /// The idle timeout that applies, in milliseconds: the listener's handshake timeout
    /// while setting up, the route's once relaying.
    idle_timeout_ms: AtomicU64,
    cut: Arc<Cut>,
}

impl Relaying {
    /// How long no byte has moved, as the relay records it.
    fn idle_for(&self) -> Duration {
        self.moved.idle()
    }
}

/// Every relaying connection of a gateway, with how idle each is.
pub struct Overload {
    next: AtomicU64,
    relaying: Mutex<HashMap<u64, Arc<Relaying>>>,
    /// (when counted, open descriptors / soft limit).
    fds: Mutex<Option<(Instant, f64)>>,
    /// The soft open-file limit (read at start, after it was raised).
    soft_limit: u64,
}

impl Default for Overload {
    fn default() -> Self {
        Overload { next: AtomicU64::new(0), relaying: Mutex::default(), fds: Mutex::default(), soft_limit: crate::fdlimit::soft_limit().unwrap_or(1024) }
    }
}

/// Keeps a connection known to [`Overload`]; removes it when dropped.
pub struct Registration {
    id: u64,
    overload: Arc<Overload>,
    relaying: Arc<Relaying>,
}

impl Registration {
    /// The relay starts, under the route's `idle_timeout`.
    pub fn relaying(&self, idle_timeout: Duration) {
        self.relaying.idle_timeout_ms.store(idle_timeout.as_millis() as u64, Ordering::Relaxed);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        lock(&self.overload.relaying).remove(&self.id);
    }
}

impl Overload {
    /// Registers a connection accepted now, whose timeout is `idle_timeout` until
    /// [`Registration::relaying`]; `cut` closes it.
    pub fn register(self: &Arc<Self>, listener: Arc<str>, moved: Arc<Moved>, idle_timeout: Duration, cut: Arc<Cut>) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        moved.touch();
        let relaying = Arc::new(Relaying { listener, moved, idle_timeout_ms: AtomicU64::new(idle_timeout.as_millis() as u64), cut });
        lock(&self.relaying).insert(id, relaying.clone());
        Registration { id, overload: self.clone(), relaying }
    }

    /// Relaying connections now.
    pub fn len(&self) -> usize {
        lock(&self.relaying).len()
    }

    /// Whether none is relaying.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn snapshot(&self, listener: Option<&str>) -> Vec<Arc<Relaying>> {
        lock(&self.relaying).values().filter(|r| listener.is_none_or(|l| *r.listener == *l)).cloned().collect()
    }

    /// Closes up to `count` of the connections idle longest (of `listener`, or of the
    /// whole process), each idle at least [`MIN_IDLE`]; returns (listener, idle) of each.
    pub fn shed_idlest(&self, listener: Option<&str>, count: usize, why: &'static str) -> Vec<(Arc<str>, Duration)> {
        let mut idle: Vec<(Duration, Arc<Relaying>)> =
            // One already cut but still closing is no candidate: picking it again would free
            // nothing, and under a burst of arrivals every arrival would be refused.
            self.snapshot(listener).into_iter().filter(|r| !r.cut.is_closed()).map(|r| (r.idle_for(), r)).filter(|(idle, _)| *idle >= MIN_IDLE).collect();
        // The `count` idlest, without sorting them all: this runs at every arrival at a
        // full listener.
        if count < idle.len() {
            idle.select_nth_unstable_by_key(count, |(idle, _)| std::cmp::Reverse(*idle));
            idle.truncate(count);
        }
        idle.sort_by_key(|(idle, _)| std::cmp::Reverse(*idle));
        let mut shed = Vec::new();
        for (idle, r) in idle {
            if shed.len() == count {
                break;
            }
            if r.cut.close(CutReason::Overload { idle, why }) {
                shed.push((r.listener.clone(), idle));
            }
        }
        shed
    }

    /// The idle timeout under `pressure` (a fraction of the limit): as configured up
    /// to [`PRESSURE_START`], then shrinking linearly to [`MIN_SCALED_IDLE`] at 1.
    pub fn scaled_idle_timeout(configured: Duration, pressure: f64) -> Duration {
        let scale = ((1.0 - pressure) / (1.0 - PRESSURE_START)).clamp(0.0, 1.0);
        configured.mul_f64(scale).max(MIN_SCALED_IDLE.min(configured))
    }

    /// Closes `listener`'s connections idle beyond their timeout as scaled by
    /// `pressure`; returns how many. Nothing happens below [`PRESSURE_START`].
    pub fn sweep(&self, listener: &str, pressure: f64) -> usize {
        if pressure < PRESSURE_START {
            return 0;
        }
        let mut closed = 0;
        for r in self.snapshot(Some(listener)) {
            let idle = r.idle_for();
            let configured = Duration::from_millis(r.idle_timeout_ms.load(Ordering::Relaxed));
            if idle > Self::scaled_idle_timeout(configured, pressure) && r.cut.close(CutReason::Overload { idle, why: "idle timeouts shrunk under pressure" }) {
                closed += 1;
            }
        }
        closed
    }

    /// The process's open descriptors as a fraction of its soft limit (counted at most
    /// every 250 ms).
    pub fn fd_pressure(&self) -> f64 {
        let mut cached = lock(&self.fds);
        if let Some((at, fraction)) = *cached {
            if at.elapsed() < FD_COUNT_TTL {
                return fraction;
            }
        }
        let open = std::fs::read_dir("/proc/self/fd").map_or(0, |dir| dir.count());
        let fraction = open as f64 / self.soft_limit.max(1) as f64;
        *cached = Some((Instant::now(), fraction));
        fraction
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_shrink_only_under_pressure_and_never_below_the_floor() {
        let hour = Duration::from_secs(3600);
        assert_eq!(Overload::scaled_idle_timeout(hour, 0.5), hour);
        assert_eq!(Overload::scaled_idle_timeout(hour, PRESSURE_START), hour);
        assert_eq!(Overload::scaled_idle_timeout(hour, 0.95), hour / 2);
        assert_eq!(Overload::scaled_idle_timeout(hour, 1.0), MIN_SCALED_IDLE);
        assert_eq!(Overload::scaled_idle_timeout(hour, 3.0), MIN_SCALED_IDLE);
        let short = Duration::from_secs(2);
        assert_eq!(Overload::scaled_idle_timeout(short, 1.0), short, "a timeout already below the floor stays");
    }

    #[test]
    fn the_sweep_closes_what_outlived_the_shrunk_timeout_only_under_pressure() {
        let overload = Arc::new(Overload::default());
        let (moved, cut) = (Arc::new(Moved::default()), Arc::new(Cut::default()));
        let _registered = overload.register(Arc::from("l"), moved, Duration::from_millis(100), cut.clone());
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(overload.sweep("l", 0.5), 0, "no pressure: the idle timeout is the relay's own");
        assert_eq!(overload.sweep("other", 1.0), 0, "another listener's pressure");
        assert_eq!(overload.sweep("l", 1.0), 1);
        assert!(!cut.close(CutReason::Trust(String::new())), "it was cut by the sweep");
    }

    #[test]
    fn the_idlest_are_shed_first_and_active_ones_never() {
        let overload = Arc::new(Overload::default());
        let hour = Duration::from_secs(3600);
        let conn = |listener: &str| {
            let moved = Arc::new(Moved::default());
            let cut = Arc::new(Cut::default());
            let registration = overload.register(Arc::from(listener), moved.clone(), hour, cut.clone());
            (moved, cut, registration)
        };
        let oldest = conn("a");
        std::thread::sleep(Duration::from_millis(300));
        let older = conn("a");
        let other_listener = conn("b");
        let active = conn("a");
        std::thread::sleep(MIN_IDLE);
        active.0.touch();
        let shed = overload.shed_idlest(Some("a"), 1, "test");
        assert_eq!(shed.len(), 1);
        assert!(!oldest.1.close(CutReason::Trust(String::new())), "the oldest was cut first");
        let shed = overload.shed_idlest(Some("a"), 5, "test");
        assert_eq!(shed.len(), 1, "the older one; the active one is not idle, the other listener not asked");
        assert!(!older.1.close(CutReason::Trust(String::new())));
        assert!(active.1.close(CutReason::Trust(String::new())), "the active connection was never cut");
        assert!(other_listener.1.close(CutReason::Trust(String::new())));
        drop((oldest, older, other_listener, active));
        assert!(overload.is_empty(), "registrations leave with their connections");
        assert!(overload.fd_pressure() > 0.0);
    }

    #[test]
    fn one_still_closing_is_not_picked_again() {
        let overload = Arc::new(Overload::default());
        let conn = || {
            let cut = Arc::new(Cut::default());
            let registration = overload.register(Arc::from("a"), Arc::new(Moved::default()), Duration::from_secs(3600), cut.clone());
            (cut, registration)
        };
        let (oldest, older) = (conn(), conn());
        std::thread::sleep(MIN_IDLE);
        assert_eq!(overload.shed_idlest(Some("a"), 1, "test").len(), 1);
        // The oldest is cut but its task has not ended yet (still registered): the next
        // arrival must make room with the next idlest, not with it again.
        assert_eq!(overload.shed_idlest(Some("a"), 1, "test").len(), 1, "the next arrival freed a place too");
        assert!(!older.0.close(CutReason::Trust(String::new())), "the older one was cut second");
        drop((oldest, older));
    }
}
