//! Which upstream address a connection tries, and in what order: a route's endpoints
//! with their priorities and weights, and the health of every address they resolve to.
//!
//! Each endpoint is resolved on its own. The candidates of a connection are the usable
//! addresses (not ejected by outlier detection, not failed by the active health check)
//! of the lowest priority first, then of each next priority, so a refused or timed-out
//! connect falls through to the next address and then to the next priority before the
//! client is given up on. Inside a priority the endpoints take turns by weight; inside
//! an endpoint its addresses take turns (round robin). When no address of any priority
//! is usable, all of them are tried (Envoy's panic mode, at a 100% threshold): a route
//! that refuses everyone helps nobody.
//!
//! The health of an address lives in a [`Registry`] keyed by route name and endpoint
//! address, outside the route table, so it survives a reload that keeps the endpoint and
//! is dropped (with its metric series) when the endpoint or route goes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::time::timeout;

use crate::config::{Endpoint, HealthCheck, OutlierDetection};
use crate::metrics::{EndpointLabels, Metrics};
use crate::resolve::{ResolveError, Resolver};

/// One endpoint of a route, ready to resolve.
#[derive(Debug)]
pub struct EndpointPlan {
    /// As configured.
    pub endpoint: Endpoint,
    /// `host:port`, the key of its state and its metric label.
    pub label: String,
    /// Round-robin cursor over its resolved addresses.
    cursor: AtomicUsize,
}

/// A route's endpoints, their settings and their shared state.
#[derive(Debug)]
pub struct EndpointSet {
    /// In file order.
    pub endpoints: Vec<EndpointPlan>,
    /// Passive outlier detection, when configured.
    pub outlier: Option<OutlierDetection>,
    /// Active health checks, when configured.
    pub health_check: Option<HealthCheck>,
    /// The health of every address, shared with reloads and the probes.
    pub state: Arc<RouteState>,
    /// Each distinct priority (ascending) with the weighted cursor of its endpoints.
    groups: Vec<(u32, AtomicUsize)>,
}

/// One address to try for a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Where to connect.
    pub addr: SocketAddr,
    /// Index into [`EndpointSet::endpoints`].
    pub endpoint: usize,
    /// The endpoint's priority.
    pub priority: u32,
}

impl EndpointSet {
    /// The set for `endpoints`, its state taken from (or added to) `registry`.
    pub fn new(route: &str, endpoints: &[Endpoint], outlier: Option<OutlierDetection>, health_check: Option<HealthCheck>, registry: &Registry) -> EndpointSet {
        let mut priorities: Vec<u32> = endpoints.iter().map(|e| e.priority).collect();
        priorities.sort_unstable();
        priorities.dedup();
        EndpointSet {
            endpoints: endpoints.iter().map(|e| EndpointPlan { endpoint: e.clone(), label: e.address.to_string(), cursor: AtomicUsize::new(0) }).collect(),
            outlier,
            health_check,
            // One plain endpoint has no choice to report: its series would only repeat
            // the route's own metrics.
            state: registry.route(route, endpoints, endpoints.len() > 1 || outlier.is_some() || health_check.is_some()),
            groups: priorities.into_iter().map(|p| (p, AtomicUsize::new(0))).collect(),
        }
    }

    /// The route's best (lowest) priority.
    pub fn best_priority(&self) -> u32 {
        self.groups.first().map_or(0, |(p, _)| *p)
    }

    /// Endpoint indices of priority `priority`, the weighted pick first.
    fn group_order(&self, priority: u32, cursor: &AtomicUsize) -> Vec<usize> {
        let members: Vec<usize> = (0..self.endpoints.len()).filter(|&i| self.endpoints[i].endpoint.priority == priority).collect();
        let total: u64 = members.iter().map(|&i| u64::from(self.endpoints[i].endpoint.weight)).sum();
        if members.len() < 2 || total == 0 {
            return members;
        }
        let mut pick = cursor.fetch_add(1, Ordering::Relaxed) as u64 % total;
        let mut first = 0;
        for (k, &i) in members.iter().enumerate() {
            let weight = u64::from(self.endpoints[i].endpoint.weight);
            if pick < weight {
                first = k;
                break;
            }
            pick -= weight;
        }
        members.iter().cycle().skip(first).take(members.len()).copied().collect()
    }

