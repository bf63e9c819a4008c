//! Istio's Grafana dashboards and Kiali's mTLS lock work on Strait's metrics unchanged. A
//! real Prometheus scrapes the pair's metrics ports (`/stats/prometheus`) every second
//! while the tutorial's SQL, and more queries after it, cross egress -> mTLS -> ingress
//! -> MariaDB. The PromQL of the TCP panels of Istio's published dashboards and of
//! Kiali's security-policy appender, copied from their sources with the dashboard
//! variables filled in, must return the series those tools draw, with the labels they
//! key on.
//!
//! The two gateways play Istio's: the egress is `istio-egressgateway` in `istio-system`
//! of `client-cluster`, the ingress `istio-ingressgateway` in `istio-system` of
//! `server-cluster`, in front of `mysql.default.svc.cluster.local` (dnsmasq resolves it
//! and `$SERVICE_URL` to loopback, so `destination_service` is a name, as in a cluster).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strait_e2e::config::{Config, Listener, Route};
use strait_e2e::dns::Dnsmasq;
use strait_e2e::http_ports::bound_address;
use strait_e2e::prometheus::{Prometheus, Sample, Target};
use strait_e2e::*;

/// The in-cluster service behind the ingress, as Istio names it.
const MYSQL_SERVICE: &str = "mysql.default.svc.cluster.local";
const EGRESS_POD: &str = "istio-egressgateway-7c9f8d6b5-x2x4q";
const INGRESS_POD: &str = "istio-ingressgateway-5d4c8b7f9-k8l2m";
const TELEMETRY_EGRESS: &str = "[telemetry]\nworkload_name = \"istio-egressgateway\"\nworkload_namespace = \"istio-system\"\ncluster_id = \"client-cluster\"\n";
const TELEMETRY_INGRESS: &str =
    "[telemetry]\nworkload_name = \"istio-ingressgateway\"\nworkload_namespace = \"istio-system\"\ncluster_id = \"server-cluster\"\n";
/// How long the queries may take to show the traffic (scrapes are 1 s apart; `irate`
/// needs two that differ).
const QUERY_LIMIT: Duration = Duration::from_secs(20);
/// The most queries the background client runs (one connection each).
const MAX_QUERIES: usize = 300;

/// A panel's query and what it must show: one series per entry of `series` (each
/// entry: labels the series must carry), every value above zero (below, for a panel
/// that negates its query).
struct Panel {
    /// Dashboard and panel (and target) the query comes from.
    from: &'static str,
    promql: String,
    series: Vec<Vec<(&'static str, &'static str)>>,
    negated: bool,
}

impl Panel {
    fn new(from: &'static str, promql: &str, series: &[&[(&'static str, &'static str)]]) -> Panel {
        Panel { from, promql: promql.to_owned(), series: series.iter().map(|s| s.to_vec()).collect(), negated: false }
    }

    fn shows(&self, samples: &[Sample]) -> bool {
        let moving = |s: &Sample| if self.negated { s.value < 0.0 } else { s.value > 0.0 };
        samples.len() == self.series.len() && self.series.iter().all(|labels| samples.iter().any(|s| moving(s) && labels.iter().all(|(k, v)| s.label(k) == *v)))
    }
}

