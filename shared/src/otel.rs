//! OpenTelemetry export over OTLP/HTTP (protobuf) to the collector named in
//! `[telemetry] otlp_endpoint`: the meter every metric of [`crate::metrics`] is also
//! declared on, and the tracer the connection record exports its span with.
//!
//! Owned by the gateway that started it and passed down; nothing here is global.

use std::time::Duration;

use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry::trace::TracerProvider;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider};
use opentelemetry_sdk::Resource;

/// A running OTLP export: spans and metrics pushed to one collector.
pub struct Otel {
    meters: SdkMeterProvider,
    spans: SdkTracerProvider,
    /// Where connection spans are made.
    pub tracer: SdkTracer,
    /// Where the metrics are declared.
    pub meter: Meter,
}

impl Otel {
    /// Starts exporting to `endpoint` (e.g. `http://otel-collector:4318`), metrics every
    /// `interval`.
    pub fn start(endpoint: &str, service_name: &str, interval: Duration) -> Result<Otel, String> {
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
        let span_exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(format!("{base}/v1/traces"))
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| format!("OTLP exporter for {endpoint}: {e}"))?;
        let batch = BatchConfigBuilder::default().with_scheduled_delay(Duration::from_millis(500)).build();
        let processor = BatchSpanProcessor::builder(span_exporter).with_batch_config(batch).build();
        let spans = SdkTracerProvider::builder().with_span_processor(processor).with_resource(resource()).build();
        Ok(Otel { meter: meters.meter("strait"), tracer: spans.tracer("strait"), meters, spans })
    }

    /// Flushes spans and metrics still queued; called once when the gateway stops.
    pub fn shutdown(&self) {
        let _ = self.spans.shutdown();
        let _ = self.meters.shutdown();
    }
}