    /// Resolves every endpoint (each within `limit`) and orders the addresses to try.
    /// An endpoint that does not resolve adds nothing; only when none resolves is that
    /// the error.
    ///
    /// An `{sni}` endpoint resolves `sni`, the name the client sent (which one of the
    /// route's hosts matched); its addresses keep no state.
    pub async fn candidates(&self, resolver: &Resolver, limit: Duration, sni: Option<&str>) -> Result<Vec<Candidate>, ResolveError> {
        if let Some((i, plan)) = self.endpoints.iter().enumerate().find(|(_, p)| p.endpoint.address.host == crate::config::sni::SNI_HOST) {
            let host = sni.ok_or_else(|| ResolveError::Lookup { host: plan.label.clone(), reason: "the client sent no SNI to connect to".into() })?;
            let port = plan.endpoint.address.port;
            let addrs = match timeout(limit, resolver.lookup(host, port)).await {
                Ok(answer) => answer?,
                Err(_) => return Err(ResolveError::Lookup { host: host.to_owned(), reason: format!("no answer within connect_timeout ({limit:?})") }),
            };
            let first = plan.cursor.fetch_add(1, Ordering::Relaxed) % addrs.len().max(1);
            return Ok(addrs
                .iter()
                .cycle()
                .skip(first)
                .take(addrs.len())
                .map(|&addr| Candidate { addr, endpoint: i, priority: plan.endpoint.priority })
                .collect());
        }
        let mut all = Vec::new();
        let mut first_error = None;
        for (priority, cursor) in &self.groups {
            for i in self.group_order(*priority, cursor) {
                let plan = &self.endpoints[i];
                let address = &plan.endpoint.address;
                let addrs = match timeout(limit, resolver.lookup(&address.host, address.port)).await {
                    Ok(Ok(addrs)) => addrs,
                    Ok(Err(e)) => {
                        first_error.get_or_insert(e);
                        continue;
                    }
                    Err(_) => {
                        let reason = format!("no answer within connect_timeout ({limit:?})");
                        first_error.get_or_insert(ResolveError::Lookup { host: address.host.clone(), reason });
                        continue;
                    }
                };
                let first = plan.cursor.fetch_add(1, Ordering::Relaxed) % addrs.len().max(1);
                all.extend(addrs.iter().cycle().skip(first).take(addrs.len()).map(|&addr| Candidate { addr, endpoint: i, priority: *priority }));
            }
        }
        if all.is_empty() {
            return Err(first_error.unwrap_or_else(|| ResolveError::Lookup { host: String::new(), reason: "the route has no endpoint".into() }));
        }
        let usable = self.state.usable(self, &all, Instant::now());
        Ok(if usable.is_empty() { all } else { usable })
    }

    /// A connect (and, where there is no origination, the whole set-up) to `c` worked.
    /// `complete` says whether nothing more (a handshake) is to come.
    pub fn connected(&self, c: &Candidate, complete: bool) {
        if c.priority > self.best_priority() {
            self.state.count(|m, labels| m.endpoint_failovers.add(labels, 1), &self.endpoints[c.endpoint].label);
        }
        if complete {
            self.state.succeeded(&self.endpoints[c.endpoint].label, c.addr);
        }
    }

    /// A connect or origination handshake to `addr` worked: its failure count resets.
    pub fn succeeded(&self, addr: SocketAddr) {
        if let Some(label) = self.state.endpoint_of(addr) {
            self.state.succeeded(&label, addr);
        }
    }

    /// A connect or origination handshake to `addr` failed: it counts towards ejection.
    pub fn failed(&self, addr: SocketAddr) {
        let Some(outlier) = &self.outlier else { return };
        if let Some(label) = self.state.endpoint_of(addr) {
            self.state.failed(&label, addr, outlier, Instant::now());
        }
    }
}