#[test]
fn istio_dashboards_and_kiali_queries_work_on_strait_metrics() {
    let started = Instant::now();
    let pki = Pki::reference();
    let db = MariaDb::start();
    let dns = Dnsmasq::start(&[(SERVICE_HOST, Ipv4Addr::LOCALHOST), (MYSQL_SERVICE, Ipv4Addr::LOCALHOST)]);
    let ingress_config = Config::new()
        .listener(Listener::mutual("mtls", &pki.path("ingress")))
        .route(Route::new("mysql", &format!("{MYSQL_SERVICE}:{}", db.port)).hosts(&[SERVICE_HOST]))
        .raw(&dns.resolver_table())
        .raw(TELEMETRY_INGRESS);
    let ingress = Gateway::start(Role::Ingress, pki.dir.path(), &ingress_config.toml());
    let egress_config = Config::new()
        .listener(Listener::plain("mysql-plain", "to-ingress"))
        .route(Route::new("to-ingress", &format!("{SERVICE_HOST}:{}", ingress.port("mtls"))).mutual_origination(&pki.path("egress"), SERVICE_HOST))
        .raw(&dns.resolver_table())
        .raw(TELEMETRY_EGRESS);
    let egress = Gateway::start(Role::Egress, pki.dir.path(), &egress_config.toml());
    let plain_port = egress.port("mysql-plain");

    let target = |job: &str, gateway: &Gateway, pod: &str| Target {
        job: job.into(),
        address: bound_address(gateway, "metrics_address"),
        labels: vec![("namespace".into(), "istio-system".into()), ("pod".into(), pod.into())],
    };
    let prometheus = Prometheus::start(&[target("istio-egressgateway", &egress, EGRESS_POD), target("istio-ingressgateway", &ingress, INGRESS_POD)]);
    // Both metrics ports are scraped at /stats/prometheus and parse.
    prometheus.wait_for("up", QUERY_LIMIT, |s| s.len() == 2 && s.iter().all(|s| s.value == 1.0));

    // The tutorial's SQL through the pair, read back on the server side.
    mariadb_sql(plain_port, TUTORIAL_SQL).unwrap_or_else(|e| panic!("tutorial SQL through the pair failed: {e}\n{}", egress.proc.output()));
    assert_eq!(db.root_sql("SELECT id, content FROM test_encrypted_connection.message").trim(), "1\tCrypto Hi");
    // Then an application that keeps querying, so the counters move between scrapes.
    let stop = Arc::new(AtomicBool::new(false));
    let client = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(60);
            let mut runs = 0;
            while !stop.load(Ordering::Relaxed) && runs < MAX_QUERIES && Instant::now() < deadline {
                let read = mariadb_sql(plain_port, "SELECT content FROM test_encrypted_connection.message");
                assert_eq!(read.as_deref().map(str::trim), Ok("Crypto Hi"), "query {runs} through the pair");
                runs += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            runs
        })
    };

    let traffic_started = Instant::now();
    for panel in panels() {
        let samples = prometheus.wait_for(&panel.promql, QUERY_LIMIT, |s| panel.shows(s));
        println!("{} after {:?}:\n  {}\n  -> {samples:?}", panel.from, traffic_started.elapsed(), panel.promql);
    }
    let edge = kiali_security_policy(&prometheus);
    println!("Kiali security policy after {:?}: {edge:?}", traffic_started.elapsed());

    stop.store(true, Ordering::Relaxed);
    let runs = client.join().expect("the application's queries through the pair all succeed");
    // Every application connection is one connection at each gateway, opened and closed
    // once: the counters Istio's panels rate over are exact.
    let connections = (runs + 1) as f64;
    for metric in ["istio_tcp_connections_opened_total", "istio_tcp_connections_closed_total"] {
        let by_reporter = format!("sum by (reporter) ({metric})");
        prometheus.wait_for(&by_reporter, QUERY_LIMIT, |s| {
            s.len() == 2 && ["source", "destination"].iter().all(|r| s.iter().any(|s| s.label("reporter") == *r && s.value == connections))
        });
    }
    println!("{connections} connections counted at both gateways; test took {:?}", started.elapsed());
}

