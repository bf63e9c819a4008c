//! A real OTLP/HTTP trace receiver on a loopback port: what an OpenTelemetry collector
//! does with `POST /v1/traces`, decoded with the opentelemetry-proto messages.
//!
//! It speaks just enough HTTP/1.1 for an exporter: several requests per connection,
//! `Content-Length` or chunked bodies, and an empty `ExportTraceServiceResponse` in
//! reply. Every span it receives is kept, flattened to strings, for the test to look at.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{metric::Data, number_data_point};
use prost::Message;

use crate::serve_each;

/// One received span: its name, its attributes and its resource's, as strings.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    /// The span name.
    pub name: String,
    /// Span attributes (`strait.route` -> `to-ingress`); numbers in decimal.
    pub attributes: BTreeMap<String, String>,
    /// Attributes of the resource it came with (`service.name`, ...).
    pub resource: BTreeMap<String, String>,
    /// The status message (empty for a span without an error status).
    pub status_message: String,
}

impl ReceivedSpan {
    /// An attribute's value, or "" when absent.
    pub fn attr(&self, key: &str) -> &str {
        self.attributes.get(key).map_or("", String::as_str)
    }

    /// An integer attribute, or `None` when absent or not a number.
    pub fn int(&self, key: &str) -> Option<i64> {
        self.attributes.get(key).and_then(|v| v.parse().ok())
    }
}

/// One data point of a received metric (sums and gauges; histograms by their count).
#[derive(Clone, Debug)]
pub struct ReceivedPoint {
    /// The metric name.
    pub name: String,
    /// The point's attributes (the Prometheus labels).
    pub attributes: BTreeMap<String, String>,
    /// Its value (a histogram's count).
    pub value: f64,
}

/// What the receiver has seen so far.
#[derive(Default)]
struct Received {
    /// Every span of every accepted export request, in arrival order.
    spans: Vec<ReceivedSpan>,
    /// Every metric data point, in arrival order.
    points: Vec<ReceivedPoint>,
    /// Requests it could not take (wrong path, undecodable body): shown when a wait fails.
    problems: Vec<String>,
    /// Export requests answered 200.
    exports: usize,
}

/// A running receiver; its threads live until the test process ends.
pub struct OtlpReceiver {
    /// Its port on 127.0.0.1.
    pub port: u16,
    received: Arc<Mutex<Received>>,
}

impl OtlpReceiver {
    /// Binds 127.0.0.1:0 and starts accepting (a thread per connection).
    pub fn start() -> OtlpReceiver {
        let received = Arc::new(Mutex::new(Received::default()));
        let shared = received.clone();
        let port = serve_each(move |stream| serve(stream, &shared));
        OtlpReceiver { port, received }
    }

