//! The connection record: what is known about one connection, filled in by the pipeline
//! as it goes, and written when it is dropped — the access-log line (Istio's TCP access
//! log, field for field where they overlap), the closed and bytes metrics, and the OTLP
//! span. Because it records on drop, a connection cut by the drain or by the process
//! stopping is still logged and counted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use opentelemetry::trace::{Span, Status, Tracer};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::SdkTracer;

use crate::error::{Class, ConnError, Outcome, UpstreamError};
use crate::identity::Identity;
use crate::metrics::{ActiveGuard, ClosedLabels, ConnectionLabels, IstioTcpLabels, Metrics, RefusalLabels, RouteLabels, Workload};
use crate::relay::Moved;

/// Where finished connections are recorded: one per gateway, shared by its connections.
pub struct Recorder {
    /// The gateway's metrics.
    pub metrics: Arc<Metrics>,
    /// Exports a span per connection, when OTLP export is on.
    pub tracer: Option<SdkTracer>,
    /// This gateway's workload, for Istio's metric labels.
    pub workload: Workload,
}

/// What is known about each side of a connection; the negotiation steps fill it in.
#[derive(Debug, Default)]
pub struct Sides {
    /// The client certificate's identity, once a client-side TLS handshake completed.
    pub identity: Option<Identity>,
    /// Whether the client side is TLS (from the first byte, or inside the protocol).
    pub downstream_tls: bool,
    /// The upstream address connected to, once connected.
    pub upstream: Option<SocketAddr>,
    /// The upstream's certificate identity, once an origination handshake completed.
    pub upstream_identity: Option<Identity>,
    /// Whether the upstream side is TLS.
    pub upstream_tls: bool,
}

impl Sides {
    /// Which sides are TLS: `none`, `downstream`, `upstream` or `both`.
    pub fn tls(&self) -> &'static str {
        match (self.downstream_tls, self.upstream_tls) {
            (true, true) => "both",
            (true, false) => "downstream",
            (false, true) => "upstream",
            (false, false) => "none",
        }
    }
}

/// One connection's record; written when dropped.
pub struct ConnectionRecord {
    recorder: Arc<Recorder>,
    /// Counts the connection as active until the record is written.
    _active: ActiveGuard,
    start: SystemTime,
    clock: Instant,
    /// Listener name.
    pub listener: Arc<str>,
    /// `outbound` (egress) or `inbound` (ingress), as Istio labels it.
    pub direction: &'static str,
    /// The client's address.
    pub downstream: SocketAddr,
    /// Route name, once chosen.
    pub route: Option<String>,
    /// The route's upstream host (Istio's `destination_service`), once chosen.
    pub destination_service: Option<String>,
    /// `tcp`, `mysql` or `postgres`, once routed.
    pub protocol: &'static str,
    /// SNI the client sent, at TLS listeners.
    pub sni: Option<String>,
    /// The `:authority` of an HBONE stream.
    pub authority: Option<String>,
    /// Identity and TLS of each side.
    pub sides: Sides,
    /// Bytes each way, counted by the relay as they move.
    pub moved: Arc<Moved>,
    /// Whether `opened` was counted (the relay started).
    opened: bool,
    /// Bytes (from downstream, from upstream) already reported by periodic records and
    /// added to the byte metrics, so each report carries what moved since the last.
    reported: [AtomicU64; 2],
    /// How it ended; `None` when the connection's task was dropped unfinished.
    end: Option<Result<(), ConnError>>,
    /// Counted, but no access-log line or span: a refusal whose logging is rate-limited
    /// elsewhere (abuse limits), so a flood cannot flood the log.
    pub quiet: bool,
}

