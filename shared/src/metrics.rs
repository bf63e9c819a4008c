//! Process metrics, exported two ways from one declaration: Prometheus text on the admin
//! port and, when `[telemetry] otlp_endpoint` is set, OTLP pushes with the same names and
//! labels. Named after Istio's TCP metrics so existing dashboards fit
//! (`strait_tcp_connections_opened_total` beside `istio_tcp_connections_opened_total`).
//!
//! One [`Metrics`] is made per gateway and passed to whatever records: there is no
//! global. Labels are bounded by the configuration (listener, route, credential file)
//! and by fixed enums (direction, mTLS, outcome, refusal reason); never by client
//! addresses.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use opentelemetry::metrics::Meter;
use opentelemetry::KeyValue;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of the per-connection TCP metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    /// Listener name.
    pub listener: String,
    /// Route name (empty when refused before a route was chosen).
    pub route: String,
    /// `outbound` at the egress, `inbound` at the ingress (Istio's sense).
    pub direction: &'static str,
    /// Whether the client side was mutual TLS.
    pub mtls: &'static str,
}

/// Labels of closed connections: the connection labels plus how it ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClosedLabels {
    /// Listener name.
    pub listener: String,
    /// Route name, empty when none was chosen.
    pub route: String,
    /// `outbound` or `inbound`.
    pub direction: &'static str,
    /// Whether the client side was mutual TLS.
    pub mtls: &'static str,
    /// Outcome class: closed, refused, denied, upstream_failed, relay_failed, drained.
    pub outcome: &'static str,
}

/// Labels naming a listener.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// Listener name.
    pub listener: String,
}

/// Labels of a refused handshake.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// Listener name.
    pub listener: String,
    /// One of the fixed reasons of [`crate::error::Refusal`].
    pub reason: &'static str,
}

/// Labels naming a route.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    /// Route name.
    pub route: String,
}

/// Labels naming a credential file.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CredentialLabels {
    /// The certificate file.
    pub file: String,
    /// Its leaf's serial, hex (changes on rotation, so a dashboard sees it happen).
    pub serial: String,
}

/// Labels of a database protocol negotiation.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NegotiationLabels {
    /// Route name.
    pub route: String,
    /// `mysql` or `postgres`.
    pub protocol: &'static str,
    /// Which sides ended up TLS: `none`, `downstream`, `upstream`, `both`.
    pub tls: &'static str,
    /// Outcome class of the negotiation (`ok`, or the connection's outcome).
    pub outcome: &'static str,
}

/// Labels naming one upstream endpoint of a route (its configured `host:port`; never a
/// resolved address, so the series are bounded by the configuration).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// Route name.
    pub route: String,
    /// The endpoint's configured address.
    pub endpoint: String,
}

/// Labels of a reload result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `success` or `failure`.
    pub result: &'static str,
}

/// Istio's standard TCP metric labels, so Istio's Grafana dashboards and Kiali's graph
/// (the mTLS lock is `connection_security_policy="mutual_tls"` from the destination
/// reporter) work on Strait unchanged. Bounded like Istio's: by workloads and identities.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IstioTcpLabels {
    /// `source` at the egress (it reports as the client side), `destination` at the
    /// ingress (the server side of the cross-cluster edge).
    pub reporter: &'static str,
    /// The client workload (this gateway's at the egress; `unknown` when not known).
    pub source_workload: String,
    /// Its namespace (at the ingress: from the client's SPIFFE ID).
    pub source_workload_namespace: String,
    /// The client's identity (`spiffe://...`), `unknown` without one.
    pub source_principal: String,
    /// The client's canonical service.
    pub source_canonical_service: String,
    /// The client's canonical revision (Kiali skips a series without it).
    pub source_canonical_revision: String,
    /// The client's cluster.
    pub source_cluster: String,
    /// The server workload (this gateway's at the ingress).
    pub destination_workload: String,
    /// Its namespace.
    pub destination_workload_namespace: String,
    /// The server's identity: the origination peer's SPIFFE ID at the egress.
    pub destination_principal: String,
    /// The server's canonical service.
    pub destination_canonical_service: String,
    /// The server's canonical revision.
    pub destination_canonical_revision: String,
    /// The route's upstream host, as Istio names a service (`mysql.default.svc.cluster.local`).
    pub destination_service: String,
    /// Its first label (`mysql`).
    pub destination_service_name: String,
    /// Its namespace when it is a cluster service name, else `unknown`.
    pub destination_service_namespace: String,
    /// The server's cluster.
    pub destination_cluster: String,
    /// Always `tcp` (Istio's TCP metrics).
    pub request_protocol: &'static str,
    /// Envoy's response flags: `-`, `UF` (upstream connection failure), `NR` (no route).
    pub response_flags: &'static str,
    /// `mutual_tls` or `none` at the destination reporter, `unknown` at the source.
    pub connection_security_policy: &'static str,
}

