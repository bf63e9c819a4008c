//! OpenTelemetry export: one span per connection, sent over OTLP/HTTP (protobuf) to the
//! collector named in `[telemetry] otlp_endpoint`.
//!
//! The span carries what the access log carries (route, listener, peer identity, SNI,
//! bytes, duration, outcome), so a trace backend can follow a stream across both hops.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{Span, Status, Tracer, TracerProvider};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

use crate::access_log::{AccessLog, Outcome};

static TRACER: OnceLock<(SdkTracerProvider, SdkTracer)> = OnceLock::new();

/// Starts exporting spans to `endpoint` (e.g. `http://otel-collector:4318`).
pub fn init(endpoint: &str, service_name: &str) -> Result<(), String> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(format!("{}/v1/traces", endpoint.trim_end_matches('/')))
        .with_timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| format!("OTLP exporter for {endpoint}: {e}"))?;
    let batch = BatchConfigBuilder::default().with_scheduled_delay(Duration::from_millis(500)).build();
    let processor = BatchSpanProcessor::builder(exporter).with_batch_config(batch).build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(processor)
        .with_resource(Resource::builder().with_service_name(service_name.to_owned()).build())
        .build();
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

/// Flushes spans still queued; called once at exit.
pub fn shutdown() {
    if let Some((provider, _)) = TRACER.get() {
        let _ = provider.shutdown();
    }
}