/// The health of one resolved address.
#[derive(Clone, Debug, Default)]
struct AddressState {
    /// Connect or handshake failures in a row.
    consecutive_failures: u32,
    /// Ejected until then.
    ejected_until: Option<Instant>,
    /// Ejections so far (the multiplier of the next one), less the base times spent
    /// healthy since the last.
    times_ejected: u32,
    /// When the last ejection ended.
    returned_at: Option<Instant>,
    /// The active health check failed it.
    unhealthy: bool,
    /// Probes passed in a row / failed in a row.
    passes: u32,
    fails: u32,
    /// The last probe's time and result.
    last_probe: Option<(Duration, bool)>,
}

impl AddressState {
    fn usable(&self) -> bool {
        !self.unhealthy && self.ejected_until.is_none()
    }
}

/// The addresses of one endpoint, by address.
#[derive(Debug, Default)]
struct EndpointHealth {
    /// As configured (for `/config_dump`).
    priority: u32,
    weight: u32,
    addresses: BTreeMap<SocketAddr, AddressState>,
}

/// Every address state of one route.
pub struct RouteState {
    route: String,
    metrics: Option<Arc<Metrics>>,
    /// Whether the endpoint gauges are exported (several endpoints, outlier detection
    /// or health checks); set by the latest build of the route.
    observed: std::sync::atomic::AtomicBool,
    endpoints: Mutex<BTreeMap<String, EndpointHealth>>,
}

impl std::fmt::Debug for RouteState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteState").field("route", &self.route).field("endpoints", &*self.lock()).finish_non_exhaustive()
    }
}

impl RouteState {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, EndpointHealth>> {
        self.endpoints.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn labels(&self, endpoint: &str) -> EndpointLabels {
        EndpointLabels { route: self.route.clone(), endpoint: endpoint.to_owned() }
    }

    fn count(&self, record: impl FnOnce(&Metrics, &EndpointLabels), endpoint: &str) {
        if let Some(m) = &self.metrics {
            record(m, &self.labels(endpoint));
        }
    }

    /// The gauges of `endpoint`, from its state now.
    fn publish(&self, endpoint: &str, health: &EndpointHealth) {
        if !self.observed.load(Ordering::Relaxed) {
            return;
        }
        let healthy = health.addresses.values().filter(|a| a.usable()).count();
        let ejected = health.addresses.values().filter(|a| a.ejected_until.is_some()).count();
        self.count(
            |m, labels| {
                m.endpoint_healthy.set(labels, i64::try_from(healthy).unwrap_or(i64::MAX));
                m.endpoint_ejected.set(labels, i64::try_from(ejected).unwrap_or(i64::MAX));
            },
            endpoint,
        );
    }

    /// The endpoint that `addr` was resolved from (the first, if several were).
    fn endpoint_of(&self, addr: SocketAddr) -> Option<String> {
        self.lock().iter().find(|(_, e)| e.addresses.contains_key(&addr)).map(|(label, _)| label.clone())
    }

    /// Records every candidate's address (so the ejection cap knows the route's size),
    /// ends ejections whose time is up, and keeps the usable candidates.
    fn usable(&self, set: &EndpointSet, candidates: &[Candidate], now: Instant) -> Vec<Candidate> {
        let mut endpoints = self.lock();
        let mut changed = HashSet::new();
        for c in candidates {
            let label = &set.endpoints[c.endpoint].label;
            let health = endpoints.entry(label.clone()).or_default();
            let state = health.addresses.entry(c.addr).or_insert_with(|| {
                changed.insert(label.clone());
                AddressState::default()
            });
            if state.ejected_until.is_some_and(|until| until <= now) {
                state.ejected_until = None;
                state.returned_at = Some(now);
                changed.insert(label.clone());
                tracing::info!(route = %self.route, endpoint = %label, address = %c.addr, "ejection ended: the address takes traffic again");
            }
        }
        for label in changed {
            if let Some(health) = endpoints.get(&label) {
                self.publish(&label, health);
            }
        }
        candidates
            .iter()
            .filter(|c| endpoints.get(&set.endpoints[c.endpoint].label).and_then(|e| e.addresses.get(&c.addr)).is_none_or(AddressState::usable))
            .copied()
            .collect()
    }

