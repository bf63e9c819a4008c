//! With `[telemetry] otlp_endpoint` set, the egress exports one span per connection over
//! OTLP/HTTP to a real receiver: route, listener, bytes and outcome as attributes and
//! `service.name` in the resource; a refused connection gets its span too.

use std::io::{Read, Write};
use std::time::Duration;

use strait_e2e::otlp::{OtlpReceiver, ReceivedSpan};
use strait_e2e::*;

/// The batch processor sends every 500 ms; this leaves room for a slow machine.
const ARRIVAL: Duration = Duration::from_secs(15);

#[test]
fn a_relayed_connection_arrives_as_a_span_with_its_attributes() {
    let pki = Pki::reference();
    let receiver = OtlpReceiver::start();
    let traced = start(&pki, &receiver);

    let reply = plain_exchange(traced.plain_port, b"one span per connection\n").unwrap();
    assert_eq!(reply, b"one span per connection\n");
    traced.egress.wait_for_access_line(&["listener=mysql-plain", "outcome=closed"]);

    let span = receiver
        .wait_for_span(ARRIVAL, "for the plain-port connection", |s| s.attr("strait.listener") == "mysql-plain" && s.attr("strait.outcome") == "closed");
    println!("{span:#?}");
    assert_eq!(span.attr("strait.route"), "to-ingress", "{span:#?}");
    assert_eq!(span.attr("strait.direction"), "outbound", "{span:#?}");
    assert_eq!(span.attr("strait.reason"), "eof", "{span:#?}");
    assert_eq!(span.int("strait.bytes_received"), Some(24), "bytes from the client: {span:#?}");
    assert_eq!(span.int("strait.bytes_sent"), Some(24), "bytes echoed back to the client: {span:#?}");
    assert!(span.int("strait.duration_ms").is_some(), "{span:#?}");
    assert!(span.attr("client.address").starts_with("127.0.0.1:"), "{span:#?}");
    assert_eq!(span.attr("server.address"), format!("127.0.0.1:{}", traced.ingress_port), "{span:#?}");
    assert_eq!(span.resource.get("service.name").map(String::as_str), Some("strait-egress"), "{span:#?}");
    assert_eq!(span.name, "outbound to-ingress");
    assert_eq!(only(&receiver.spans(), "mysql-plain"), 1, "exactly one span for one connection");

    // The ingress exports too: the same stream's other hop, with the verified client
    // identity and the SNI it was routed by.
    let inbound = receiver.wait_for_span(ARRIVAL, "from the ingress", |s| s.resource.get("service.name").is_some_and(|n| n == "strait-ingress"));
    println!("{inbound:#?}");
    assert_eq!(inbound.attr("strait.direction"), "inbound", "{inbound:#?}");
    assert_eq!(inbound.attr("strait.listener"), "mtls", "{inbound:#?}");
    assert_eq!(inbound.attr("strait.route"), "mysql", "{inbound:#?}");
    assert_eq!(inbound.attr("strait.outcome"), "closed", "{inbound:#?}");
    assert_eq!(inbound.attr("tls.server_name"), SERVICE_HOST, "{inbound:#?}");
    assert_eq!(inbound.attr("strait.peer.identity"), format!("client.{SERVICE_HOST}"), "{inbound:#?}");
    assert_eq!(inbound.int("strait.bytes_received"), Some(24), "{inbound:#?}");
}

