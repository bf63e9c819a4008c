//! Process metrics in Prometheus form, named after Istio's TCP metrics so existing
//! dashboards fit (`strait_tcp_connections_opened_total` beside
//! `istio_tcp_connections_opened_total`, and so on).
//!
//! Labels are bounded by the configuration (listener, route, credential file) and by
//! fixed enums (direction, mTLS, outcome, refusal reason); never by client addresses.

use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;
use std::time::Duration;

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
    /// Outcome class: closed, refused, denied, upstream_failed, relay_failed.
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
    /// One of the fixed reasons of [`crate::access_log::Refusal`].
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

/// Labels of a reload result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `success` or `failure`.
    pub result: &'static str,
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    /// Connections that got a route and passed authorization.
    pub opened: Family<ConnectionLabels, Counter>,
    /// Connections that ended, by outcome.
    pub closed: Family<ClosedLabels, Counter>,
    /// Bytes to the client.
    pub sent_bytes: Family<ConnectionLabels, Counter>,
    /// Bytes from the client.
    pub received_bytes: Family<ConnectionLabels, Counter>,
    /// Connections open now.
    pub active: Family<ListenerLabels, Gauge>,
    /// Handshakes refused, by reason.
    pub handshake_failures: Family<RefusalLabels, Counter>,
    /// Connections closed at accept because the listener was at its limit.
    pub shed: Family<ListenerLabels, Counter>,
    /// Time to connect upstream (TCP, plus origination TLS).
    pub upstream_connect_seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Upstream connects that failed.
    pub upstream_failures: Family<RouteLabels, Counter>,
    /// Names that did not resolve.
    pub dns_failures: Family<RouteLabels, Counter>,
    /// Expiry of every loaded certificate, Unix seconds.
    pub cert_not_after: Family<CredentialLabels, Gauge<f64, AtomicU64>>,
    /// Configuration/credential reloads by result.
    pub reloads: Family<ReloadLabels, Counter>,
    /// Database protocol negotiations, by which sides became TLS and how they ended.
    pub negotiations: Family<NegotiationLabels, Counter>,
}

fn connect_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("strait");
        let metrics = Metrics {
            opened: Family::default(),
            closed: Family::default(),
            sent_bytes: Family::default(),
            received_bytes: Family::default(),
            active: Family::default(),
            handshake_failures: Family::default(),
            shed: Family::default(),
            upstream_connect_seconds: Family::new_with_constructor(connect_histogram),
            upstream_failures: Family::default(),
            dns_failures: Family::default(),
            cert_not_after: Family::default(),
            reloads: Family::default(),
            negotiations: Family::default(),
            registry: Registry::default(),
        };
        registry.register("tcp_connections_opened", "TCP connections opened (routed and authorized)", metrics.opened.clone());
        registry.register("tcp_connections_closed", "TCP connections closed, by outcome", metrics.closed.clone());
        registry.register("tcp_sent_bytes", "Bytes sent to the downstream client", metrics.sent_bytes.clone());
        registry.register("tcp_received_bytes", "Bytes received from the downstream client", metrics.received_bytes.clone());
        registry.register("active_connections", "Connections open now", metrics.active.clone());
        registry.register("handshake_failures", "Connections refused before a route was taken, by reason", metrics.handshake_failures.clone());
        registry.register("connections_shed", "Connections closed at accept: the listener was at max_connections", metrics.shed.clone());
        registry.register("upstream_connect_seconds", "Time to connect upstream, TCP plus origination handshake", metrics.upstream_connect_seconds.clone());
        registry.register("upstream_connect_failures", "Upstream connects that failed on every address", metrics.upstream_failures.clone());
        registry.register("dns_resolution_failures", "Upstream names that gave no address", metrics.dns_failures.clone());
        registry.register("certificate_not_after_seconds", "Expiry of each loaded certificate (Unix time)", metrics.cert_not_after.clone());
        registry.register("config_reloads", "Configuration and credential reloads, by result", metrics.reloads.clone());
        registry.register("database_negotiations", "MySQL/PostgreSQL in-protocol TLS negotiations, by TLS sides and outcome", metrics.negotiations.clone());
        Metrics { registry, ..metrics }
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a connection closed at accept by the connection limit.
    pub fn connection_shed(&self, listener: &str) {
        self.shed.get_or_create(&ListenerLabels { listener: listener.to_owned() }).inc();
    }

    /// Records one upstream connect's duration.
    pub fn upstream_connected(&self, route: &str, took: Duration) {
        self.upstream_connect_seconds.get_or_create(&RouteLabels { route: route.to_owned() }).observe(took.as_secs_f64());
    }
}

/// The process's metrics (created on first use).
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}