impl ConnectionRecord {
    /// A record for a connection just accepted from `downstream` on `listener`.
    pub fn new(recorder: Arc<Recorder>, listener: Arc<str>, direction: &'static str, downstream: SocketAddr) -> ConnectionRecord {
        ConnectionRecord {
            _active: recorder.metrics.connection_active(&listener),
            recorder,
            start: SystemTime::now(),
            clock: Instant::now(),
            listener,
            direction,
            downstream,
            route: None,
            destination_service: None,
            protocol: "tcp",
            sni: None,
            authority: None,
            sides: Sides::default(),
            moved: Arc::default(),
            opened: false,
            reported: [AtomicU64::new(0), AtomicU64::new(0)],
            end: None,
            quiet: false,
        }
    }

    /// The gateway's metrics, for the stages that observe durations.
    pub fn metrics(&self) -> &Metrics {
        &self.recorder.metrics
    }

    /// Counts the connection as opened: routed, authorized and connected upstream, the
    /// moment the relay starts (the same for every protocol).
    pub fn opened(&mut self) {
        if !self.opened {
            self.opened = true;
            self.recorder.metrics.opened.add(&self.labels(), 1);
            self.recorder.metrics.istio_opened.add(&self.istio_labels("-"), 1);
        }
    }

    /// Records how the connection ended; the record is written when it drops.
    pub fn finish(&mut self, end: Result<(), ConnError>) {
        self.end = Some(end);
    }

    /// Labels for the connection metrics of this connection.
    pub fn labels(&self) -> ConnectionLabels {
        ConnectionLabels {
            listener: self.listener.to_string(),
            route: self.route.clone().unwrap_or_default(),
            direction: self.direction,
            mtls: if self.sides.identity.is_some() { "true" } else { "false" },
        }
    }

    fn count(&self, class: Class, error: Option<&ConnError>) {
        let metrics = &self.recorder.metrics;
        let labels = self.labels();
        let flags = response_flags(error);
        self.count_bytes(&labels, flags);
        if self.opened {
            metrics.istio_closed.add(&self.istio_labels(flags), 1);
        }
        if let Some(refusal) = class.refusal {
            metrics.handshake_failures.add(&RefusalLabels { listener: labels.listener.clone(), reason: refusal.as_str() }, 1);
        }
        // The one place upstream failures are counted. A database server that broke its
        // protocol was reached: that is not a connect failure.
        if let (Some(ConnError::Upstream(e)), Some(route)) = (error, &self.route) {
            if !matches!(e, UpstreamError::Protocol(_)) {
                let route = RouteLabels { route: route.clone() };
                if e.is_dns() {
                    metrics.dns_failures.add(&route, 1);
                }
                metrics.upstream_failures.add(&route, 1);
            }
        }
        let ConnectionLabels { listener, route, direction, mtls } = labels;
        metrics.closed.add(&ClosedLabels { listener, route, direction, mtls, outcome: class.outcome.as_str() }, 1);
    }

    /// Adds what moved since the last report to the byte metrics; returns that delta
    /// (from downstream, from upstream).
    fn count_bytes(&self, labels: &ConnectionLabels, flags: &'static str) -> (u64, u64) {
        let (down, up) = self.moved.get();
        let received = down - self.reported[0].swap(down, Ordering::Relaxed);
        let sent = up - self.reported[1].swap(up, Ordering::Relaxed);
        if sent > 0 || received > 0 {
            let metrics = &self.recorder.metrics;
            metrics.sent_bytes.add(labels, sent);
            metrics.received_bytes.add(labels, received);
            let istio = self.istio_labels(flags);
            metrics.istio_sent_bytes.add(&istio, sent);
            metrics.istio_received_bytes.add(&istio, received);
        }
        (received, sent)
    }