#[test]
fn a_refused_connection_arrives_as_a_span_with_outcome_refused() {
    let pki = Pki::reference();
    let receiver = OtlpReceiver::start();
    let traced = start(&pki, &receiver);

    // The mesh listener wants a client certificate; this client has none.
    let config = client_config(None, &pki.path("mesh/egress/ca.crt"));
    if let Ok(mut stream) = tls_connect(traced.mesh_port, SERVICE_HOST, config) {
        let _ = stream.write_all(b"x");
        let _ = stream.read(&mut [0u8; 1]);
    }
    traced.egress.wait_for_access_line(&["listener=mesh", "outcome=refused"]);

    let span = receiver.wait_for_span(ARRIVAL, "for the refused mesh connection", |s| s.attr("strait.listener") == "mesh");
    println!("{span:#?}");
    assert_eq!(span.attr("strait.outcome"), "refused", "{span:#?}");
    assert!(span.attr("strait.reason").contains("no certificates"), "a refusal says why: {span:#?}");
    assert_eq!(span.attr("tls.server_name"), SERVICE_HOST, "{span:#?}");
    assert_eq!(span.status_message, span.attr("strait.reason"), "the span's error status carries the reason");
    assert_eq!(span.int("strait.bytes_sent"), Some(0), "{span:#?}");
    assert_eq!(span.resource.get("service.name").map(String::as_str), Some("strait-egress"), "{span:#?}");
}

/// Ingress in front of an echo server and the reference egress, both exporting to
/// `receiver`.
struct Traced {
    egress: Gateway,
    _ingress: Gateway,
    plain_port: u16,
    mesh_port: u16,
    ingress_port: u16,
}

fn start(pki: &Pki, receiver: &OtlpReceiver) -> Traced {
    let echo = EchoServer::start();
    let telemetry = format!("\n[telemetry]\notlp_endpoint = \"{}\"\n", receiver.endpoint());
    let ingress = Gateway::start(Role::Ingress, pki.dir.path(), &ingress_config(pki, echo.port).raw(&telemetry).toml());
    let ingress_port = ingress.port("mtls");
    let upstream = format!("127.0.0.1:{ingress_port}");
    let egress = Gateway::start(Role::Egress, pki.dir.path(), &egress_config(pki, &upstream).raw(&telemetry).toml());
    let (plain_port, mesh_port) = (egress.port("mysql-plain"), egress.port("mesh"));
    Traced { egress, _ingress: ingress, plain_port, mesh_port, ingress_port }
}

fn only(spans: &[ReceivedSpan], listener: &str) -> usize {
    spans.iter().filter(|s| s.attr("strait.listener") == listener).count()
}

/// The metrics reach the collector too, with the Prometheus names and labels.
#[test]
fn metrics_are_pushed_with_their_labels() {
    let receiver = OtlpReceiver::start();
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let (_ingress, ingress_port) = Gateway::reference_ingress(&pki, echo.port);
    let telemetry = format!("[telemetry]\notlp_endpoint = \"{}\"\nmetrics_interval = \"500ms\"\n", receiver.endpoint());
    let upstream = format!("127.0.0.1:{ingress_port}");
    let egress = Gateway::start(Role::Egress, pki.dir.path(), &egress_config(&pki, &upstream).raw(&telemetry).toml());
    let plain_port = egress.port("mysql-plain");
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", plain_port)).unwrap();
    std::io::Write::write_all(&mut stream, b"ping").unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut stream), "ping");

    let limit = std::time::Duration::from_secs(15);
    let opened = receiver.wait_for_point(limit, "strait_tcp_connections_opened", |p| p.attributes.get("route").map(String::as_str) == Some("to-ingress"));
    assert_eq!(opened.attributes.get("direction").map(String::as_str), Some("outbound"), "{opened:?}");
    assert!(opened.value >= 1.0, "{opened:?}");
    let closed = receiver.wait_for_point(limit, "strait_tcp_connections_closed", |p| p.attributes.get("outcome").map(String::as_str) == Some("closed"));
    assert!(closed.value >= 1.0, "{closed:?}");
    let received = receiver.wait_for_point(limit, "strait_tcp_received_bytes", |_| true);
    assert!(received.value >= 4.0, "{received:?}");
    receiver.wait_for_point(limit, "strait_upstream_connect_seconds", |p| p.value >= 1.0);
    let expiry = receiver.wait_for_point(limit, "strait_certificate_not_after_seconds", |p| p.attributes.contains_key("serial"));
    assert!(expiry.value > 1.7e9, "{expiry:?}");
}
