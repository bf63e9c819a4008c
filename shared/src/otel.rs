//! OpenTelemetry export over OTLP/HTTP (protobuf) to the collector named in
//! `[telemetry] otlp_endpoint`: one span per connection, and every metric of
//! [`crate::metrics`] with the same names and labels.
//!
//! The span carries what the access log carries (route, listener, peer identity, SNI,
//! bytes, duration, outcome), so a trace backend can follow a stream across both hops.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use opentelemetry::metrics::{Counter, Gauge, Histogram, MeterProvider, UpDownCounter};
use opentelemetry::trace::{Span, Status, Tracer, TracerProvider};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use crate::access_log::{AccessLog, Outcome};

static TRACER: OnceLock<(SdkTracerProvider, SdkTracer)> = OnceLock::new();
static METRICS: OnceLock<(SdkMeterProvider, Instruments)> = OnceLock::new();

/// The OTLP twins of the Prometheus metrics; [`crate::metrics`] records into both.
pub struct Instruments {
    /// `strait_tcp_connections_opened`.
    pub opened: Counter<u64>,
    /// `strait_tcp_connections_closed`.
    pub closed: Counter<u64>,
    /// `strait_tcp_sent_bytes`.
    pub sent_bytes: Counter<u64>,
    /// `strait_tcp_received_bytes`.
    pub received_bytes: Counter<u64>,
    /// `strait_active_connections`.
    pub active: UpDownCounter<i64>,
    /// `strait_handshake_failures`.
    pub handshake_failures: Counter<u64>,
    /// `strait_connections_shed`.
    pub shed: Counter<u64>,
    /// `strait_upstream_connect_seconds`.
    pub upstream_connect_seconds: Histogram<f64>,
    /// `strait_upstream_connect_failures`.
    pub upstream_failures: Counter<u64>,
    /// `strait_dns_resolution_failures`.
    pub dns_failures: Counter<u64>,
    /// `strait_certificate_not_after_seconds`.
    pub cert_not_after: Gauge<f64>,
    /// `strait_config_reloads`.
    pub reloads: Counter<u64>,
    /// `strait_database_negotiations`.
    pub negotiations: Counter<u64>,
}

/// The OTLP instruments, when metric export is on.
pub fn instruments() -> Option<&'static Instruments> {
    METRICS.get().map(|(_, instruments)| instruments)
}

/// Starts exporting spans and metrics to `endpoint` (e.g. `http://otel-collector:4318`),
/// metrics every `interval`.
pub fn init(endpoint: &str, service_name: &str, interval: Duration) -> Result<(), String> {
    let resource = || Resource::builder().with_service_name(service_name.to_owned()).build();
    let base = endpoint.trim_end_matches('/');
    let metric_exporter = opentelemetry_otlp::MetricExporter::builder()
        .with_http()
        .with_endpoint(format!("{base}/v1/metrics"))
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("OTLP metric exporter for {endpoint}: {e}"))?;
    let reader = PeriodicReader::builder(metric_exporter).with_interval(interval).build();
    let meters = SdkMeterProvider::builder().with_reader(reader).with_resource(resource()).build();
    let meter = meters.meter("strait");
    let instruments = Instruments {
        opened: meter.u64_counter("strait_tcp_connections_opened").with_description("TCP connections opened (routed and authorized)").build(),
        closed: meter.u64_counter("strait_tcp_connections_closed").with_description("TCP connections closed, by outcome").build(),
        sent_bytes: meter.u64_counter("strait_tcp_sent_bytes").with_unit("By").build(),
        received_bytes: meter.u64_counter("strait_tcp_received_bytes").with_unit("By").build(),
        active: meter.i64_up_down_counter("strait_active_connections").build(),
        handshake_failures: meter.u64_counter("strait_handshake_failures").build(),
        shed: meter.u64_counter("strait_connections_shed").build(),
        upstream_connect_seconds: meter.f64_histogram("strait_upstream_connect_seconds").with_unit("s").build(),
        upstream_failures: meter.u64_counter("strait_upstream_connect_failures").build(),
        dns_failures: meter.u64_counter("strait_dns_resolution_failures").build(),
        cert_not_after: meter.f64_gauge("strait_certificate_not_after_seconds").with_unit("s").build(),
        reloads: meter.u64_counter("strait_config_reloads").build(),
        negotiations: meter.u64_counter("strait_database_negotiations").build(),
    };
    METRICS.set((meters, instruments)).map_err(|_| "OpenTelemetry metrics are already initialised".to_owned())?;

    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("OTLP exporter for {endpoint}: {e}"))?;
    let batch = BatchConfigBuilder::default().with_scheduled_delay(Duration::from_millis(500)).build();
    let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch).build();
    let provider = SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource()).build();
    let tracer = provider.tracer("strait");
    TRACER.set((provider, tracer)).map_err(|_| "OpenTelemetry is already initialised".to_owned())
}

/// Exports the span of a finished connection, if export is on.
pub fn record(log: &AccessLog, outcome: &Outcome, end: SystemTime) {
    let Some((_, tracer)) = TRACER.get() else { return };
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let mut attributes = vec![
        KeyValue::new("strait.listener", log.listener.to_string()),
        KeyValue::new("strait.route", text(&log.route)),
        KeyValue::new("strait.direction", log.direction),
        KeyValue::new("strait.peer.identity", log.identity.as_ref().map(|i| i.to_string()).unwrap_or_default()),
        KeyValue::new("tls.server_name", text(&log.sni)),
        KeyValue::new("client.address", log.downstream.to_string()),
        KeyValue::new("strait.bytes_received", log.bytes_received as i64),
        KeyValue::new("strait.bytes_sent", log.bytes_sent as i64),
        KeyValue::new("strait.duration_ms", log.duration.as_millis() as i64),
        KeyValue::new("strait.outcome", outcome.class()),
        KeyValue::new("strait.reason", outcome.reason().to_owned()),
    ];
    if let Some(upstream) = log.upstream {
        attributes.push(KeyValue::new("server.address", upstream.to_string()));
    }
    let mut span = tracer
        .span_builder(format!("{} {}", log.direction, log.route.as_deref().unwrap_or("-")))
        .with_kind(opentelemetry::trace::SpanKind::Server)
        .with_start_time(log.start)
        .with_attributes(attributes)
        .start(tracer);
    if !matches!(outcome, Outcome::Closed) {
        span.set_status(Status::error(outcome.reason().to_owned()));
    }
    span.end_with_timestamp(end);
}

/// Flushes spans and metrics still queued; called once at exit.
pub fn shutdown() {
    if let Some((provider, _)) = TRACER.get() {
        let _ = provider.shutdown();
    }
    if let Some((meters, _)) = METRICS.get() {
        let _ = meters.shutdown();
    }
}