    /// The `[telemetry] otlp_endpoint` value that sends spans here.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.received.lock().unwrap().spans.clone()
    }

    /// Waits up to `limit` for a metric point named `name` that `matches` accepts.
    pub fn wait_for_point(&self, limit: Duration, name: &str, matches: impl Fn(&ReceivedPoint) -> bool) -> ReceivedPoint {
        let deadline = Instant::now() + limit;
        loop {
            let found = self.received.lock().unwrap().points.iter().rev().find(|p| p.name == name && matches(p)).cloned();
            if let Some(point) = found {
                return point;
            }
            if Instant::now() > deadline {
                let received = self.received.lock().unwrap();
                let names: std::collections::BTreeSet<&str> = received.points.iter().map(|p| p.name.as_str()).collect();
                panic!("no point of {name} within {limit:?}; metrics received: {names:?}; problems: {:?}", received.problems);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits up to `limit` for a span `matches` accepts; panics with what did arrive.
    pub fn wait_for_span(&self, limit: Duration, what: &str, matches: impl Fn(&ReceivedSpan) -> bool) -> ReceivedSpan {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(span) = self.spans().into_iter().find(|s| matches(s)) {
                return span;
            }
            if Instant::now() > deadline {
                let received = self.received.lock().unwrap();
                panic!(
                    "no span {what} within {limit:?}; {} export requests, spans received:\n{:#?}\nproblems: {:?}",
                    received.exports, received.spans, received.problems
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Serves requests on one connection until the client closes it or asks to.
fn serve(stream: TcpStream, received: &Mutex<Received>) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let Ok(mut writer) = stream.try_clone() else { return };
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader) {
        let (status, body) = handle(&request, received);
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n{}\r\n",
            body.len(),
            if request.close { "Connection: close\r\n" } else { "" }
        );
        if writer.write_all(head.as_bytes()).and_then(|()| writer.write_all(&body)).is_err() || request.close {
            return;
        }
    }
}

/// One HTTP request as the receiver needs it.
struct Request {
    method: String,
    path: String,
    content_encoding: Option<String>,
    body: Vec<u8>,
    /// The client sent `Connection: close`.
    close: bool,
}

/// Reads one request; `None` at EOF or on anything that is not HTTP/1.1.
fn read_request(reader: &mut impl BufRead) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let (mut length, mut chunked, mut close, mut content_encoding) = (0usize, false, false, None);
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (name, value) = header.split_once(':')?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => length = value.parse().ok()?,
            "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
            "connection" => close = value.eq_ignore_ascii_case("close"),
            "content-encoding" => content_encoding = Some(value.to_owned()),
            _ => {}
        }
    }
    let body = if chunked { read_chunked(reader)? } else { read_exact(reader, length)? };
    Some(Request { method, path, content_encoding, body, close })
}

fn read_exact(reader: &mut impl Read, length: usize) -> Option<Vec<u8>> {
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some(body)
}

fn read_chunked(reader: &mut impl BufRead) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut size = String::new();
        reader.read_line(&mut size).ok()?;
        let size = usize::from_str_radix(size.trim().split(';').next()?, 16).ok()?;
        body.extend(read_exact(reader, size)?);
        let mut crlf = String::new();
        reader.read_line(&mut crlf).ok()?;
        if size == 0 {
            return Some(body);
        }
    }
}

/// Answers one request: 200 with an empty export response when it carried spans.
fn handle(request: &Request, received: &Mutex<Received>) -> (&'static str, Vec<u8>) {
    let mut received = received.lock().unwrap();
    if request.method == "POST" && request.path == "/v1/metrics" && request.content_encoding.is_none() {
        return match ExportMetricsServiceRequest::decode(request.body.as_slice()) {
            Ok(export) => {
                received.points.extend(points(export));
                received.exports += 1;
                ("200 OK", ExportMetricsServiceResponse::default().encode_to_vec())
            }
            Err(e) => {
                received.problems.push(format!("undecodable ExportMetricsServiceRequest ({} bytes): {e}", request.body.len()));
                ("400 Bad Request", Vec::new())
            }
        };
    }
    if request.method != "POST" || request.path != "/v1/traces" {
        received.problems.push(format!("{} {}: not an OTLP trace export", request.method, request.path));
        return ("404 Not Found", Vec::new());
    }
    if let Some(encoding) = &request.content_encoding {
        received.problems.push(format!("Content-Encoding {encoding} is not supported here"));
        return ("415 Unsupported Media Type", Vec::new());
    }
    match ExportTraceServiceRequest::decode(request.body.as_slice()) {
        Ok(export) => {
            received.spans.extend(flatten(export));
            received.exports += 1;
            ("200 OK", ExportTraceServiceResponse::default().encode_to_vec())
        }
        Err(e) => {
            received.problems.push(format!("undecodable ExportTraceServiceRequest ({} bytes): {e}", request.body.len()));
            ("400 Bad Request", Vec::new())
        }
    }
}

