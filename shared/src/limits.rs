//! Abuse limits of one listener: token buckets and concurrent-connection counts per
//! source address and per client identity, and a CancelRequest rate per source.
//!
//! Every table is bounded: the buckets keep the [`TABLE_CAPACITY`] most recently seen
//! keys and evict the least recently seen beyond that (a flood from many addresses
//! costs old entries their history, never the process its memory); the concurrency
//! tables hold only keys with a connection open, so they are bounded by
//! `max_connections`. Settings change in place on reload; the state is kept.
//! Refusals are counted by the caller and logged here at most once a second.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::config::{Limits, Rate};
use crate::error::Refusal;

/// Most keys a bucket table remembers.
pub const TABLE_CAPACITY: usize = 65_536;

/// How often, at most, a listener logs its limit refusals.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One key's bucket.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
    /// Position in the recency order.
    seen: u64,
}

/// Token buckets by key, least recently seen evicted beyond `capacity`.
#[derive(Debug)]
pub struct Buckets<K> {
    capacity: usize,
    entries: HashMap<K, Bucket>,
    /// `seen` -> key, oldest first.
    order: BTreeMap<u64, K>,
    clock: u64,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    /// An empty table remembering at most `capacity` keys.
    pub fn new(capacity: usize) -> Buckets<K> {
        Buckets { capacity: capacity.max(1), entries: HashMap::new(), order: BTreeMap::new(), clock: 0 }
    }