/// This gateway's own workload, as Istio's labels name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    /// `source_workload` / `destination_workload`.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Its canonical service.
    pub canonical_service: String,
    /// Its canonical revision (`service.istio.io/canonical-revision`).
    pub canonical_revision: String,
    /// Its cluster.
    pub cluster: String,
}

impl Workload {
    /// From the `[telemetry]` settings, else the pod environment Kubernetes and Istio
    /// set (`ISTIO_META_WORKLOAD_NAME`, `POD_NAME`, `POD_NAMESPACE`, `CANONICAL_SERVICE`,
    /// `CANONICAL_REVISION`, `ISTIO_META_CLUSTER_ID`), else `unknown` (the revision:
    /// `latest`, as Istio defaults it).
    pub fn from(settings: &crate::config::TelemetrySettings, env: impl Fn(&str) -> Option<String>) -> Workload {
        let pick = |set: &Option<String>, vars: &[&str]| set.clone().or_else(|| vars.iter().find_map(|v| env(v).filter(|s| !s.is_empty())));
        let name = pick(&settings.workload_name, &["ISTIO_META_WORKLOAD_NAME"]).or_else(|| env("POD_NAME").map(|pod| deployment_of(&pod)));
        let name = name.unwrap_or_else(|| "unknown".into());
        Workload {
            canonical_service: pick(&settings.canonical_service, &["CANONICAL_SERVICE"]).unwrap_or_else(|| name.clone()),
            canonical_revision: pick(&settings.canonical_revision, &["CANONICAL_REVISION"]).unwrap_or_else(|| "latest".into()),
            namespace: pick(&settings.workload_namespace, &["POD_NAMESPACE"]).unwrap_or_else(|| "unknown".into()),
            cluster: pick(&settings.cluster_id, &["ISTIO_META_CLUSTER_ID"]).unwrap_or_else(|| "unknown".into()),
            name,
        }
    }
}

/// A Deployment's pod name without the ReplicaSet hash and pod suffix
/// (`strait-egress-7c9f8d6b5-x2x4q` -> `strait-egress`), as Istio derives it.
fn deployment_of(pod: &str) -> String {
    let parts: Vec<&str> = pod.split('-').collect();
    if parts.len() >= 3 {
        parts[..parts.len() - 2].join("-")
    } else {
        pod.to_owned()
    }
}

/// A label set that both exporters can carry.
pub trait Labels: EncodeLabelSet + Clone + std::hash::Hash + Eq + Send + Sync + std::fmt::Debug + 'static {
    /// The same labels as OpenTelemetry attributes.
    fn attributes(&self) -> Vec<KeyValue>;
}

macro_rules! labels {
    ($($type:ty => [$($field:ident),*]),* $(,)?) => {
        $(impl Labels for $type {
            fn attributes(&self) -> Vec<KeyValue> {
                vec![$(KeyValue::new(stringify!($field), self.$field.clone())),*]
            }
        })*
    };
}

labels! {
    ConnectionLabels => [listener, route, direction, mtls],
    ClosedLabels => [listener, route, direction, mtls, outcome],
    ListenerLabels => [listener],
    RefusalLabels => [listener, reason],
    RouteLabels => [route],
    CredentialLabels => [file, serial],
    ReloadLabels => [result],
    NegotiationLabels => [route, protocol, tls, outcome],
    EndpointLabels => [route, endpoint],
    IstioTcpLabels => [reporter, source_workload, source_workload_namespace, source_principal, source_canonical_service,
        source_canonical_revision, source_cluster, destination_workload, destination_workload_namespace, destination_principal,
        destination_canonical_service, destination_canonical_revision, destination_service, destination_service_name,
        destination_service_namespace, destination_cluster, request_protocol, response_flags, connection_security_policy],
}

/// Where a metric is declared: its name (without the `strait_` prefix) and help, used by
/// both exporters.
struct Declare<'a> {
    registry: &'a mut Registry,
    meter: Option<&'a Meter>,
    /// `strait_` for Strait's own metrics, empty for Istio's.
    prefix: &'static str,
}