fn flatten(export: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    let mut spans = Vec::new();
    for resource_spans in export.resource_spans {
        let resource = strings(resource_spans.resource.map(|r| r.attributes).unwrap_or_default());
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                spans.push(ReceivedSpan {
                    name: span.name,
                    attributes: strings(span.attributes),
                    resource: resource.clone(),
                    status_message: span.status.map(|s| s.message).unwrap_or_default(),
                });
            }
        }
    }
    spans
}

fn points(export: ExportMetricsServiceRequest) -> Vec<ReceivedPoint> {
    let mut out = Vec::new();
    let number = |v: Option<number_data_point::Value>| match v {
        Some(number_data_point::Value::AsInt(i)) => i as f64,
        Some(number_data_point::Value::AsDouble(d)) => d,
        None => f64::NAN,
    };
    for resource in export.resource_metrics {
        for scope in resource.scope_metrics {
            for metric in scope.metrics {
                let name = metric.name.clone();
                let mut push = |attributes, value| out.push(ReceivedPoint { name: name.clone(), attributes: strings(attributes), value });
                match metric.data {
                    Some(Data::Sum(sum)) => sum.data_points.into_iter().for_each(|p| push(p.attributes, number(p.value))),
                    Some(Data::Gauge(gauge)) => gauge.data_points.into_iter().for_each(|p| push(p.attributes, number(p.value))),
                    Some(Data::Histogram(h)) => h.data_points.into_iter().for_each(|p| push(p.attributes, p.count as f64)),
                    _ => {}
                }
            }
        }
    }
    out
}

fn strings(attributes: Vec<KeyValue>) -> BTreeMap<String, String> {
    attributes.into_iter().map(|kv| (kv.key, kv.value.map(text).unwrap_or_default())).collect()
}

fn text(value: AnyValue) -> String {
    match value.value {
        Some(Value::StringValue(s)) => s,
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::ArrayValue(a)) => format!("[{}]", a.values.into_iter().map(text).collect::<Vec<_>>().join(", ")),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn export(name: &str) -> Vec<u8> {
        let span = Span {
            name: name.into(),
            attributes: vec![KeyValue { key: "n".into(), value: Some(AnyValue { value: Some(Value::IntValue(7)) }), ..KeyValue::default() }],
            ..Span::default()
        };
        let scope = ScopeSpans { spans: vec![span], ..ScopeSpans::default() };
        let request = ExportTraceServiceRequest { resource_spans: vec![ResourceSpans { scope_spans: vec![scope], ..ResourceSpans::default() }] };
        request.encode_to_vec()
    }

    fn status(reader: &mut impl BufRead) -> String {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let mut length = 0;
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            if header.trim().is_empty() {
                break;
            }
            if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        read_exact(reader, length).unwrap();
        line.trim().to_owned()
    }

    #[test]
    fn several_requests_on_one_connection_sized_or_chunked() {
        let receiver = OtlpReceiver::start();
        let stream = TcpStream::connect(("127.0.0.1", receiver.port)).unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        let first = export("first");
        write!(writer, "POST /v1/traces HTTP/1.1\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\n\r\n", first.len()).unwrap();
        writer.write_all(&first).unwrap();
        assert_eq!(status(&mut reader), "HTTP/1.1 200 OK");
        let second = export("second");
        write!(writer, "POST /v1/traces HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n", second.len()).unwrap();
        writer.write_all(&second).unwrap();
        writer.write_all(b"\r\n0\r\n\r\n").unwrap();
        assert_eq!(status(&mut reader), "HTTP/1.1 200 OK");
        writer.write_all(b"GET /v1/logs HTTP/1.1\r\nContent-Length: 0\r\n\r\n").unwrap();
        assert_eq!(status(&mut reader), "HTTP/1.1 404 Not Found");
        let spans = receiver.spans();
        assert_eq!(spans.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["first", "second"]);
        assert_eq!(spans[0].int("n"), Some(7));
    }
}