    /// Istio's standard labels for this connection. The egress reports as the source
    /// (its own workload is the client side; the destination is the route's upstream and
    /// the identity the origination peer presented), the ingress as the destination (its
    /// own workload is the server side; the source is the verified client identity, and
    /// `connection_security_policy` says whether it was mutual TLS).
    fn istio_labels(&self, response_flags: &'static str) -> IstioTcpLabels {
        let own = &self.recorder.workload;
        let unknown = || "unknown".to_owned();
        let principal = |id: &Option<Identity>| id.as_ref().map_or_else(unknown, |id| id.to_string());
        let namespace_of = |id: &Option<Identity>| id.as_ref().and_then(spiffe_namespace).unwrap_or_else(unknown);
        let service = self.destination_service.clone().unwrap_or_else(unknown);
        let (service_name, service_namespace) = service_parts(&service);
        let source = self.direction == "outbound";
        let (client, server) = (&self.sides.identity, &self.sides.upstream_identity);
        IstioTcpLabels {
            reporter: if source { "source" } else { "destination" },
            source_workload: if source { own.name.clone() } else { unknown() },
            source_workload_namespace: if source { own.namespace.clone() } else { namespace_of(client) },
            source_principal: principal(client),
            source_canonical_service: if source { own.canonical_service.clone() } else { unknown() },
            source_canonical_revision: if source { own.canonical_revision.clone() } else { unknown() },
            source_cluster: if source { own.cluster.clone() } else { unknown() },
            destination_workload: if source { unknown() } else { own.name.clone() },
            destination_workload_namespace: if source { namespace_of(server) } else { own.namespace.clone() },
            destination_principal: principal(server),
            destination_canonical_service: if source { unknown() } else { own.canonical_service.clone() },
            destination_canonical_revision: if source { unknown() } else { own.canonical_revision.clone() },
            destination_service_name: service_name,
            destination_service_namespace: service_namespace,
            destination_service: service,
            destination_cluster: if source { unknown() } else { own.cluster.clone() },
            request_protocol: "tcp",
            response_flags,
            connection_security_policy: match (source, client.is_some()) {
                (true, _) => "unknown",
                (false, true) => "mutual_tls",
                (false, false) => "none",
            },
        }
    }

    /// The record of a connection that has just started to relay (with
    /// `access_log_flush_interval`, like Envoy's `flush_access_log_on_connected`).
    pub fn report_open(&self) {
        self.write_line(Report::Open, "open", tracing::Level::INFO, "relaying", (0, 0));
    }

    /// The periodic record of a long-lived connection: the bytes since the last record,
    /// in the line and in the metrics (Envoy's `access_log_flush_interval`), so an
    /// hours-long database session is visible while it lives.
    pub fn report_periodic(&self) {
        let delta = self.count_bytes(&self.labels(), "-");
        self.write_line(Report::Periodic, "open", tracing::Level::INFO, "relaying", delta);
    }

    fn span(&self, class: Class, reason: &str, end: SystemTime) {
        let Some(tracer) = &self.recorder.tracer else { return };
        let text = |v: &Option<String>| v.clone().unwrap_or_default();
        let mut attributes = vec![
            KeyValue::new("strait.listener", self.listener.to_string()),
            KeyValue::new("strait.route", text(&self.route)),
            KeyValue::new("strait.direction", self.direction),
            KeyValue::new("strait.peer.identity", self.sides.identity.as_ref().map(|i| i.to_string()).unwrap_or_default()),
            KeyValue::new("tls.server_name", text(&self.sni)),
            KeyValue::new("client.address", self.downstream.to_string()),
            KeyValue::new("strait.bytes_received", self.moved.get().0 as i64),
            KeyValue::new("strait.bytes_sent", self.moved.get().1 as i64),
            KeyValue::new("strait.duration_ms", self.clock.elapsed().as_millis() as i64),
            KeyValue::new("strait.outcome", class.outcome.as_str()),
            KeyValue::new("strait.reason", reason.to_owned()),
        ];
        if let Some(upstream) = self.sides.upstream {
            attributes.push(KeyValue::new("server.address", upstream.to_string()));
        }
        let mut span = tracer
            .span_builder(format!("{} {}", self.direction, self.route.as_deref().unwrap_or("-")))
            .with_kind(opentelemetry::trace::SpanKind::Server)
            .with_start_time(self.start)
            .with_attributes(attributes)
            .start(tracer);
        if class.outcome != Outcome::Closed {
            span.set_status(Status::error(reason.to_owned()));
        }
        span.end_with_timestamp(end);
    }

