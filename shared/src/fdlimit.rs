//! The process's file-descriptor budget: every proxied connection holds two (the client's
//! socket and the upstream's), so the open-file limit bounds how many connections the
//! gateway can carry, and the default `max_connections` is derived from it.
//!
//! At start the binary raises the soft `RLIMIT_NOFILE` to the hard limit (as Envoy's
//! and most servers' launchers do), so a distribution's 1024 default does not cap the
//! gateway at a few hundred connections; a listener that sets no `max_connections` then
//! gets its share of what the limit allows.

use nix::sys::resource::{getrlimit, setrlimit, Resource};

/// Descriptors kept out of the connection budget: upstream connects in flight (a
/// connection holds its client socket while its upstream is being dialled), listening
/// sockets, the admin, health and metrics ports, reloads reading credential files, DNS
/// sockets, logs.
pub const HEADROOM: u64 = 256;

/// Descriptors per proxied connection: the client's socket and the upstream's.
pub const PER_CONNECTION: u64 = 2;

/// The highest default `max_connections`, whatever the limit allows.
pub const DEFAULT_CAP: usize = 16384;

/// The open-file limits before and after [`raise_to_hard`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Raised {
    /// The soft limit the process started with.
    pub before: u64,
    /// The soft limit now.
    pub soft: u64,
    /// The hard limit (the ceiling for the soft one).
    pub hard: u64,
}

/// Raises the soft open-file limit to the hard one; returns both, before and after.
pub fn raise_to_hard() -> nix::Result<Raised> {
    let (before, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if before < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    Ok(Raised { before, soft, hard })
}

/// The current soft open-file limit (`None` if it cannot be read).
pub fn soft_limit() -> Option<u64> {
    getrlimit(Resource::RLIMIT_NOFILE).ok().map(|(soft, _)| soft)
}

/// The default `max_connections` of each listener that sets none, given the soft limit
/// and the caps the other listeners set explicitly.
///
/// The budget is `(soft - HEADROOM) / PER_CONNECTION` connections for the whole process.
/// The explicit caps are taken out of it first (they are what their listeners may use),
/// and what is left is split evenly between the listeners without one: their caps then
/// add up to at most the budget, so no mix of busy listeners can run the process out
/// of descriptors. Each share is at least 1 and at most [`DEFAULT_CAP`]. An explicit
/// `max_connections` is kept as written, even beyond the budget.
pub fn default_max_connections(soft: u64, explicit: &[usize], implicit: usize) -> usize {
    let budget = soft.saturating_sub(HEADROOM) / PER_CONNECTION;
    let taken: u64 = explicit.iter().map(|&cap| cap as u64).sum();
    let share = budget.saturating_sub(taken) / implicit.max(1) as u64;
    usize::try_from(share).unwrap_or(usize::MAX).clamp(1, DEFAULT_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_two_descriptors_per_connection_after_headroom_shared_by_listeners() {
        assert_eq!(default_max_connections(1024, &[], 1), 384);
        assert_eq!(default_max_connections(4096, &[], 1), 1920);
        assert_eq!(default_max_connections(4096, &[], 2), 960);
        assert_eq!(default_max_connections(4096, &[920], 2), 500, "explicit caps come out of the budget first");
        assert_eq!(default_max_connections(1_048_576, &[], 1), DEFAULT_CAP, "capped at today's default");
        assert_eq!(default_max_connections(100, &[], 1), 1, "a limit below the headroom still serves");
        assert_eq!(default_max_connections(4096, &[100_000], 1), 1, "explicit caps beyond the budget leave the minimum");
    }

    #[test]
    fn raising_the_soft_limit_reaches_the_hard_one() {
        let raised = raise_to_hard().unwrap();
        assert!(raised.before <= raised.soft, "{raised:?}");
        assert_eq!(raised.soft, raised.hard, "{raised:?}");
        assert_eq!(soft_limit(), Some(raised.soft));
    }
}