impl Declare<'_> {
    fn otlp_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    fn counter<L: Labels>(&mut self, name: &'static str, help: &'static str) -> CounterVec<L> {
        let prometheus = Family::default();
        self.registry.register(name, help, prometheus.clone());
        let otlp_name = self.otlp_name(name);
        let otlp = self.meter.map(|m| m.u64_counter(otlp_name).with_description(help).build());
        CounterVec { prometheus, otlp }
    }

    fn gauge<L: Labels>(&mut self, name: &'static str, help: &'static str) -> GaugeVec<L> {
        let prometheus = Family::default();
        self.registry.register(name, help, prometheus.clone());
        let otlp_name = self.otlp_name(name);
        let otlp = self.meter.map(|m| m.i64_up_down_counter(otlp_name).with_description(help).build());
        GaugeVec { prometheus, otlp }
    }

    fn float_gauge<L: Labels>(&mut self, name: &'static str, help: &'static str) -> FloatGaugeVec<L> {
        let prometheus = Family::default();
        self.registry.register(name, help, prometheus.clone());
        let otlp_name = self.otlp_name(name);
        let otlp = self.meter.map(|m| m.f64_gauge(otlp_name).with_description(help).build());
        FloatGaugeVec { prometheus, otlp }
    }

    fn histogram<L: Labels>(&mut self, name: &'static str, help: &'static str, buckets: fn() -> Histogram) -> HistogramVec<L> {
        let prometheus = Family::new_with_constructor(buckets);
        self.registry.register(name, help, prometheus.clone());
        let otlp_name = self.otlp_name(name);
        let otlp = self.meter.map(|m| m.f64_histogram(otlp_name).with_description(help).with_unit("s").build());
        HistogramVec { prometheus, otlp }
    }
}

/// A counter in both exports.
pub struct CounterVec<L: Labels> {
    prometheus: Family<L, Counter>,
    otlp: Option<opentelemetry::metrics::Counter<u64>>,
}

impl<L: Labels> CounterVec<L> {
    /// Adds `n` to the series `labels`.
    pub fn add(&self, labels: &L, n: u64) {
        self.prometheus.get_or_create(labels).inc_by(n);
        if let Some(otlp) = &self.otlp {
            otlp.add(n, &labels.attributes());
        }
    }
}

/// An up-down gauge in both exports.
pub struct GaugeVec<L: Labels> {
    prometheus: Family<L, Gauge>,
    otlp: Option<opentelemetry::metrics::UpDownCounter<i64>>,
}

impl<L: Labels> GaugeVec<L> {
    /// Moves the series `labels` by `delta`.
    pub fn add(&self, labels: &L, delta: i64) {
        self.prometheus.get_or_create(labels).inc_by(delta);
        if let Some(otlp) = &self.otlp {
            otlp.add(delta, &labels.attributes());
        }
    }
}

impl<L: Labels> GaugeVec<L> {
    /// Sets the series `labels` to `value` (OTLP gets the difference).
    pub fn set(&self, labels: &L, value: i64) {
        let old = self.prometheus.get_or_create(labels).set(value);
        if let Some(otlp) = &self.otlp {
            otlp.add(value - old, &labels.attributes());
        }
    }

    /// Drops the series `labels` (its endpoint or route is gone).
    pub fn remove(&self, labels: &L) {
        let old = self.prometheus.get_or_create(labels).get();
        self.prometheus.remove(labels);
        if let Some(otlp) = &self.otlp {
            otlp.add(-old, &labels.attributes());
        }
    }
}

/// A gauge of absolute values in both exports.
pub struct FloatGaugeVec<L: Labels> {
    prometheus: Family<L, Gauge<f64, AtomicU64>>,
    otlp: Option<opentelemetry::metrics::Gauge<f64>>,
}

impl<L: Labels> FloatGaugeVec<L> {
    /// Replaces every series with `values`.
    pub fn replace(&self, values: &[(L, f64)]) {
        self.prometheus.clear();
        for (labels, value) in values {
            self.prometheus.get_or_create(labels).set(*value);
            if let Some(otlp) = &self.otlp {
                otlp.record(*value, &labels.attributes());
            }
        }
    }
}

/// A histogram (seconds) in both exports.
pub struct HistogramVec<L: Labels> {
    prometheus: Family<L, Histogram, fn() -> Histogram>,
    otlp: Option<opentelemetry::metrics::Histogram<f64>>,
}

impl<L: Labels> HistogramVec<L> {
    /// Records one observation.
    pub fn observe(&self, labels: &L, took: Duration) {
        self.prometheus.get_or_create(labels).observe(took.as_secs_f64());
        if let Some(otlp) = &self.otlp {
            otlp.record(took.as_secs_f64(), &labels.attributes());
        }
    }
}

fn connect_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