    /// Takes one token from `key`'s bucket if it has one; a key not seen yet starts full.
    pub fn take(&mut self, key: &K, rate: Rate, now: Instant) -> bool {
        self.clock += 1;
        let seen = self.clock;
        let burst = f64::from(rate.burst.max(1));
        let bucket = match self.entries.get_mut(key) {
            Some(bucket) => {
                self.order.remove(&bucket.seen);
                let elapsed = now.saturating_duration_since(bucket.refilled).as_secs_f64();
                bucket.tokens = (bucket.tokens + elapsed * f64::from(rate.per_second)).min(burst);
                bucket.refilled = now;
                bucket.seen = seen;
                bucket
            }
            None => {
                if self.entries.len() >= self.capacity {
                    if let Some((_, oldest)) = self.order.pop_first() {
                        self.entries.remove(&oldest);
                    }
                }
                self.entries.entry(key.clone()).or_insert(Bucket { tokens: burst, refilled: now, seen })
            }
        };
        self.order.insert(seen, key.clone());
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Open connections by key; a key leaves when its last connection closes.
type Counts<K> = Arc<Mutex<HashMap<K, u32>>>;

/// One open connection counted against its key; dropping it frees its place.
pub struct Counted<K: Hash + Eq> {
    counts: Counts<K>,
    key: K,
}

impl<K: Hash + Eq> Drop for Counted<K> {
    fn drop(&mut self) {
        let mut counts = lock(&self.counts);
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

fn count<K: Hash + Eq + Clone>(counts: &Counts<K>, key: &K, limit: Option<u32>) -> Option<Counted<K>> {
    let mut table = lock(counts);
    let n = table.entry(key.clone()).or_insert(0);
    if limit.is_some_and(|limit| *n >= limit) {
        if *n == 0 {
            table.remove(key);
        }
        return None;
    }
    *n += 1;
    Some(Counted { counts: counts.clone(), key: key.clone() })
}

/// What a connection admitted by a limit holds until it closes.
pub type SourceGuard = Counted<IpAddr>;
/// What a connection admitted by the identity limits holds until it closes.
pub type IdentityGuard = Counted<String>;

/// Refusals since the last log line.
#[derive(Debug, Default)]
struct Unlogged {
    last: Option<Instant>,
    refused: u64,
}

/// One listener's limits and their state.
pub struct ListenerLimits {
    listener: Arc<str>,
    settings: ArcSwap<Limits>,
    sources: Mutex<Buckets<IpAddr>>,
    identities: Mutex<Buckets<String>>,
    cancels: Mutex<Buckets<IpAddr>>,
    open_by_source: Counts<IpAddr>,
    open_by_identity: Counts<String>,
    unlogged: Mutex<Unlogged>,
}

impl ListenerLimits {
    /// Limits for `listener` with `settings`.
    pub fn new(listener: &str, settings: Limits) -> ListenerLimits {
        ListenerLimits {
            listener: Arc::from(listener),
            settings: ArcSwap::from_pointee(settings),
            sources: Mutex::new(Buckets::new(TABLE_CAPACITY)),
            identities: Mutex::new(Buckets::new(TABLE_CAPACITY)),
            cancels: Mutex::new(Buckets::new(TABLE_CAPACITY)),
            open_by_source: Counts::default(),
            open_by_identity: Counts::default(),
            unlogged: Mutex::default(),
        }
    }

    /// New settings (a reload); buckets and counts carry over.
    pub fn set(&self, settings: Limits) {
        if **self.settings.load() != settings {
            self.settings.store(Arc::new(settings));
        }
    }

    /// A new connection from `source`: within the concurrency and rate limits, or the
    /// refusal. Only a connection the concurrency limit admits takes a token.
    pub fn admit_source(&self, source: IpAddr) -> Result<Option<SourceGuard>, Refusal> {
        let settings = self.settings.load();
        if settings.per_source.is_none() && settings.concurrent_per_source.is_none() {
            return Ok(None);
        }
        let guard = count(&self.open_by_source, &source, settings.concurrent_per_source).ok_or(Refusal::SourceConcurrency)?;
        if let Some(rate) = settings.per_source {
            if !lock(&self.sources).take(&source, rate, Instant::now()) {
                return Err(Refusal::SourceRate);
            }
        }
        Ok(Some(guard))
    }

    /// A connection whose client proved `identity`: within the identity limits, or the
    /// refusal.
    pub fn admit_identity(&self, identity: &str) -> Result<Option<IdentityGuard>, Refusal> {
        let settings = self.settings.load();
        if settings.per_identity.is_none() && settings.concurrent_per_identity.is_none() {
            return Ok(None);
        }
        let key = identity.to_owned();
        let guard = count(&self.open_by_identity, &key, settings.concurrent_per_identity).ok_or(Refusal::IdentityConcurrency)?;
        if let Some(rate) = settings.per_identity {
            if !lock(&self.identities).take(&key, rate, Instant::now()) {
                return Err(Refusal::IdentityRate);
            }
        }
        Ok(Some(guard))
    }

    /// A PostgreSQL CancelRequest from `source`: within its rate, or the refusal.
    pub fn admit_cancel(&self, source: IpAddr) -> Result<(), Refusal> {
        let rate = self.settings.load().cancels_per_source;
        if lock(&self.cancels).take(&source, rate, Instant::now()) {
            Ok(())
        } else {
            Err(Refusal::CancelRate)
        }
    }

    /// Logs a refusal, at most once a second per listener (with how many were refused
    /// since the last line).
    pub fn log_refusal(&self, refusal: Refusal, source: IpAddr) {
        let mut unlogged = lock(&self.unlogged);
        unlogged.refused += 1;
        if unlogged.last.is_none_or(|t| t.elapsed() >= LOG_INTERVAL) {
            let refused = std::mem::take(&mut unlogged.refused);
            unlogged.last = Some(Instant::now());
            drop(unlogged);
            tracing::warn!(listener = %self.listener, %source, reason = refusal.as_str(), refused, "abuse limit reached: refusing connections (logged at most once a second)");
        }
    }
}

/// The CancelRequest limit as a database negotiation sees it: this listener's, for this
/// client's address.
#[derive(Clone, Copy)]
pub struct CancelGate<'a> {
    /// The listener's limits.
    pub limits: &'a ListenerLimits,
    /// The client's address.
    pub source: IpAddr,
}

impl CancelGate<'_> {
    /// Whether one more CancelRequest from this address may be forwarded.
    pub fn admit(&self) -> Result<(), crate::error::ConnError> {
        self.limits.admit_cancel(self.source).map_err(crate::error::ConnError::Limited)
    }
}

/// Every listener's limits, by name; what a reload updates in place.
#[derive(Default)]
pub struct Limiters(Mutex<HashMap<String, Arc<ListenerLimits>>>);

impl Limiters {
    /// Creates or updates `listener`'s limits; returns them.
    pub fn configure(&self, listener: &str, settings: &Limits) -> Arc<ListenerLimits> {
        let mut all = lock(&self.0);
        match all.get(listener) {
            Some(limits) => {
                limits.set(settings.clone());
                limits.clone()
            }
            None => {
                let limits = Arc::new(ListenerLimits::new(listener, settings.clone()));
                all.insert(listener.to_owned(), limits.clone());
                limits
            }
        }
    }

    /// The limits of `listener`, if it has been configured.
    pub fn get(&self, listener: &str) -> Option<Arc<ListenerLimits>> {
        lock(&self.0).get(listener).cloned()
    }

    /// Forgets listeners not in `names` (removed by a reload).
    pub fn retain(&self, names: &[&str]) {
        lock(&self.0).retain(|name, _| names.contains(&name.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_source: Option<Rate>, concurrent: Option<u32>) -> Limits {
        Limits {
            per_source,
            concurrent_per_source: concurrent,
            per_identity: None,
            concurrent_per_identity: Some(1),
            cancels_per_source: Rate { per_second: 1, burst: 2 },
        }
    }

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let mut buckets = Buckets::new(16);
        let rate = Rate { per_second: 10, burst: 3 };
        let start = Instant::now();
        let taken = (0..10).filter(|_| buckets.take(&1, rate, start)).count();
        assert_eq!(taken, 3, "the burst, then nothing at the same instant");
        assert!(!buckets.take(&1, rate, start + Duration::from_millis(50)), "half a token refilled");
        assert!(buckets.take(&1, rate, start + Duration::from_millis(100)), "one token after 100ms at 10/s");
        assert!(buckets.take(&2, rate, start), "another key has its own bucket");
        let later = start + Duration::from_secs(60);
        assert_eq!((0..10).filter(|_| buckets.take(&1, rate, later)).count(), 3, "refills to the burst, never beyond");
    }

    #[test]
    fn the_table_evicts_the_least_recently_seen() {
        let mut buckets = Buckets::new(3);
        let rate = Rate { per_second: 1, burst: 1 };
        let now = Instant::now();
        for key in [1, 2, 3] {
            assert!(buckets.take(&key, rate, now));
        }
        assert!(!buckets.take(&1, rate, now), "1 is empty and now the most recent");
        assert!(buckets.take(&4, rate, now), "4 evicts 2, the least recently seen");
        assert_eq!(buckets.len(), 3);
        assert!(!buckets.take(&1, rate, now), "1 was kept, still empty");
        assert!(buckets.take(&2, rate, now), "2 was forgotten: it starts full again");
        for key in 100..10_000 {
            buckets.take(&key, rate, now);
        }
        assert_eq!((buckets.len(), buckets.order.len()), (3, 3), "bounded whatever the flood");
    }

    #[test]
    fn concurrency_counts_open_connections_and_forgets_closed_keys() {
        let limiter = ListenerLimits::new("l", limits(None, Some(2)));
        let source: IpAddr = "127.0.0.2".parse().unwrap();
        let a = limiter.admit_source(source).unwrap();
        let _b = limiter.admit_source(source).unwrap();
        assert_eq!(limiter.admit_source(source).err(), Some(Refusal::SourceConcurrency));
        assert!(limiter.admit_source("127.0.0.3".parse().unwrap()).is_ok(), "another source is not affected");
        drop(a);
        assert!(limiter.admit_source(source).is_ok());
        let id = limiter.admit_identity("spiffe://a/x").unwrap();
        assert_eq!(limiter.admit_identity("spiffe://a/x").err(), Some(Refusal::IdentityConcurrency));
        drop(id);
        assert!(lock(&limiter.open_by_identity).is_empty(), "a key leaves with its last connection");
    }

    #[test]
    fn a_rate_refusal_and_cancels_and_a_reload() {
        let limiter = ListenerLimits::new("l", limits(Some(Rate { per_second: 1, burst: 2 }), None));
        let source: IpAddr = "127.0.0.2".parse().unwrap();
        let admitted = (0..5).filter(|_| limiter.admit_source(source).is_ok()).count();
        assert_eq!(admitted, 2);
        assert_eq!(limiter.admit_source(source).err(), Some(Refusal::SourceRate));
        assert_eq!((0..5).filter(|_| limiter.admit_cancel(source).is_ok()).count(), 2);
        limiter.set(limits(None, None));
        assert!((0..5).all(|_| limiter.admit_source(source).is_ok()), "the reload lifted the limit");
    }
}
