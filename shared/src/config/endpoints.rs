//! A route's upstream endpoints, passive outlier detection and active health checks:
//! the settings as written, their checked form, and their validation.
//!
//! `upstream = "host:port"` is the one-endpoint form of `upstreams = [{ address, priority,
//! weight }, ...]`; both end up as a list of [`Endpoint`]s. The outlier-detection and
//! health-check tables are fully typed by serde (with defaults) and used as they are.

use std::collections::HashSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::values::HostPort;

/// One entry of `upstreams` as written.
#[derive(Debug, Deserialize)]
pub struct RawEndpoint {
    /// `host:port`, resolved on its own.
    pub address: String,
    /// Lower is preferred: traffic goes to the lowest priority with a healthy address.
    #[serde(default)]
    pub priority: u32,
    /// Share of connections among the endpoints of one priority.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    1
}

/// One checked upstream endpoint of a route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    /// Where it connects (a DNS name, resolved on its own, or an IP literal).
    pub address: HostPort,
    /// Lower is preferred.
    pub priority: u32,
    /// Share among the endpoints of its priority (1 to [`MAX_WEIGHT`]).
    pub weight: u32,
}

/// Highest endpoint weight (Envoy's `load_balancing_weight` limit).
pub const MAX_WEIGHT: u32 = 128;

/// Envoy's `outlier_detection` for consecutive connect failures: an address that fails
/// `consecutive_failures` times in a row (TCP connect or origination handshake) is
/// ejected for `base_ejection_time` times the number of times it has been ejected, at
/// most `max_ejection_time`; never more than `max_ejection_percent` of a route's
/// addresses at once (at least one, unless the percentage is 0).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct OutlierDetection {
    /// Failures in a row that eject an address.
    #[serde(default = "default_consecutive_failures")]
    pub consecutive_failures: u32,
    /// Ejection time of a first ejection; each further one adds as much.
    #[serde(default = "default_base_ejection_time", with = "humantime_serde")]
    pub base_ejection_time: Duration,
    /// Largest share of the route's addresses ejected at once, in percent.
    #[serde(default = "default_max_ejection_percent")]
    pub max_ejection_percent: u32,
    /// Longest ejection.
    #[serde(default = "default_max_ejection_time", with = "humantime_serde")]
    pub max_ejection_time: Duration,
}

fn default_consecutive_failures() -> u32 {
    5
}

fn default_base_ejection_time() -> Duration {
    Duration::from_secs(30)
}

fn default_max_ejection_percent() -> u32 {
    10
}

fn default_max_ejection_time() -> Duration {
    Duration::from_secs(300)
}

/// What an active health check does to each address of an endpoint.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckKind {
    /// A TCP connect.
    Tcp,
    /// A TCP connect and a full origination handshake with the route's credential and
    /// verification (a remote gateway that accepts TCP but cannot do mTLS is unhealthy).
    Tls,
}

/// Active health checking of every address of every endpoint of a route.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
pub struct HealthCheck {
    /// TCP connect or full TLS handshake.
    pub kind: HealthCheckKind,
    /// Time between probes of one address.
    #[serde(default = "default_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// Longest wait for one probe.
    #[serde(default = "default_probe_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Passed probes in a row that make an unhealthy address healthy.
    #[serde(default = "default_healthy_threshold")]
    pub healthy_threshold: u32,
    /// Failed probes in a row that make a healthy address unhealthy.
    #[serde(default = "default_unhealthy_threshold")]
    pub unhealthy_threshold: u32,
}

fn default_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_probe_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_healthy_threshold() -> u32 {
    1
}

fn default_unhealthy_threshold() -> u32 {
    2
}

/// Shortest health-check interval: every address is probed this often.
const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// The route's endpoints from `upstream` or `upstreams`; every problem goes to `add`
/// (field, message). `None` when any was found.
pub(super) fn endpoints(upstream: Option<&str>, upstreams: Option<&[RawEndpoint]>, mut add: impl FnMut(&str, String)) -> Option<Vec<Endpoint>> {
    match (upstream, upstreams) {
        (Some(_), Some(_)) => {
            add("upstreams", "give either `upstream` (one endpoint) or `upstreams` (several), not both".into());
            None
        }
        (None, None) => {
            add("upstream", "missing: give `upstream = \"host:port\"` or `upstreams = [{ address = \"host:port\", priority = 0 }, ...]`".into());
            None
        }
        (Some(text), None) => {
            let address = match super::sni::dynamic_port(text) {
                Some(port) => port.map(|port| HostPort { host: super::sni::SNI_HOST.into(), port }),
                None => HostPort::parse(text),
            };
            address.map_err(|m| add("upstream", m)).ok().map(|address| vec![Endpoint { address, priority: 0, weight: 1 }])
        }
        (None, Some([])) => {
            add("upstreams", "an empty list reaches nothing: give at least one { address = \"host:port\" }".into());
            None
        }
        (None, Some(list)) => {
            let mut seen = HashSet::new();
            let mut checked = Vec::new();
            let mut clean = true;
            for (i, raw) in list.iter().enumerate() {
                let field = format!("upstreams[{i}]");
                match HostPort::parse(&raw.address) {
                    Ok(address) => {
                        if !seen.insert(address.to_string()) {
                            add(&format!("{field}.address"), format!("{address} is listed twice: each endpoint once"));
                            clean = false;
                        }
                        checked.push(Endpoint { address, priority: raw.priority, weight: raw.weight });
                    }
                    Err(m) => {
                        add(&format!("{field}.address"), m);
                        clean = false;
                    }
                }
                if !(1..=MAX_WEIGHT).contains(&raw.weight) {
                    add(&format!("{field}.weight"), format!("must be between 1 and {MAX_WEIGHT}"));
                    clean = false;
                }
            }
            clean.then_some(checked)
        }
    }
}