    /// One access-log line; `bytes` are (received, sent) as this record reports them.
    fn write_line(&self, report: Report, outcome: &str, level: tracing::Level, reason: &str, bytes: (u64, u64)) {
        let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let start = humantime::format_rfc3339_millis(self.start).to_string();
        let route = dash(self.route.clone());
        let upstream = dash(self.sides.upstream.map(|a| a.to_string()));
        let sni = dash(self.sni.clone());
        let authority = dash(self.authority.clone());
        let identity = dash(self.sides.identity.as_ref().map(|i| i.to_string()));
        let duration_ms = self.clock.elapsed().as_millis() as u64;
        macro_rules! line {
            ($level:ident) => {
                tracing::$level!(
                    target: "strait::access",
                    start = %start,
                    listener = %self.listener,
                    route = %route,
                    downstream = %self.downstream,
                    upstream = %upstream,
                    sni = %sni,
                    authority = %authority,
                    identity = %identity,
                    protocol = %self.protocol,
                    tls = %self.sides.tls(),
                    bytes_received = bytes.0,
                    bytes_sent = bytes.1,
                    duration_ms,
                    outcome = %outcome,
                    reason = %reason,
                    record = %report.as_str(),
                )
            };
        }
        match level {
            tracing::Level::INFO => line!(info),
            tracing::Level::DEBUG | tracing::Level::TRACE => line!(debug),
            _ => line!(warn),
        }
    }
}

impl Drop for ConnectionRecord {
    fn drop(&mut self) {
        let end = self.end.take().unwrap_or(Err(ConnError::Abandoned));
        let (class, reason) = match &end {
            Ok(()) => (Class { outcome: Outcome::Closed, refusal: None, level: tracing::Level::INFO }, "eof".to_owned()),
            Err(e) => (e.classify(), e.to_string()),
        };
        self.count(class, end.as_ref().err());
        if self.quiet {
            return;
        }
        self.span(class, &reason, SystemTime::now());
        self.write_line(Report::Close, class.outcome.as_str(), class.level, &reason, self.moved.get());
    }
}

/// Envoy's response flags for how a connection ended, as Istio's metrics carry them.
fn response_flags(error: Option<&ConnError>) -> &'static str {
    match error {
        Some(ConnError::Upstream(_)) => "UF",
        Some(ConnError::UnknownSni(_) | ConnError::UnknownAuthority(_) | ConnError::NoSni | ConnError::ListenerRemoved | ConnError::PlaintextWithoutRoute) => {
            "NR"
        }
        _ => "-",
    }
}

/// The namespace in a SPIFFE ID of Istio's form (`spiffe://td/ns/NS/sa/SA`).
fn spiffe_namespace(identity: &Identity) -> Option<String> {
    let uri = identity.uris.first()?;
    let path = uri.strip_prefix("spiffe://")?.split_once('/')?.1;
    let mut segments = path.split('/');
    (segments.next() == Some("ns")).then(|| segments.next().map(str::to_owned)).flatten()
}

/// `mysql.default.svc.cluster.local` -> (`mysql`, `default`); another host is its own
/// name, namespace `unknown`.
fn service_parts(host: &str) -> (String, String) {
    let labels: Vec<&str> = host.split('.').collect();
    match labels.as_slice() {
        [name, namespace, "svc", ..] => ((*name).to_owned(), (*namespace).to_owned()),
        _ => (host.to_owned(), "unknown".to_owned()),
    }
}

/// Which record of a connection a line is (Envoy's `%ACCESS_LOG_TYPE%`): the close record
/// carries the totals, the others what moved since the previous record.
#[derive(Clone, Copy, Debug)]
enum Report {
    /// The relay started.
    Open,
    /// Every `access_log_flush_interval` while it runs.
    Periodic,
    /// The end (always written).
    Close,
}

