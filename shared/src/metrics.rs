//! Process metrics in Prometheus form, named after Istio's TCP metrics so existing
//! dashboards fit (`strait_tcp_connections_opened_total` beside
//! `istio_tcp_connections_opened_total`, and so on).
//!
//! Labels are bounded by the configuration (listener, route, credential file) and by
//! fixed enums (direction, mTLS, outcome, refusal reason); never by client addresses.

use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;
use std::time::Duration;

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
        let labels = ListenerLabels { listener: listener.to_owned() };
        self.shed.get_or_create(&labels).inc();
        otel(|o| o.shed.add(1, &labels.attributes()));
    }

    /// Records one upstream connect's duration.
    pub fn upstream_connected(&self, route: &str, took: Duration) {
        let labels = RouteLabels { route: route.to_owned() };
        self.upstream_connect_seconds.get_or_create(&labels).observe(took.as_secs_f64());
        otel(|o| o.upstream_connect_seconds.record(took.as_secs_f64(), &labels.attributes()));
    }

    /// Counts a connection that got its route and passed authorization.
    pub fn connection_opened(&self, labels: &ConnectionLabels) {
        self.opened.get_or_create(labels).inc();
        otel(|o| o.opened.add(1, &labels.attributes()));
    }

    /// Counts a finished connection: its bytes, how it ended, and the refusal reason
    /// (a handshake failure) if it was refused.
    pub fn connection_closed(&self, labels: &ConnectionLabels, outcome: &'static str, sent: u64, received: u64, refusal: Option<&'static str>) {
        let attributes = labels.attributes();
        if sent > 0 || received > 0 {
            self.sent_bytes.get_or_create(labels).inc_by(sent);
            self.received_bytes.get_or_create(labels).inc_by(received);
            otel(|o| {
                o.sent_bytes.add(sent, &attributes);
                o.received_bytes.add(received, &attributes);
            });
        }
        if let Some(reason) = refusal {
            let refused = RefusalLabels { listener: labels.listener.clone(), reason };
            self.handshake_failures.get_or_create(&refused).inc();
            otel(|o| o.handshake_failures.add(1, &refused.attributes()));
        }
        let ConnectionLabels { listener, route, direction, mtls } = labels.clone();
        let closed = ClosedLabels { listener, route, direction, mtls, outcome };
        self.closed.get_or_create(&closed).inc();
        otel(|o| o.closed.add(1, &closed.attributes()));
    }

    /// Marks a connection open on `listener` until the guard drops.
    pub fn connection_active(&self, listener: &str) -> ActiveGuard {
        let labels = ListenerLabels { listener: listener.to_owned() };
        let gauge = self.active.get_or_create(&labels).clone();
        gauge.inc();
        otel(|o| o.active.add(1, &labels.attributes()));
        ActiveGuard { gauge, labels }
    }

    /// Counts an upstream that could not be reached, and whether DNS was why.
    pub fn upstream_failed(&self, route: &str, dns: bool) {
        let labels = RouteLabels { route: route.to_owned() };
        if dns {
            self.dns_failures.get_or_create(&labels).inc();
            otel(|o| o.dns_failures.add(1, &labels.attributes()));
        }
        self.upstream_failures.get_or_create(&labels).inc();
        otel(|o| o.upstream_failures.add(1, &labels.attributes()));
    }

    /// Counts a database negotiation.
    pub fn negotiated(&self, labels: &NegotiationLabels) {
        self.negotiations.get_or_create(labels).inc();
        otel(|o| o.negotiations.add(1, &labels.attributes()));
    }

    /// Counts a reload attempt.
    pub fn reloaded(&self, success: bool) {
        let labels = ReloadLabels { result: if success { "success" } else { "failure" } };
        self.reloads.get_or_create(&labels).inc();
        otel(|o| o.reloads.add(1, &labels.attributes()));
    }

    /// Replaces the certificate expiry series with the certificates loaded now.
    pub fn certificates(&self, loaded: &[(CredentialLabels, f64)]) {
        self.cert_not_after.clear();
        for (labels, not_after) in loaded {
            self.cert_not_after.get_or_create(labels).set(*not_after);
            otel(|o| o.cert_not_after.record(*not_after, &labels.attributes()));
        }
    }
}

/// Keeps a connection counted in `strait_active_connections` while it lives.
pub struct ActiveGuard {
    gauge: Gauge,
    labels: ListenerLabels,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.gauge.dec();
        otel(|o| o.active.add(-1, &self.labels.attributes()));
    }
}

/// Runs `record` on the OTLP instruments when metric export is on.
fn otel(record: impl FnOnce(&crate::otel::Instruments)) {
    if let Some(instruments) = crate::otel::instruments() {
        record(instruments);
    }
}

/// Label sets as OpenTelemetry attributes, so both exports carry the same labels.
trait Attributes {
    fn attributes(&self) -> Vec<KeyValue>;
}

macro_rules! attributes {
    ($($type:ty => [$($field:ident),*]),* $(,)?) => {
        $(impl Attributes for $type {
            fn attributes(&self) -> Vec<KeyValue> {
                vec![$(KeyValue::new(stringify!($field), self.$field.clone())),*]
            }
        })*
    };
}

attributes! {
    ConnectionLabels => [listener, route, direction, mtls],
    ClosedLabels => [listener, route, direction, mtls, outcome],
    ListenerLabels => [listener],
    RefusalLabels => [listener, reason],
    RouteLabels => [route],
    CredentialLabels => [file, serial],
    ReloadLabels => [result],
    NegotiationLabels => [route, protocol, tls, outcome],
}

/// The process's metrics (created on first use).
pub fn get() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}