/// Every metric of a gateway.
pub struct Metrics {
    registry: Registry,
    /// Connections that got a route, passed authorization and reached their upstream:
    /// counted when the relay starts, for every protocol.
    pub opened: CounterVec<ConnectionLabels>,
    /// Connections that ended, by outcome.
    pub closed: CounterVec<ClosedLabels>,
    /// Bytes to the client.
    pub sent_bytes: CounterVec<ConnectionLabels>,
    /// Bytes from the client.
    pub received_bytes: CounterVec<ConnectionLabels>,
    /// Connections open now.
    pub active: GaugeVec<ListenerLabels>,
    /// Connections refused (handshake failures and denials), by reason.
    pub handshake_failures: CounterVec<RefusalLabels>,
    /// Connections closed at accept because the listener was at its limit.
    pub shed: CounterVec<ListenerLabels>,
    /// Relaying connections closed idle under overload, idlest first
    /// ([`crate::overload`]).
    pub shed_idle: CounterVec<ListenerLabels>,
    /// Time to connect upstream (TCP plus origination TLS; for database routes, the
    /// whole negotiation).
    pub upstream_connect_seconds: HistogramVec<RouteLabels>,
    /// Upstream connects that failed.
    pub upstream_failures: CounterVec<RouteLabels>,
    /// Names that did not resolve.
    pub dns_failures: CounterVec<RouteLabels>,
    /// Expiry of every loaded certificate, Unix seconds.
    pub cert_not_after: FloatGaugeVec<CredentialLabels>,
    /// Configuration/credential reloads by result.
    pub reloads: CounterVec<ReloadLabels>,
    /// Open connections closed because a reload changed the trust and their peer's
    /// chain no longer verified ([`crate::recheck`]).
    pub trust_change_closed: CounterVec<ListenerLabels>,
    /// Database protocol negotiations, by which sides became TLS and how they ended.
    pub negotiations: CounterVec<NegotiationLabels>,
    /// Addresses of an endpoint that take traffic now (resolved, not ejected, passing
    /// their active health check).
    pub endpoint_healthy: GaugeVec<EndpointLabels>,
    /// Addresses of an endpoint ejected by outlier detection now.
    pub endpoint_ejected: GaugeVec<EndpointLabels>,
    /// Ejections by outlier detection.
    pub endpoint_ejections: CounterVec<EndpointLabels>,
    /// Connections served by an endpoint of a worse priority than the route's best.
    pub endpoint_failovers: CounterVec<EndpointLabels>,
    /// Active health-check probe times (connect, plus the handshake for `tls`).
    pub health_check_seconds: HistogramVec<EndpointLabels>,
    /// Active health-check probes that failed.
    pub health_check_failures: CounterVec<EndpointLabels>,
    /// Istio's `istio_tcp_connections_opened_total`, with Istio's labels.
    pub istio_opened: CounterVec<IstioTcpLabels>,
    /// Istio's `istio_tcp_connections_closed_total`.
    pub istio_closed: CounterVec<IstioTcpLabels>,
    /// Istio's `istio_tcp_sent_bytes_total` (bytes to the client).
    pub istio_sent_bytes: CounterVec<IstioTcpLabels>,
    /// Istio's `istio_tcp_received_bytes_total` (bytes from the client).
    pub istio_received_bytes: CounterVec<IstioTcpLabels>,
}