    fn succeeded(&self, endpoint: &str, addr: SocketAddr) {
        let mut endpoints = self.lock();
        if let Some(state) = endpoints.get_mut(endpoint).and_then(|e| e.addresses.get_mut(&addr)) {
            state.consecutive_failures = 0;
        }
    }

    fn failed(&self, endpoint: &str, addr: SocketAddr, outlier: &OutlierDetection, now: Instant) {
        let mut endpoints = self.lock();
        let total: usize = endpoints.values().map(|e| e.addresses.len()).sum();
        let ejected: usize = endpoints.values().flat_map(|e| e.addresses.values()).filter(|a| a.ejected_until.is_some()).count();
        let Some(health) = endpoints.get_mut(endpoint) else { return };
        let Some(state) = health.addresses.get_mut(&addr) else { return };
        state.consecutive_failures += 1;
        if state.ejected_until.is_some() || state.consecutive_failures < outlier.consecutive_failures {
            return;
        }
        if ejected >= ejection_cap(total, outlier.max_ejection_percent) {
            tracing::warn!(route = %self.route, %endpoint, address = %addr, failures = state.consecutive_failures, ejected, "not ejected: max_ejection_percent of the route's addresses are ejected already");
            return;
        }
        // The multiplier comes down by one for every base time spent back in service.
        let healthy_for = state.returned_at.map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
        let credit = u32::try_from(healthy_for.as_nanos() / outlier.base_ejection_time.as_nanos().max(1)).unwrap_or(u32::MAX);
        state.times_ejected = state.times_ejected.saturating_sub(credit) + 1;
        let time = outlier.base_ejection_time.saturating_mul(state.times_ejected).min(outlier.max_ejection_time);
        state.ejected_until = Some(now + time);
        state.consecutive_failures = 0;
        tracing::warn!(route = %self.route, %endpoint, address = %addr, ejection = ?time, times = state.times_ejected, "address ejected: consecutive connect or handshake failures");
        self.count(|m, labels| m.endpoint_ejections.add(labels, 1), endpoint);
        self.publish(endpoint, health);
    }

    /// Records an active probe of `addr`; flips its health at the thresholds.
    pub fn probed(&self, endpoint: &str, addr: SocketAddr, ok: bool, took: Duration, check: &HealthCheck) {
        self.count(
            |m, labels| {
                m.health_check_seconds.observe(labels, took);
                if !ok {
                    m.health_check_failures.add(labels, 1);
                }
            },
            endpoint,
        );
        let mut endpoints = self.lock();
        let health = endpoints.entry(endpoint.to_owned()).or_default();
        let state = health.addresses.entry(addr).or_default();
        state.last_probe = Some((took, ok));
        let flipped = if ok {
            state.passes += 1;
            state.fails = 0;
            let flip = state.unhealthy && state.passes >= check.healthy_threshold;
            if flip {
                state.unhealthy = false;
                tracing::info!(route = %self.route, %endpoint, address = %addr, "health check passed: the address is healthy again");
            }
            flip
        } else {
            state.fails += 1;
            state.passes = 0;
            let flip = !state.unhealthy && state.fails >= check.unhealthy_threshold;
            if flip {
                state.unhealthy = true;
                tracing::warn!(route = %self.route, %endpoint, address = %addr, failures = state.fails, "health check failed: the address is unhealthy and takes no traffic");
            }
            flip
        };
        if flipped {
            self.publish(endpoint, health);
        }
    }

    /// Forgets the addresses of `endpoint` that its name no longer resolves to.
    pub fn resolved(&self, endpoint: &str, addrs: &[SocketAddr]) {
        let mut endpoints = self.lock();
        let health = endpoints.entry(endpoint.to_owned()).or_default();
        let before = health.addresses.len();
        health.addresses.retain(|a, _| addrs.contains(a));
        for addr in addrs {
            health.addresses.entry(*addr).or_default();
        }
        if health.addresses.len() != before || before != addrs.len() {
            self.publish(endpoint, health);
        }
    }

