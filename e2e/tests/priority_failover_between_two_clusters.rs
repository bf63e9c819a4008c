//! Two "remote clusters" (an ingress in front of its own MariaDB each) behind one egress
//! route with priorities: the primary ingress is killed under a steady, bounded loop of
//! new mariadb connections, and later started again on its port.
//! - Active health checks (`kind = "tcp"`): the primary is marked unhealthy within one
//!   interval plus a margin, connections go to the secondary, and return once it is
//!   healthy again; the metrics, `/config_dump` and the log show each transition.
//! - Passive outlier detection only: the primary is ejected after the configured failures
//!   in a row (each one fell through to the secondary), and takes traffic again when its
//!   ejection ends.
//!
//! Connects to a killed ingress are refused at once and fall through to the next
//! priority, so no client fails at any point after the kill; only a connection open
//! through the primary at the kill may. The measured detection and return times are
//! printed (`failover timings`) for the record.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strait_e2e::config::{inline, quoted, Config, Listener, Route};
use strait_e2e::*;

/// Health-check interval of the active variant.
const INTERVAL: Duration = Duration::from_secs(1);
/// Scheduling slack on a shared 2-CPU machine.
const MARGIN: Duration = Duration::from_secs(3);
/// Longest any one phase may take.
const PHASE_LIMIT: Duration = Duration::from_secs(30);

/// One client connection of the loop: when it began and which MariaDB answered.
type Sample = (Instant, Result<u16, String>);

/// The two clusters and the egress in front of them.
struct Clusters {
    pki: Pki,
    primary_db: MariaDb,
    secondary_db: MariaDb,
    primary: Option<Gateway>,
    _secondary: Gateway,
    primary_port: u16,
    egress: Gateway,
    plain_port: u16,
}

impl Clusters {
    fn start(route_settings: &[(&str, String)]) -> Clusters {
        let pki = Pki::reference();
        let (primary_db, secondary_db) = (MariaDb::start(), MariaDb::start());
        let (primary, primary_port) = Gateway::reference_ingress(&pki, primary_db.port);
        let (secondary, secondary_port) = Gateway::reference_ingress(&pki, secondary_db.port);
        let (a, b) = (format!("127.0.0.1:{primary_port}"), format!("127.0.0.1:{secondary_port}"));
        let mut route =
            Route::several("to-ingress", &[(&a, 0), (&b, 1)]).mutual_origination(&pki.path("egress"), SERVICE_HOST).set("connect_timeout", quoted("2s"));
        for (key, value) in route_settings {
            route = route.set(key, value);
        }
        let config = Config::new().listener(Listener::plain("mysql-plain", "to-ingress")).route(route);
        let egress = Gateway::start(Role::Egress, pki.dir.path(), &config.toml());
        let plain_port = egress.port("mysql-plain");
        Clusters { pki, primary_db, secondary_db, primary: Some(primary), _secondary: secondary, primary_port, egress, plain_port }
    }

    fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.primary_port)
    }

    /// The primary address's state in `/config_dump` (`healthy`, `unhealthy`, `ejected`).
    fn primary_state(&self) -> String {
        let (status, body) = self.egress.admin("GET", "/config_dump");
        assert_eq!(status, 200, "{body}");
        let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
        let first = &dump["endpoints"]["to-ingress"][0];
        assert_eq!(first["endpoint"], self.endpoint(), "{}", dump["endpoints"]);
        first["addresses"][0]["state"].as_str().unwrap_or("unknown").to_owned()
    }

    fn metrics(&self) -> String {
        self.egress.admin("GET", "/metrics").1
    }

    /// The value of `name{route="to-ingress",endpoint=<primary>}`, 0 when absent.
    fn primary_metric(&self, name: &str) -> f64 {
        let series = format!("{name}{{route=\"to-ingress\",endpoint=\"{}\"}} ", self.endpoint());
        self.metrics().lines().find_map(|l| l.strip_prefix(&series).and_then(|v| v.trim().parse().ok())).unwrap_or(0.0)
    }

    fn kill_primary(&mut self) -> Instant {
        let mut primary = self.primary.take().expect("the primary runs");
        primary.proc.kill();
        assert!(refuses(self.primary_port), "the primary ingress still accepts after being killed");
        Instant::now()
    }

    /// Starts the primary ingress again on its port.
    fn restart_primary(&mut self) -> Instant {
        let listener = ingress_listener(&self.pki.path("ingress")).port(self.primary_port);
        let config = ingress_config_with(listener, self.primary_db.port);
        self.primary = Some(Gateway::start(Role::Ingress, self.pki.dir.path(), &config.toml()));
        Instant::now()
    }
}