/// The TCP panels of Istio's dashboards (istio/istio `manifests/addons/dashboards/`), each
/// expression as published with the dashboard's variables substituted: `$qrep` (the
/// reporter), `$namespace` and `$workload` (the gateway shown), `$service`, and "All"
/// (`.*`) for the client/destination filters `$srcwl`, `$srcns`, `$dstwl`, `$dstns`,
/// `$dstsvc`; Grafana's `$__rate_interval` is `1m` (its value for a 15 s scrape interval).
fn panels() -> Vec<Panel> {
    let ingress = [("source_workload", "unknown"), ("source_workload_namespace", "unknown")];
    let service_workload = [("destination_workload", "istio-ingressgateway"), ("destination_workload_namespace", "istio-system")];
    let egress_destination = [("destination_service", SERVICE_HOST)];
    let mut panels = vec![
        // istio-workload-dashboard.json, row "General", panel "TCP Server Traffic";
        // $qrep=destination, $namespace=istio-system, $workload=istio-ingressgateway.
        Panel::new(
            "Istio Workload Dashboard (ingress) / TCP Server Traffic",
            r#"sum(irate(istio_tcp_sent_bytes_total{reporter="destination", destination_workload_namespace=~"istio-system", destination_workload=~"istio-ingressgateway"}[1m])) + sum(irate(istio_tcp_received_bytes_total{reporter="destination", destination_workload_namespace=~"istio-system", destination_workload=~"istio-ingressgateway"}[1m]))"#,
            &[&[]],
        ),
        // istio-workload-dashboard.json, row "General", panel "TCP Client Traffic";
        // $qrep=source, $namespace=istio-system, $workload=istio-egressgateway.
        Panel::new(
            "Istio Workload Dashboard (egress) / TCP Client Traffic",
            r#"sum(irate(istio_tcp_sent_bytes_total{reporter="source", source_workload_namespace=~"istio-system", source_workload=~"istio-egressgateway"}[1m])) + sum(irate(istio_tcp_received_bytes_total{reporter="source", source_workload_namespace=~"istio-system", source_workload=~"istio-egressgateway"}[1m]))"#,
            &[&[]],
        ),
        // istio-workload-dashboard.json, row "Inbound Workloads", panel "Bytes Received
        // from Incoming TCP Connection", target A (the 🔐mTLS legend).
        Panel::new(
            "Istio Workload Dashboard (ingress) / Bytes Received from Incoming TCP Connection (mTLS)",
            r#"round(sum(irate(istio_tcp_received_bytes_total{reporter="destination", connection_security_policy="mutual_tls", destination_workload_namespace=~"istio-system", destination_workload=~"istio-ingressgateway", source_workload=~".*", source_workload_namespace=~".*"}[1m])) by (source_workload, source_workload_namespace), 0.001)"#,
            &[&ingress],
        ),
        // Same row, panel "Bytes Sent to Incoming TCP Connection", target A (🔐mTLS).
        Panel::new(
            "Istio Workload Dashboard (ingress) / Bytes Sent to Incoming TCP Connection (mTLS)",
            r#"round(sum(irate(istio_tcp_sent_bytes_total{connection_security_policy="mutual_tls", reporter="destination", destination_workload_namespace=~"istio-system", destination_workload=~"istio-ingressgateway", source_workload=~".*", source_workload_namespace=~".*"}[1m])) by (source_workload, source_workload_namespace), 0.001)"#,
            &[&ingress],
        ),
        // istio-workload-dashboard.json, row "Outbound Services", panel "Bytes Sent on
        // Outgoing TCP Connection", target B: a source reporter says
        // connection_security_policy="unknown" (Istio's too), so its series is this one.
        Panel::new(
            "Istio Workload Dashboard (egress) / Bytes Sent on Outgoing TCP Connection",
            r#"round(sum(irate(istio_tcp_received_bytes_total{connection_security_policy!="mutual_tls", reporter="source", source_workload_namespace=~"istio-system", source_workload=~"istio-egressgateway", destination_service=~".*"}[1m])) by (destination_service), 0.001)"#,
            &[&egress_destination],
        ),
        // Same row, panel "Bytes Received from Outgoing TCP Connection", target B.
        Panel::new(
            "Istio Workload Dashboard (egress) / Bytes Received from Outgoing TCP Connection",
            r#"round(sum(irate(istio_tcp_sent_bytes_total{reporter="source", connection_security_policy!="mutual_tls", source_workload_namespace=~"istio-system", source_workload=~"istio-egressgateway", destination_service=~".*"}[1m])) by (destination_service), 0.001)"#,
            &[&egress_destination],
        ),
        // istio-service-dashboard.json, row "General", panels "TCP Received Bytes" and
        // "TCP Sent Bytes"; $qrep=destination, $service=mysql.default.svc.cluster.local.
        Panel::new(
            "Istio Service Dashboard (mysql) / TCP Received Bytes",
            r#"sum(irate(istio_tcp_received_bytes_total{reporter=~"destination", destination_service="mysql.default.svc.cluster.local"}[1m]))"#,
            &[&[]],
        ),
        Panel::new(
            "Istio Service Dashboard (mysql) / TCP Sent Bytes",
            r#"sum(irate(istio_tcp_sent_bytes_total{reporter=~"destination", destination_service="mysql.default.svc.cluster.local"}[1m]))"#,
            &[&[]],
        ),
        // The same panel for the egress's service, $SERVICE_URL, with $qrep=source.
        Panel::new(
            "Istio Service Dashboard ($SERVICE_URL, reporter source) / TCP Sent Bytes",
            r#"sum(irate(istio_tcp_sent_bytes_total{reporter=~"source", destination_service="db.strait.test"}[1m]))"#,
            &[&[]],
        ),
        // istio-service-dashboard.json, row "Client Workloads", panel "Bytes Received
        // from Incoming TCP Connection", target A (🔐mTLS).
        Panel::new(
            "Istio Service Dashboard (mysql) / Client Workloads / Bytes Received from Incoming TCP Connection (mTLS)",
            r#"round(sum(irate(istio_tcp_received_bytes_total{reporter=~"destination", connection_security_policy="mutual_tls", destination_service="mysql.default.svc.cluster.local", source_workload=~".*", source_workload_namespace=~".*"}[1m])) by (source_workload, source_workload_namespace), 0.001)"#,
            &[&ingress],
        ),
        // istio-service-dashboard.json, row "Service Workloads", panels "Bytes Received
        // from Incoming TCP Connection" and "Bytes Sent to Incoming TCP Connection",
        // target A (🔐mTLS).
        Panel::new(
            "Istio Service Dashboard (mysql) / Service Workloads / Bytes Received from Incoming TCP Connection (mTLS)",
            r#"round(sum(irate(istio_tcp_received_bytes_total{reporter="destination", connection_security_policy="mutual_tls", destination_service="mysql.default.svc.cluster.local", destination_workload=~".*", destination_workload_namespace=~".*"}[1m])) by (destination_workload, destination_workload_namespace), 0.001)"#,
            &[&service_workload],
        ),
        Panel::new(
            "Istio Service Dashboard (mysql) / Service Workloads / Bytes Sent to Incoming TCP Connection (mTLS)",
            r#"round(sum(irate(istio_tcp_sent_bytes_total{connection_security_policy="mutual_tls", reporter="destination", destination_service="mysql.default.svc.cluster.local", destination_workload=~".*", destination_workload_namespace=~".*"}[1m])) by (destination_workload, destination_workload_namespace), 0.001)"#,
            &[&service_workload],
        ),
        // Istio Ztunnel Dashboard (ztunnel.libsonnet + lib/queries.libsonnet
        // `connections`), row "Network", panel "Connections", query "Opened ({{pod}})":
        // the pod matcher `ztunnel-.*` replaced by the two gateways' pods.
        Panel::new(
            "Istio Ztunnel Dashboard / Connections / Opened",
            r#"sum by (pod) (rate(istio_tcp_connections_opened_total{pod=~"istio-.*gateway-.*"}[1m]))"#,
            &[&[("pod", EGRESS_POD)], &[("pod", INGRESS_POD)]],
        ),
    ];
    // Same panel, query "Closed ({{pod}})", drawn below the axis.
    let mut closed = Panel::new(
        "Istio Ztunnel Dashboard / Connections / Closed",
        r#"-sum by (pod) (rate(istio_tcp_connections_closed_total{pod=~"istio-.*gateway-.*"}[1m]))"#,
        &[&[("pod", EGRESS_POD)], &[("pod", INGRESS_POD)]],
    );
    closed.negated = true;
    panels.push(closed);
    panels
}