    /// `/config_dump`'s view of this route's endpoints, best priority first.
    fn report(&self, now: Instant) -> serde_json::Value {
        let endpoints = self.lock();
        let mut sorted: Vec<(&String, &EndpointHealth)> = endpoints.iter().collect();
        sorted.sort_by_key(|(label, e)| (e.priority, *label));
        sorted
            .into_iter()
            .map(|(label, e)| {
                let addresses: Vec<serde_json::Value> = e
                    .addresses
                    .iter()
                    .map(|(addr, a)| {
                        serde_json::json!({
                            "address": addr.to_string(),
                            "state": if a.ejected_until.is_some() { "ejected" } else if a.unhealthy { "unhealthy" } else { "healthy" },
                            "ejected_for_seconds": a.ejected_until.map(|until| until.saturating_duration_since(now).as_secs_f64()),
                            "times_ejected": a.times_ejected,
                            "consecutive_failures": a.consecutive_failures,
                            "last_probe": a.last_probe.map(|(took, ok)| serde_json::json!({ "ok": ok, "seconds": took.as_secs_f64() })),
                        })
                    })
                    .collect();
                serde_json::json!({ "endpoint": label, "priority": e.priority, "weight": e.weight, "addresses": addresses })
            })
            .collect()
    }
}

/// How many of `total` addresses may be ejected at once: the percentage, rounded down,
/// but at least one (as Envoy does) unless the percentage is 0.
fn ejection_cap(total: usize, percent: u32) -> usize {
    if percent == 0 {
        return 0;
    }
    (total * percent as usize / 100).max(1)
}

/// The health of every route's endpoints, kept across reloads.
#[derive(Default)]
pub struct Registry {
    metrics: Option<Arc<Metrics>>,
    routes: Mutex<HashMap<String, Arc<RouteState>>>,
}

impl Registry {
    /// A registry that keeps `metrics`' endpoint series up to date.
    pub fn new(metrics: Arc<Metrics>) -> Registry {
        Registry { metrics: Some(metrics), routes: Mutex::default() }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<RouteState>>> {
        self.routes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The state of route `name` (made if new), with its endpoints' priorities and
    /// weights as configured now; `observed` exports its endpoint gauges. Nothing is
    /// forgotten here: a build may still be refused, so [`Registry::retain`] prunes once
    /// a table is in force.
    pub fn route(&self, name: &str, endpoints: &[Endpoint], observed: bool) -> Arc<RouteState> {
        let state = self
            .lock()
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(RouteState { route: name.to_owned(), metrics: self.metrics.clone(), observed: observed.into(), endpoints: Mutex::default() })
            })
            .clone();
        {
            let mut known = state.lock();
            if state.observed.swap(observed, Ordering::Relaxed) && !observed {
                for label in known.keys() {
                    state.forget(label);
                }
            }
            let labels: Vec<String> = endpoints.iter().map(|e| e.address.to_string()).collect();
            for (label, e) in labels.iter().zip(endpoints) {
                let health = known.entry(label.clone()).or_default();
                (health.priority, health.weight) = (e.priority, e.weight);
                state.publish(label, health);
            }
        }
        state
    }

    /// Keeps only the routes and endpoints of the table now in force (`wanted`: route
    /// name -> its endpoint addresses); the others' state and metric series go.
    pub fn retain(&self, wanted: &HashMap<&str, Vec<String>>) {
        self.lock().retain(|name, state| {
            let endpoints = wanted.get(name.as_str());
            state.lock().retain(|label, _| {
                let keep = endpoints.is_some_and(|list| list.contains(label));
                if !keep {
                    state.forget(label);
                }
                keep
            });
            endpoints.is_some()
        });
    }