impl Metrics {
    /// Declares every metric; `meter` also exports them over OTLP.
    pub fn new(meter: Option<&Meter>) -> Metrics {
        let mut registry = Registry::default();
        let mut istio = Declare { registry: &mut registry, meter, prefix: "" };
        let istio_opened = istio.counter("istio_tcp_connections_opened", "Istio standard metric: TCP connections opened");
        let istio_closed = istio.counter("istio_tcp_connections_closed", "Istio standard metric: TCP connections closed");
        let istio_sent_bytes = istio.counter("istio_tcp_sent_bytes", "Istio standard metric: bytes sent to the client");
        let istio_received_bytes = istio.counter("istio_tcp_received_bytes", "Istio standard metric: bytes received from the client");
        let mut d = Declare { registry: registry.sub_registry_with_prefix("strait"), meter, prefix: "strait_" };
        let metrics = Metrics {
            istio_opened,
            istio_closed,
            istio_sent_bytes,
            istio_received_bytes,
            opened: d.counter("tcp_connections_opened", "TCP connections opened: routed, authorized and connected upstream"),
            closed: d.counter("tcp_connections_closed", "TCP connections closed, by outcome"),
            sent_bytes: d.counter("tcp_sent_bytes", "Bytes sent to the downstream client"),
            received_bytes: d.counter("tcp_received_bytes", "Bytes received from the downstream client"),
            active: d.gauge("active_connections", "Connections open now"),
            handshake_failures: d.counter("handshake_failures", "Connections refused before they were relayed, by reason"),
            shed: d.counter("connections_shed", "Connections closed at accept: the listener was at max_connections"),
            shed_idle: d
                .counter("connections_shed_idle", "Relaying connections closed idle, idlest first, under overload (max_connections or the open-file limit)"),
            upstream_connect_seconds: d.histogram("upstream_connect_seconds", "Time to connect upstream, TCP plus origination handshake", connect_histogram),
            upstream_failures: d.counter("upstream_connect_failures", "Upstream connects that failed on every address"),
            dns_failures: d.counter("dns_resolution_failures", "Upstream names that gave no address"),
            cert_not_after: d.float_gauge("certificate_not_after_seconds", "Expiry of each loaded certificate (Unix time)"),
            reloads: d.counter("config_reloads", "Configuration and credential reloads, by result"),
            trust_change_closed: d
                .counter("connections_closed_on_trust_change", "Open connections closed after a reload: their peer's chain no longer verified"),
            negotiations: d.counter("database_negotiations", "MySQL/PostgreSQL in-protocol TLS negotiations, by TLS sides and outcome"),
            endpoint_healthy: d.gauge("upstream_endpoint_healthy", "Addresses of an upstream endpoint that take traffic now"),
            endpoint_ejected: d.gauge("upstream_endpoint_ejected", "Addresses of an upstream endpoint ejected by outlier detection now"),
            endpoint_ejections: d.counter("upstream_endpoint_ejections", "Addresses ejected by outlier detection"),
            endpoint_failovers: d.counter("upstream_endpoint_failovers", "Connections served by an endpoint of a worse priority than the route's best"),
            health_check_seconds: d.histogram("upstream_health_check_seconds", "Active health-check probe time", connect_histogram),
            health_check_failures: d.counter("upstream_health_check_failures", "Active health-check probes that failed"),
            registry: Registry::default(),
        };
        Metrics { registry, ..metrics }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a reload attempt.
    pub fn reloaded(&self, success: bool) {
        self.reloads.add(&ReloadLabels { result: if success { "success" } else { "failure" } }, 1);
    }

    /// Marks a connection open on `listener` until the guard drops.
    pub fn connection_active(self: &std::sync::Arc<Self>, listener: &str) -> ActiveGuard {
        let labels = ListenerLabels { listener: listener.to_owned() };
        self.active.add(&labels, 1);
        ActiveGuard { metrics: self.clone(), labels }
    }
}

/// Keeps a connection counted in `strait_active_connections` while it lives.
pub struct ActiveGuard {
    metrics: std::sync::Arc<Metrics>,
    labels: ListenerLabels,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.metrics.active.add(&self.labels, -1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_from_settings_then_pod_environment() {
        let env = |var: &str| match var {
            "POD_NAME" => Some("strait-egress-7c9f8d6b5-x2x4q".to_owned()),
            "POD_NAMESPACE" => Some("istio-system".to_owned()),
            _ => None,
        };
        let from_env = Workload::from(&crate::config::TelemetrySettings::default(), env);
        assert_eq!(from_env.name, "strait-egress");
        assert_eq!((from_env.namespace.as_str(), from_env.canonical_service.as_str(), from_env.cluster.as_str()), ("istio-system", "strait-egress", "unknown"));
        assert_eq!(from_env.canonical_revision, "latest");
        let settings = crate::config::TelemetrySettings { cluster_id: Some("client-cluster".into()), workload_name: Some("gw".into()), ..Default::default() };
        let set = Workload::from(&settings, env);
        assert_eq!((set.name.as_str(), set.cluster.as_str()), ("gw", "client-cluster"));
    }

    #[test]
    fn both_exports_share_names_and_a_gauge_returns_to_zero() {
        let metrics = std::sync::Arc::new(Metrics::new(None));
        let labels = ConnectionLabels { listener: "l".into(), route: "r".into(), direction: "outbound", mtls: "false" };
        metrics.opened.add(&labels, 1);
        let guard = metrics.connection_active("l");
        assert!(metrics.encode().contains("strait_active_connections{listener=\"l\"} 1"), "{}", metrics.encode());
        drop(guard);
        let text = metrics.encode();
        assert!(text.contains("strait_tcp_connections_opened_total{listener=\"l\",route=\"r\",direction=\"outbound\",mtls=\"false\"} 1"), "{text}");
        assert!(text.contains("strait_active_connections{listener=\"l\"} 0"), "{text}");
        assert!(text.contains("# HELP strait_tcp_connections_opened TCP connections opened"), "{text}");
    }
}