impl Report {
    fn as_str(self) -> &'static str {
        match self {
            Report::Open => "open",
            Report::Periodic => "periodic",
            Report::Close => "close",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder() -> Arc<Recorder> {
        let workload = Workload {
            name: "strait-egress".into(),
            namespace: "istio-system".into(),
            canonical_service: "strait-egress".into(),
            canonical_revision: "latest".into(),
            cluster: "c1".into(),
        };
        Arc::new(Recorder { metrics: Arc::new(Metrics::new(None)), tracer: None, workload })
    }

    #[test]
    fn istio_labels_name_services_and_namespaces() {
        assert_eq!(service_parts("mysql.default.svc.cluster.local"), ("mysql".into(), "default".into()));
        assert_eq!(service_parts("db.strait.test"), ("db.strait.test".into(), "unknown".into()));
        let id = Identity { uris: vec!["spiffe://cluster.local/ns/payments/sa/api".into()], ..Identity::default() };
        assert_eq!(spiffe_namespace(&id).as_deref(), Some("payments"));
        assert_eq!(spiffe_namespace(&Identity::default()), None);
        let recorder = recorder();
        let mut inbound = ConnectionRecord::new(recorder.clone(), Arc::from("mtls"), "inbound", "127.0.0.1:1".parse().unwrap());
        inbound.sides.identity = Some(id);
        inbound.destination_service = Some("mysql.default.svc.cluster.local".into());
        let labels = inbound.istio_labels("-");
        assert_eq!((labels.reporter, labels.connection_security_policy), ("destination", "mutual_tls"));
        assert_eq!((labels.source_workload_namespace.as_str(), labels.destination_workload.as_str()), ("payments", "strait-egress"));
        assert_eq!((labels.source_canonical_revision.as_str(), labels.destination_canonical_revision.as_str()), ("unknown", "latest"));
        assert_eq!((labels.destination_service_name.as_str(), labels.destination_service_namespace.as_str()), ("mysql", "default"));
    }

    fn record(recorder: &Arc<Recorder>) -> ConnectionRecord {
        ConnectionRecord::new(recorder.clone(), Arc::from("plain"), "outbound", "127.0.0.1:5000".parse().unwrap())
    }

    #[test]
    fn a_record_dropped_unfinished_counts_as_cut() {
        let recorder = recorder();
        let mut r = record(&recorder);
        r.route = Some("db".into());
        r.opened();
        r.moved.from_downstream.store(7, Ordering::Relaxed);
        drop(r);
        let text = recorder.metrics.encode();
        assert!(
            text.contains("strait_tcp_connections_closed_total{listener=\"plain\",route=\"db\",direction=\"outbound\",mtls=\"false\",outcome=\"drained\"} 1"),
            "{text}"
        );
        assert!(text.contains("strait_tcp_received_bytes_total{listener=\"plain\",route=\"db\",direction=\"outbound\",mtls=\"false\"} 7"), "{text}");
        assert!(text.contains("strait_active_connections{listener=\"plain\"} 0"), "{text}");
    }

    #[test]
    fn upstream_failures_are_counted_once_with_dns_apart() {
        let recorder = recorder();
        for dns in [true, false] {
            let mut r = record(&recorder);
            r.route = Some("db".into());
            let error = if dns {
                UpstreamError::Resolve(crate::resolve::ResolveError::Lookup { host: "x".into(), reason: "NXDOMAIN".into() })
            } else {
                UpstreamError::Connect(Vec::new())
            };
            r.finish(Err(error.into()));
        }
        let text = recorder.metrics.encode();
        assert!(text.contains("strait_upstream_connect_failures_total{route=\"db\"} 2"), "{text}");
        assert!(text.contains("strait_dns_resolution_failures_total{route=\"db\"} 1"), "{text}");
        assert!(!text.contains("strait_tcp_connections_opened_total{"), "never opened: {text}");
    }
}