/// Checks `outlier_detection`; problems go to `add`.
pub(super) fn outlier_detection(o: &OutlierDetection, mut add: impl FnMut(&str, String)) {
    if o.consecutive_failures == 0 {
        add("outlier_detection.consecutive_failures", "must be at least 1".into());
    }
    if o.base_ejection_time.is_zero() {
        add("outlier_detection.base_ejection_time", "must be more than 0 (an ejection of 0s ejects nothing)".into());
    }
    if o.max_ejection_percent > 100 {
        add("outlier_detection.max_ejection_percent", "is a percentage: 0 to 100".into());
    }
    if o.max_ejection_time < o.base_ejection_time {
        add("outlier_detection.max_ejection_time", format!("must be at least base_ejection_time ({:?})", o.base_ejection_time));
    }
}

/// Checks `health_check`; `originates` says whether the route has origination TLS
/// (which a `tls` check needs). Problems go to `add`.
pub(super) fn health_check(h: &HealthCheck, originates: bool, mut add: impl FnMut(&str, String)) {
    if h.interval < MIN_INTERVAL {
        add("health_check.interval", format!("must be at least {MIN_INTERVAL:?} (every address is probed this often)"));
    }
    if h.timeout.is_zero() || h.timeout > h.interval {
        add("health_check.timeout", "must be more than 0 and at most the interval".into());
    }
    if h.healthy_threshold == 0 {
        add("health_check.healthy_threshold", "must be at least 1".into());
    }
    if h.unhealthy_threshold == 0 {
        add("health_check.unhealthy_threshold", "must be at least 1".into());
    }
    if h.kind == HealthCheckKind::Tls && !originates {
        add("health_check.kind", "a \"tls\" check handshakes with the route's upstream_tls, and this route sends plaintext: use kind = \"tcp\"".into());
    }
}

/// With several endpoint hosts, the origination SNI (and verified name) cannot default
/// to "the" upstream host: it must be explicit.
pub(super) fn needs_explicit_sni(endpoints: &[Endpoint]) -> bool {
    endpoints.iter().any(|e| e.address.host != endpoints[0].address.host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(address: &str, priority: u32, weight: u32) -> RawEndpoint {
        RawEndpoint { address: address.into(), priority, weight }
    }

    fn check(upstream: Option<&str>, upstreams: Option<&[RawEndpoint]>) -> (Option<Vec<Endpoint>>, Vec<String>) {
        let mut found = Vec::new();
        let result = endpoints(upstream, upstreams, |field, message| found.push(format!("{field}: {message}")));
        (result, found)
    }

    #[test]
    fn one_upstream_is_one_endpoint_of_priority_zero() {
        let (list, found) = check(Some("DB.example.com:5432"), None);
        assert!(found.is_empty(), "{found:?}");
        assert_eq!(list.unwrap(), [Endpoint { address: HostPort::parse("db.example.com:5432").unwrap(), priority: 0, weight: 1 }]);
    }

    #[test]
    fn both_forms_neither_empty_duplicates_and_weights_are_findings() {
        let one = [raw("a:1", 0, 1)];
        assert!(check(Some("a:1"), Some(&one)).1[0].starts_with("upstreams: give either"));
        assert!(check(None, None).1[0].starts_with("upstream: missing"));
        assert!(check(None, Some(&[])).1[0].starts_with("upstreams: an empty list"));
        let bad = [raw("a:1", 0, 1), raw("A:1", 1, 1), raw("b", 0, 1), raw("c:2", 0, 0), raw("d:2", 0, 129)];
        let (list, found) = check(None, Some(&bad));
        assert!(list.is_none());
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found[0].starts_with("upstreams[1].address: a:1 is listed twice"), "{found:?}");
        assert!(found[1].starts_with("upstreams[2].address: \"b\" is not host:port"), "{found:?}");
        assert_eq!(found[2], "upstreams[3].weight: must be between 1 and 128");
        assert_eq!(found[3], "upstreams[4].weight: must be between 1 and 128");
    }

    #[test]
    fn outlier_and_health_check_limits() {
        let mut found = Vec::new();
        let o = OutlierDetection {
            consecutive_failures: 0,
            base_ejection_time: Duration::from_secs(10),
            max_ejection_percent: 101,
            max_ejection_time: Duration::from_secs(5),
        };
        outlier_detection(&o, |f, m| found.push(format!("{f}: {m}")));
        assert_eq!(found.len(), 3, "{found:?}");
        found.clear();
        let h = HealthCheck {
            kind: HealthCheckKind::Tls,
            interval: Duration::from_millis(10),
            timeout: Duration::from_secs(1),
            healthy_threshold: 0,
            unhealthy_threshold: 1,
        };
        health_check(&h, false, |f, m| found.push(format!("{f}: {m}")));
        assert_eq!(found.len(), 4, "{found:?}");
        assert!(found[3].starts_with("health_check.kind: a \"tls\" check"), "{found:?}");
    }
}