/// Kiali's graph marks an edge mTLS (the lock) from this query: kiali/kiali
/// `graph/telemetry/istio/appender/security_policy.go`, query 1 ("requests originating
/// from a workload outside the namespace"), for namespace `default` (mysql's), TCP rate
/// `sent` (Kiali's default for TCP), a sidecar mesh (`GetApp` adds `app!="ztunnel",`,
/// `GetReporter` gives `reporter="destination"`), a 60 s graph duration, wrapped in
/// `round(..., 0.001)` by `PromQueryAppender`. `populateSecurityPolicyMap` skips any
/// series that lacks one of the labels checked here, and the edge gets the lock when the
/// `mutual_tls` rate is above zero.
fn kiali_security_policy(prometheus: &Prometheus) -> Sample {
    let query = r#"round((sum(rate(istio_tcp_sent_bytes_total{app!="ztunnel",reporter="destination",source_workload_namespace!="default",destination_service_namespace="default"}[60s])) by (source_cluster,source_workload_namespace,source_workload,source_canonical_service,source_canonical_revision,source_principal,destination_cluster,destination_service_namespace,destination_service_name,destination_workload_namespace,destination_workload,destination_canonical_service,destination_canonical_revision,destination_principal,connection_security_policy) > 0),0.001)"#;
    let required = [
        "source_workload_namespace",
        "source_workload",
        "source_canonical_service",
        "source_canonical_revision",
        "destination_service_namespace",
        "destination_service_name",
        "destination_workload_namespace",
        "destination_workload",
        "destination_canonical_service",
        "destination_canonical_revision",
        "source_principal",
        "destination_principal",
    ];
    let samples = prometheus.wait_for(query, QUERY_LIMIT, |s| !s.is_empty());
    assert_eq!(samples.len(), 1, "one edge into the mysql service: {samples:#?}");
    let edge = samples.into_iter().next().unwrap();
    let missing: Vec<_> = required.iter().filter(|l| !edge.labels.contains_key(**l)).collect();
    assert!(missing.is_empty(), "Kiali skips a series without {missing:?} (\"missing expected labels\"): {edge:#?}");
    // The egress's client certificate (the reference `egress` Secret) names it by DNS SAN.
    let client = format!("client.{SERVICE_HOST}");
    let expected = [
        ("connection_security_policy", "mutual_tls"),
        ("source_principal", client.as_str()),
        ("destination_workload", "istio-ingressgateway"),
        ("destination_workload_namespace", "istio-system"),
        ("destination_canonical_service", "istio-ingressgateway"),
        ("destination_canonical_revision", "latest"),
        ("destination_service_name", "mysql"),
        ("destination_service_namespace", "default"),
        ("destination_cluster", "server-cluster"),
    ];
    for (label, value) in expected {
        assert_eq!(edge.label(label), value, "{label} of the ingress-side edge: {edge:#?}");
    }
    assert!(edge.value > 0.0, "the edge's mTLS rate must be above zero for the lock: {edge:#?}");
    edge
}
