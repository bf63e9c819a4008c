//! The connection record: what is known about one connection, filled in by the pipeline
//! as it goes, and written when it is dropped — the access-log line (Istio's TCP access
//! log, field for field where they overlap), the closed and bytes metrics, and the OTLP
//! span. Because it records on drop, a connection cut by the drain or by the process
//! stopping is still logged and counted.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use opentelemetry::trace::{Span, Status, Tracer};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::SdkTracer;

use crate::error::{Class, ConnError, Outcome, UpstreamError};
use crate::identity::Identity;
use crate::metrics::{ActiveGuard, ClosedLabels, ConnectionLabels, Metrics, RefusalLabels, RouteLabels};
use crate::relay::Moved;

/// Where finished connections are recorded: one per gateway, shared by its connections.
pub struct Recorder {
    /// The gateway's metrics.
    pub metrics: Arc<Metrics>,
    /// Exports a span per connection, when OTLP export is on.
    pub tracer: Option<SdkTracer>,
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
    /// `tcp`, `mysql` or `postgres`, once routed.
    pub protocol: &'static str,
    /// SNI the client sent, at TLS listeners.
    pub sni: Option<String>,
    /// Identity and TLS of each side.
    pub sides: Sides,
    /// Bytes each way, counted by the relay as they move.
    pub moved: Moved,
    /// Whether `opened` was counted (the relay started).
    opened: bool,
    /// How it ended; `None` when the connection's task was dropped unfinished.
    end: Option<Result<(), ConnError>>,
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
            protocol: "tcp",
            sni: None,
            sides: Sides::default(),
            moved: Moved::default(),
            opened: false,
            end: None,
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
        let (sent, received) = (self.moved.from_upstream, self.moved.from_downstream);
        if sent > 0 || received > 0 {
            metrics.sent_bytes.add(&labels, sent);
            metrics.received_bytes.add(&labels, received);
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
            KeyValue::new("strait.bytes_received", self.moved.from_downstream as i64),
            KeyValue::new("strait.bytes_sent", self.moved.from_upstream as i64),
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

    fn write_line(&self, class: Class, reason: &str) {
        let dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        let start = humantime::format_rfc3339_millis(self.start).to_string();
        let route = dash(self.route.clone());
        let upstream = dash(self.sides.upstream.map(|a| a.to_string()));
        let sni = dash(self.sni.clone());
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
                    identity = %identity,
                    protocol = %self.protocol,
                    tls = %self.sides.tls(),
                    bytes_received = self.moved.from_downstream,
                    bytes_sent = self.moved.from_upstream,
                    duration_ms,
                    outcome = %class.outcome.as_str(),
                    reason = %reason,
                )
            };
        }
        match class.level {
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
        self.span(class, &reason, SystemTime::now());
        self.write_line(class, &reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(recorder: &Arc<Recorder>) -> ConnectionRecord {
        ConnectionRecord::new(recorder.clone(), Arc::from("plain"), "outbound", "127.0.0.1:5000".parse().unwrap())
    }

    #[test]
    fn a_record_dropped_unfinished_counts_as_cut() {
        let recorder = Arc::new(Recorder { metrics: Arc::new(Metrics::new(None)), tracer: None });
        let mut r = record(&recorder);
        r.route = Some("db".into());
        r.opened();
        r.moved.from_downstream = 7;
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
        let recorder = Arc::new(Recorder { metrics: Arc::new(Metrics::new(None)), tracer: None });
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
