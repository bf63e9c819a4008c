//! Clients that start a TLS handshake and never finish it — half a ClientHello left
//! hanging, a ClientHello trickled a byte at a time, a connection that sends nothing —
//! are closed by the listener's `handshake_timeout` (2 s here), logged and counted as
//! `timeout`. Five hundred half ClientHellos at once do not keep a legitimate client
//! out: it is served while they hang, and all five hundred are closed on time.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use strait_e2e::hostile::*;
use strait_e2e::*;

const FLOOD: usize = 500;

fn config(pki: &Pki, backend: u16) -> String {
    Config::new()
        .listener(Listener::mutual("mtls", &pki.path("ingress")).set("handshake_timeout", "\"2s\"").set("max_connections", 2000))
        .route(Route::to("mysql", backend).hosts(&[SERVICE_HOST]))
        .toml()
}

/// Connects and sends the first half of a real ClientHello for [`SERVICE_HOST`].
fn half_hello(port: u16) -> TcpStream {
    let hello = client_hello(SERVICE_HOST);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(&hello[..hello.len() / 2]).unwrap();
    stream
}

/// Asserts the gateway closed `stream` by the 2 s timeout: not before 1.5 s after
/// `since`, and not later than 8 s.
fn closed_by_timeout(stream: &mut TcpStream, since: Instant, what: &str) {
    let closed = closed_by_gateway(stream, Duration::from_secs(8).saturating_sub(since.elapsed()));
    let waited = since.elapsed();
    assert!(waited >= Duration::from_millis(1500), "{what}: closed after {waited:?}, before the 2s handshake timeout");
    assert!(closed.received.is_empty() || alert(&closed.received).is_some(), "{what}: {closed:?}");
}

#[test]
fn unfinished_handshakes_are_closed_by_the_timeout_and_do_not_block_good_clients() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let mut ingress = Gateway::start(Role::Ingress, pki.dir.path(), &config(&pki, echo.port));
    let port = ingress.port("mtls");
    let good = || pki.egress_client();
    let timeouts = |ingress: &Gateway| metric(ingress, "strait_handshake_failures_total", &[("listener", "mtls"), ("reason", "timeout")]);
    served(port, SERVICE_HOST, good(), "start");

    // Half a ClientHello, then silence.
    let since = Instant::now();
    let mut stream = half_hello(port);
    closed_by_timeout(&mut stream, since, "half a ClientHello");
    let line = ingress.wait_for_access_line(&["outcome=refused", "TLS handshake not completed within 2s"]);
    assert!(line.contains("route=- ") && line.contains("sni=- "), "{line}");
    assert_eq!(wait_for_metric(&ingress, "strait_handshake_failures_total", &[("listener", "mtls"), ("reason", "timeout")], 1.0), 1.0);
    served(port, SERVICE_HOST, good(), "half a ClientHello");

    // A whole ClientHello, one byte every 100 ms: every read makes progress, but the
    // deadline covers the handshake, not each read.
    let hello = client_hello(SERVICE_HOST);
    let since = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        for byte in hello {
            if writer.write_all(&[byte]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    closed_by_timeout(&mut stream, since, "a trickled ClientHello");
    drop(stream);
    trickle.join().unwrap();
    assert_eq!(wait_for_metric(&ingress, "strait_handshake_failures_total", &[("listener", "mtls"), ("reason", "timeout")], 2.0), 2.0);
    served(port, SERVICE_HOST, good(), "a trickled ClientHello");

    // A connection that never sends a byte.
    let since = Instant::now();
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    closed_by_timeout(&mut stream, since, "a silent connection");
    assert_eq!(wait_for_metric(&ingress, "strait_handshake_failures_total", &[("listener", "mtls"), ("reason", "timeout")], 3.0), 3.0);
    served(port, SERVICE_HOST, good(), "a silent connection");

    // Five hundred half ClientHellos at once.
    let since = Instant::now();
    let mut flood: Vec<TcpStream> = (0..FLOOD).map(|_| half_hello(port)).collect();
    let opened = since.elapsed();
    wait_for_metric(&ingress, "strait_active_connections", &[("listener", "mtls")], FLOOD as f64);
    served(port, SERVICE_HOST, good(), "500 half ClientHellos, while they hang");
    let good_done = since.elapsed();
    // None of the five hundred has been closed yet: the good client really went
    // through while they were all holding the listener.
    assert_eq!(
        timeouts(&ingress),
        3.0,
        "the flood timed out before the good client finished ({good_done:?} after the first connect, {opened:?} to open them all)"
    );
    for stream in &mut flood {
        stream.set_nonblocking(true).unwrap();
        let peeked = stream.peek(&mut [0u8; 1]);
        assert!(matches!(&peeked, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock), "a flood connection was closed early: {peeked:?}");
        stream.set_nonblocking(false).unwrap();
    }
    for (i, stream) in flood.iter_mut().enumerate() {
        let closed = closed_by_gateway(stream, Duration::from_secs(10).saturating_sub(since.elapsed()).max(Duration::from_millis(1)));
        assert!(closed.received.is_empty() || alert(&closed.received).is_some(), "flood connection {i}: {closed:?}");
    }
    let all_closed = since.elapsed();
    assert!(all_closed >= Duration::from_millis(1500), "the flood was closed after {all_closed:?}, before the timeout");
    assert_eq!(
        wait_for_metric(&ingress, "strait_handshake_failures_total", &[("listener", "mtls"), ("reason", "timeout")], 3.0 + FLOOD as f64),
        3.0 + FLOOD as f64
    );
    let lines = wait_for_lines(&ingress, &["outcome=refused", "TLS handshake not completed within 2s"], 3 + FLOOD);
    assert_eq!(lines.len(), 3 + FLOOD, "one line per timed-out handshake");
    drop(flood);
    served(port, SERVICE_HOST, good(), "500 half ClientHellos, after they were closed");
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&ingress, "strait_active_connections", &[("listener", "mtls")]) != 0.0 {
        assert!(Instant::now() < deadline, "connections still open 10s after the flood was closed");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_alive(&mut ingress);
}