/// A steady, bounded loop of new connections through the egress, each asking which
/// MariaDB answered.
struct Load {
    samples: Arc<Mutex<Vec<Sample>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(port: u16) -> Load {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (samples.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(150);
            for _ in 0..3000 {
                if st.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                let begun = Instant::now();
                let answer = mariadb_sql(port, "SELECT @@port").map(|out| out.trim().parse::<u16>().unwrap_or(0));
                s.lock().unwrap().push((begun, answer));
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        Load { samples, stop, thread: Some(thread) }
    }

    /// Waits until a connection begun after `since` was answered by `db_port`; returns
    /// when it began.
    fn wait_for_answer(&self, db_port: u16, since: Instant) -> Instant {
        let deadline = Instant::now() + PHASE_LIMIT;
        loop {
            if let Some((at, _)) = self.samples.lock().unwrap().iter().find(|(at, r)| *at > since && r.as_ref().ok() == Some(&db_port)) {
                return *at;
            }
            assert!(Instant::now() < deadline, "no connection answered by port {db_port} within {PHASE_LIMIT:?}: {:?}", self.samples.lock().unwrap().last());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every failed connection begun after `since`.
    fn failures_after(&self, since: Instant) -> Vec<String> {
        self.samples.lock().unwrap().iter().filter(|(at, _)| *at > since).filter_map(|(_, r)| r.as_ref().err().cloned()).collect()
    }

    /// Connections begun after `since` and answered by `db_port`.
    fn answered_after(&self, db_port: u16, since: Instant) -> usize {
        self.samples.lock().unwrap().iter().filter(|(at, r)| *at > since && r.as_ref().ok() == Some(&db_port)).count()
    }

    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.join().unwrap();
        }
        let count = self.samples.lock().unwrap().len();
        count
    }
}

/// Polls `check` until it holds; returns when it first did.
fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) -> Instant {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn active_health_check_fails_over_within_one_interval_and_traffic_returns() {
    let check = inline(&[
        ("kind", quoted("tcp")),
        ("interval", quoted("1s")),
        ("timeout", quoted("500ms")),
        ("unhealthy_threshold", "1".into()),
        ("healthy_threshold", "1".into()),
    ]);
    let mut clusters = Clusters::start(&[("health_check", check)]);
    let load = Load::start(clusters.plain_port);
    let started = Instant::now();
    load.wait_for_answer(clusters.primary_db.port, started);
    assert_eq!(clusters.primary_state(), "healthy");
    assert_eq!(clusters.primary_metric("strait_upstream_endpoint_healthy"), 1.0, "{}", clusters.metrics());

    let killed = clusters.kill_primary();
    let detected = wait_until("primary marked unhealthy", INTERVAL + MARGIN, || clusters.primary_state() == "unhealthy");
    assert_eq!(clusters.primary_metric("strait_upstream_endpoint_healthy"), 0.0, "{}", clusters.metrics());
    assert!(!clusters.egress.log_lines("health check failed: the address is unhealthy").is_empty(), "{}", clusters.egress.proc.output());
    let served = load.wait_for_answer(clusters.secondary_db.port, detected);
    // Only the standby serves now, and nobody failed after detection.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(load.answered_after(clusters.primary_db.port, detected), 0);
    assert_eq!(load.failures_after(detected), Vec::<String>::new());
    assert!(clusters.primary_metric("strait_upstream_health_check_failures_total") >= 1.0, "{}", clusters.metrics());
    let secondary_series = clusters.metrics().lines().find(|l| l.starts_with("strait_upstream_endpoint_failovers_total")).map(str::to_owned);
    assert!(secondary_series.is_some_and(|l| !l.ends_with(" 0")), "{}", clusters.metrics());

    let restarted = clusters.restart_primary();
    let healthy = wait_until("primary healthy again", INTERVAL + MARGIN, || clusters.primary_state() == "healthy");
    assert_eq!(clusters.primary_metric("strait_upstream_endpoint_healthy"), 1.0, "{}", clusters.metrics());
    assert!(!clusters.egress.log_lines("health check passed: the address is healthy again").is_empty(), "{}", clusters.egress.proc.output());
    let returned = load.wait_for_answer(clusters.primary_db.port, healthy);
    assert_eq!(load.failures_after(killed), Vec::<String>::new(), "no client failed after the kill: each refused connect fell through");
    let total = load.finish();
    eprintln!(
        "failover timings (active, interval {INTERVAL:?}): kill -> unhealthy {:?}; kill -> first standby answer after detection {:?}; \
         restart -> healthy {:?}; restart -> first primary answer {:?}; {total} connections, 0 failed",
        detected - killed,
        served - killed,
        healthy - restarted,
        returned - restarted
    );
}

#[test]
fn passive_outlier_detection_ejects_after_the_failures_and_the_primary_returns() {
    let outlier = inline(&[("consecutive_failures", "3".into()), ("base_ejection_time", quoted("3s")), ("max_ejection_percent", "50".into())]);
    let mut clusters = Clusters::start(&[("outlier_detection", outlier)]);
    let load = Load::start(clusters.plain_port);
    load.wait_for_answer(clusters.primary_db.port, Instant::now());

    let killed = clusters.kill_primary();
    let ejected = wait_until("primary ejected", PHASE_LIMIT, || clusters.primary_state() == "ejected");
    assert_eq!(clusters.primary_metric("strait_upstream_endpoint_ejected"), 1.0, "{}", clusters.metrics());
    assert_eq!(clusters.primary_metric("strait_upstream_endpoint_ejections_total"), 1.0, "{}", clusters.metrics());
    let line = clusters.egress.log_lines("address ejected: consecutive connect or handshake failures");
    assert_eq!(line.len(), 1, "{}", clusters.egress.proc.output());
    // Three refused connects fell through to the standby, then none were tried.
    let tried_dead = clusters
        .egress
        .access_log()
        .iter()
        .filter(|l| l.contains("outcome=closed") && l.contains(&format!("upstream=127.0.0.1:{}", clusters.primary_port)))
        .count();
    let served = load.wait_for_answer(clusters.secondary_db.port, ejected);
    let connections_to_eject = load.answered_after(clusters.secondary_db.port, killed);
    assert_eq!(load.failures_after(killed), Vec::<String>::new(), "every refused connect fell through");

    let restarted = clusters.restart_primary();
    // The ejection (3s, the first) ends and the next connection tries the primary again.
    let returned = load.wait_for_answer(clusters.primary_db.port, restarted);
    wait_until("primary healthy in the dump", PHASE_LIMIT, || clusters.primary_state() == "healthy");
    assert_eq!(clusters.primary_metric("strait_upstream_endpoint_ejected"), 0.0, "{}", clusters.metrics());
    assert!(!clusters.egress.log_lines("ejection ended: the address takes traffic again").is_empty());
    let total = load.finish();
    eprintln!(
        "failover timings (passive, 3 failures, 3s ejection): kill -> ejected {:?} ({connections_to_eject} standby answers by then, \
         {tried_dead} closed via the primary in all); kill -> standby serving {:?}; restart -> first primary answer {:?}; {total} connections, 0 failed",
        ejected - killed,
        served - killed,
        returned - restarted
    );
}