    /// Every route's endpoints and address states, for `/config_dump`.
    pub fn report(&self) -> serde_json::Value {
        let now = Instant::now();
        let routes = self.lock();
        let sorted: BTreeMap<&String, &Arc<RouteState>> = routes.iter().collect();
        sorted.into_iter().map(|(name, state)| (name.clone(), state.report(now))).collect::<serde_json::Map<_, _>>().into()
    }
}

impl RouteState {
    /// Removes the metric series of `endpoint`.
    fn forget(&self, endpoint: &str) {
        self.count(
            |m, labels| {
                m.endpoint_healthy.remove(labels);
                m.endpoint_ejected.remove(labels);
            },
            endpoint,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HealthCheckKind, HostPort};

    fn endpoint(address: &str, priority: u32, weight: u32) -> Endpoint {
        Endpoint { address: HostPort::parse(address).unwrap(), priority, weight }
    }

    fn outlier(failures: u32, percent: u32) -> OutlierDetection {
        OutlierDetection {
            consecutive_failures: failures,
            base_ejection_time: Duration::from_secs(10),
            max_ejection_percent: percent,
            max_ejection_time: Duration::from_secs(25),
        }
    }

    fn resolver() -> Resolver {
        Resolver::new(&crate::config::ResolverSettings::default()).unwrap()
    }

    async fn order(set: &EndpointSet) -> Vec<SocketAddr> {
        set.candidates(&resolver(), Duration::from_secs(1), None).await.unwrap().iter().map(|c| c.addr).collect()
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[tokio::test]
    async fn lower_priority_first_then_the_next_weighted_inside() {
        let registry = Registry::default();
        let list = [endpoint("127.0.0.9:1", 1, 1), endpoint("127.0.0.1:1", 0, 3), endpoint("127.0.0.2:1", 0, 1)];
        let set = EndpointSet::new("r", &list, None, None, &registry);
        let mut firsts = Vec::new();
        for _ in 0..8 {
            let got = order(&set).await;
            assert_eq!(got.len(), 3);
            assert_eq!(got[2], addr("127.0.0.9:1"), "priority 1 comes last: {got:?}");
            firsts.push(got[0]);
        }
        // Weights 3:1 inside priority 0.
        assert_eq!(firsts.iter().filter(|a| **a == addr("127.0.0.1:1")).count(), 6, "{firsts:?}");
        assert_eq!(firsts.iter().filter(|a| **a == addr("127.0.0.2:1")).count(), 2, "{firsts:?}");
    }

    #[tokio::test]
    async fn consecutive_failures_eject_for_a_growing_capped_time_and_a_success_resets() {
        let metrics = Arc::new(Metrics::new(None));
        let registry = Registry::new(metrics.clone());
        let list = [endpoint("127.0.0.1:1", 0, 1), endpoint("127.0.0.2:1", 1, 1)];
        let set = EndpointSet::new("r", &list, Some(outlier(2, 50)), None, &registry);
        assert_eq!(order(&set).await.len(), 2);
        let primary = addr("127.0.0.1:1");
        set.failed(primary);
        set.succeeded(primary);
        set.failed(primary);
        assert_eq!(order(&set).await.len(), 2, "a success in between resets the count");
        set.failed(primary);
        assert_eq!(order(&set).await, [addr("127.0.0.2:1")], "ejected after two in a row");
        let text = metrics.encode();
        assert!(text.contains("strait_upstream_endpoint_ejected{route=\"r\",endpoint=\"127.0.0.1:1\"} 1"), "{text}");
        assert!(text.contains("strait_upstream_endpoint_ejections_total{route=\"r\",endpoint=\"127.0.0.1:1\"} 1"), "{text}");
        // Ejection times: base x times ejected, capped (driven by hand with `now`).
        let state = &set.state;
        let label = "127.0.0.1:1";
        let o = outlier(1, 100);
        let until = |s: &RouteState| s.lock()[label].addresses[&primary].ejected_until.unwrap();
        let start = Instant::now();
        let first = until(state);
        assert!(first > start + Duration::from_secs(9) && first <= start + Duration::from_secs(10), "first ejection ~10s");
        // Return at once and fail again: twice the base; then capped at 25s.
        for (n, expected) in [(2u32, 20u64), (3, 25)] {
            let now = until(state);
            state.usable(&set, &[Candidate { addr: primary, endpoint: 0, priority: 0 }], now);
            state.failed(label, primary, &o, now);
            assert_eq!(until(state) - now, Duration::from_secs(expected), "ejection {n}");
        }
        // Time spent back in service earns the multiplier down: 3 -> 3 - 2 + 1 = 2.
        let now = until(state);
        state.usable(&set, &[Candidate { addr: primary, endpoint: 0, priority: 0 }], now);
        let later = now + Duration::from_secs(20);
        state.failed(label, primary, &o, later);
        assert_eq!(until(state) - later, Duration::from_secs(20));
    }

    #[tokio::test]
    async fn never_more_than_the_share_and_at_least_one() {
        assert_eq!(ejection_cap(2, 10), 1);
        assert_eq!(ejection_cap(10, 50), 5);
        assert_eq!(ejection_cap(3, 0), 0);
        let registry = Registry::default();
        let list = [endpoint("127.0.0.1:1", 0, 1), endpoint("127.0.0.2:1", 0, 1)];
        let set = EndpointSet::new("r", &list, Some(outlier(1, 50)), None, &registry);
        order(&set).await;
        set.failed(addr("127.0.0.1:1"));
        set.failed(addr("127.0.0.2:1"));
        assert_eq!(order(&set).await, [addr("127.0.0.2:1")], "one of two at 50%");
    }

    #[tokio::test]
    async fn nothing_usable_tries_everything_and_probes_flip_at_thresholds() {
        let registry = Registry::default();
        let check = HealthCheck {
            kind: HealthCheckKind::Tcp,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            healthy_threshold: 2,
            unhealthy_threshold: 2,
        };
        let list = [endpoint("127.0.0.1:1", 0, 1)];
        let set = EndpointSet::new("r", &list, None, Some(check), &registry);
        let only = addr("127.0.0.1:1");
        let probe = |ok| set.state.probed("127.0.0.1:1", only, ok, Duration::from_millis(1), &check);
        probe(false);
        assert!(set.state.lock()["127.0.0.1:1"].addresses[&only].usable(), "one failure is under the threshold");
        probe(false);
        assert!(!set.state.lock()["127.0.0.1:1"].addresses[&only].usable());
        assert_eq!(order(&set).await, [only], "panic mode: the only address is still tried");
        probe(true);
        assert!(!set.state.lock()["127.0.0.1:1"].addresses[&only].usable());
        probe(true);
        assert!(set.state.lock()["127.0.0.1:1"].addresses[&only].usable());
    }

    #[tokio::test]
    async fn state_survives_a_rebuild_with_the_same_endpoints_and_goes_with_them() {
        let metrics = Arc::new(Metrics::new(None));
        let registry = Registry::new(metrics.clone());
        let list = [endpoint("127.0.0.1:1", 0, 1), endpoint("127.0.0.2:1", 0, 1)];
        let set = EndpointSet::new("r", &list, Some(outlier(1, 50)), None, &registry);
        order(&set).await;
        set.failed(addr("127.0.0.1:1"));
        let again = EndpointSet::new("r", &list, Some(outlier(1, 50)), None, &registry);
        assert!(Arc::ptr_eq(&set.state, &again.state));
        assert_eq!(order(&again).await, [addr("127.0.0.2:1")], "still ejected after the rebuild");
        let fewer = EndpointSet::new("r", &list[1..], Some(outlier(1, 50)), None, &registry);
        assert!(fewer.state.lock().contains_key("127.0.0.1:1"), "a build alone (it may be refused) forgets nothing");
        registry.retain(&HashMap::from([("r", vec!["127.0.0.2:1".to_owned()])]));
        assert!(!fewer.state.lock().contains_key("127.0.0.1:1"));
        let text = metrics.encode();
        assert!(!text.contains("endpoint_healthy{route=\"r\",endpoint=\"127.0.0.1:1\"}"), "{text}");
        assert!(!text.contains("endpoint_ejected{route=\"r\",endpoint=\"127.0.0.1:1\"}"), "{text}");
        registry.retain(&HashMap::new());
        assert_eq!(registry.report(), serde_json::json!({}));
    }
}
