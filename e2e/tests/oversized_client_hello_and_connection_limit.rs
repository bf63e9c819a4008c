//! Limits that protect the process. An oversized ClientHello — a record header claiming
//! 64 KiB, or a well-formed ClientHello of about 120 KiB (thousands of cipher suites and
//! extensions) sent in 16 KiB records — is refused after its first record, without
//! waiting for the rest. With `max_connections = 5`, a sixth concurrent connection is
//! closed at once, counted in `strait_connections_shed_total` and logged at a limited
//! rate; once a connection closes, a new client is served.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use strait_e2e::hostile::*;
use strait_e2e::*;

fn config(pki: &Pki, backend: u16, max_connections: usize) -> String {
    Config::new()
        // A hard cap: held connections are never shed to admit new ones, however idle.
        .listener(Listener::mutual("limited", &pki.path("ingress")).set("max_connections", max_connections).set("shed_idle_under_pressure", false))
        .route(Route::to("echo", backend).hosts(&[SERVICE_HOST]))
        .toml()
}

#[test]
fn oversized_client_hellos_are_refused_after_the_first_record() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let mut ingress = Gateway::start(Role::Ingress, pki.dir.path(), &config(&pki, echo.port, 16384));
    let port = ingress.port("limited");
    let good = || pki.egress_client();
    served(port, SERVICE_HOST, good(), "start");

    // A handshake record whose header claims 65535 bytes (TLS allows 16384 + 2048).
    let mut huge_record = vec![0x16, 0x03, 0x01, 0xff, 0xff];
    huge_record.extend(&client_hello(SERVICE_HOST)[5..]);
    let closed = send_and_expect_close(port, huge_record, Duration::from_secs(5));
    assert!(closed.received.len() <= 7, "{closed:?}");
    let line = ingress.wait_for_access_line(&["outcome=refused", "bad ClientHello", "MessageTooLarge"]);
    assert!(line.contains("route=- ") && line.contains("sni=- "), "{line}");
    served(port, SERVICE_HOST, good(), "a record header claiming 64 KiB");

    // A structurally valid ClientHello of ~120 KiB: 30000 cipher suites and 1000
    // extensions of 56 bytes, SNI first, in 16 KiB records.
    let hello = oversized_client_hello(SERVICE_HOST, 30_000, 1000, 56);
    assert!(hello.len() > 110 * 1024, "{}", hello.len());
    let closed = send_and_expect_close(port, hello, Duration::from_secs(5));
    assert!(closed.received.len() <= 7, "{closed:?}");
    if let Some((level, _)) = alert(&closed.received) {
        assert_eq!(level, 2, "a fatal alert");
    }
    let line = ingress.wait_for_access_line(&["outcome=refused", "bad ClientHello", "HandshakePayloadTooLarge"]);
    assert!(line.contains("route=- ") && line.contains("bytes_received=0 "), "{line}");
    served(port, SERVICE_HOST, good(), "a 120 KiB ClientHello");

    assert_eq!(metric(&ingress, "strait_handshake_failures_total", &[("listener", "limited"), ("reason", "not_tls")]), 2.0);
    assert_alive(&mut ingress);
}

#[test]
fn connections_beyond_max_connections_are_shed_at_once() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let mut ingress = Gateway::start(Role::Ingress, pki.dir.path(), &config(&pki, echo.port, 5));
    let port = ingress.port("limited");
    let good = || pki.egress_client();
    let shed = |ingress: &Gateway| metric(ingress, "strait_connections_shed_total", &[("listener", "limited")]);

    // Five mutual-TLS streams, each proven end to end, held open.
    let mut open: Vec<_> = (0..5)
        .map(|i| {
            let mut stream = tls_connect(port, SERVICE_HOST, good()).unwrap_or_else(|e| panic!("connection {i} of 5: {e}"));
            let message = format!("held connection {i}\n");
            stream.write_all(message.as_bytes()).unwrap();
            let mut echoed = vec![0u8; message.len()];
            stream.read_exact(&mut echoed).unwrap();
            assert_eq!(echoed, message.as_bytes());
            stream
        })
        .collect();
    assert_eq!(metric(&ingress, "strait_active_connections", &[("listener", "limited")]), 5.0);
    assert_eq!(shed(&ingress), 0.0);

    // The sixth: accepted by the kernel, closed by the gateway at once, without a byte.
    let start = Instant::now();
    let mut sixth = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let closed = closed_by_gateway(&mut sixth, Duration::from_secs(5));
    assert!(closed.received.is_empty(), "{closed:?}");
    assert!(start.elapsed() < Duration::from_secs(1), "the sixth connection was held for {:?}", start.elapsed());
    assert_eq!(shed(&ingress), 1.0);
    // A TLS client as the sixth: its handshake fails.
    assert!(tls_connect(port, SERVICE_HOST, good()).is_err(), "a sixth TLS client completed its handshake");
    assert_eq!(shed(&ingress), 2.0);

    // A burst of 30 more: each shed, the warning logged at most once a second.
    let burst = Instant::now();
    for _ in 0..30 {
        let mut extra = TcpStream::connect(("127.0.0.1", port)).unwrap();
        closed_by_gateway(&mut extra, Duration::from_secs(5));
    }
    let seconds = burst.elapsed().as_secs_f64().ceil() as usize;
    assert_eq!(wait_for_metric(&ingress, "strait_connections_shed_total", &[("listener", "limited")], 32.0), 32.0);
    let warnings = ingress.proc.output().lines().filter(|l| l.contains("connection limit reached")).count();
    assert!((1..=seconds + 2).contains(&warnings), "{warnings} shed warnings for 32 sheds in {seconds}s:\n{}", ingress.proc.output());
    // Shed connections never reach the pipeline: no access-log line, no handshake count.
    assert!(ingress.access_log().is_empty(), "{:#?}", ingress.access_log());

    // The held streams are unharmed.
    for (i, stream) in open.iter_mut().enumerate() {
        stream.write_all(b"still here\n").unwrap();
        let mut echoed = [0u8; 11];
        stream.read_exact(&mut echoed).unwrap_or_else(|e| panic!("held connection {i} after the shedding: {e}"));
        assert_eq!(&echoed, b"still here\n");
    }

    // One closes; its slot is free again.
    let mut closing = open.pop().unwrap();
    closing.conn.send_close_notify();
    closing.flush().unwrap();
    assert!(read_all(&mut closing).is_empty());
    ingress.wait_for_access_line(&["outcome=closed"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(&ingress, "strait_active_connections", &[("listener", "limited")]) > 4.0 {
        assert!(Instant::now() < deadline, "the closed connection still counts as active");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The permit is released just after the gauge drops; give it a moment.
    std::thread::sleep(Duration::from_millis(200));
    served(port, SERVICE_HOST, good(), "the limit was reached and one connection closed");
    assert_eq!(shed(&ingress), 32.0, "the new client was shed");
    drop(open);
    assert_alive(&mut ingress);
}
