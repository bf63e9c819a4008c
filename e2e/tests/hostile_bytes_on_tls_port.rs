//! Bytes that are not TLS on the ingress's mutual-TLS port — a plain HTTP request, 1 MiB
//! of random bytes, a TLS record header over random bytes, and a forged record plus
//! random bytes injected into an established TLS stream — are each refused and closed at once (never held
//! until the handshake timeout, never passed to the backend), and a good client is
//! served after every one.

use std::io::Write;
use std::time::Duration;

use strait_e2e::hostile::*;
use strait_e2e::*;

/// Much shorter than the 10 s default handshake timeout: a refusal must not wait for it.
const PROMPTLY: Duration = Duration::from_secs(5);

#[test]
fn non_tls_bytes_are_refused_at_once_and_good_clients_still_served() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let (mut ingress, port) = Gateway::reference_ingress(&pki, echo.port);
    let good = || pki.egress_client();
    served(port, SERVICE_HOST, good(), "start");

    // A plain HTTP request: no HTTP answer, at most a TLS alert, then the close.
    let request = format!("GET / HTTP/1.1\r\nHost: {SERVICE_HOST}\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\n\r\n");
    let closed = send_and_expect_close(port, request.into_bytes(), PROMPTLY);
    assert!(!String::from_utf8_lossy(&closed.received).contains("HTTP/"), "{closed:?}");
    assert!(closed.received.is_empty() || alert(&closed.received).is_some_and(|(level, _)| level == 2), "{closed:?}");
    let line = ingress.wait_for_access_line(&["outcome=refused", "bad ClientHello"]);
    assert!(line.contains("route=- ") && line.contains("upstream=- ") && line.contains("sni=- "), "{line}");
    assert_eq!(wait_for_metric(&ingress, "strait_handshake_failures_total", &[("listener", "mtls"), ("reason", "not_tls")], 1.0), 1.0);
    served(port, SERVICE_HOST, good(), "a plain HTTP request");

    // 1 MiB of random bytes.
    let closed = send_and_expect_close(port, noise(1 << 20, 0x5742_4149_5421), PROMPTLY);
    assert!(closed.received.len() <= 7, "more than an alert came back: {closed:?}");
    wait_for_lines(&ingress, &["outcome=refused", "bad ClientHello"], 2);
    served(port, SERVICE_HOST, good(), "1 MiB of random bytes");

    // A TLS handshake record header with a random body: passes the first-byte test,
    // fails the ClientHello parser.
    let mut fake = vec![0x16, 0x03, 0x01, 0x40, 0x00];
    fake.extend(noise(0x4000, 7));
    let closed = send_and_expect_close(port, fake, PROMPTLY);
    assert!(closed.received.len() <= 7, "more than an alert came back: {closed:?}");
    wait_for_lines(&ingress, &["outcome=refused", "bad ClientHello"], 3);
    served(port, SERVICE_HOST, good(), "a TLS record header over random bytes");

    // Random bytes written raw into the socket of an established mutual-TLS stream: the
    // record fails to decrypt, the stream ends, nothing reaches the client as data.
    let mut stream = tls_connect(port, SERVICE_HOST, good()).unwrap();
    stream.write_all(b"before the noise\n").unwrap();
    stream.flush().unwrap();
    let mut echoed = [0u8; 17];
    std::io::Read::read_exact(&mut stream, &mut echoed).unwrap();
    // First a well-formed application-data record whose ciphertext is random, then noise.
    let mut forged = vec![0x17, 0x03, 0x03, 0x00, 0x20];
    forged.extend(noise(0x20, 3));
    forged.extend(noise(64 * 1024, 99));
    let _ = stream.sock.write_all(&forged);
    let closed = closed_by_gateway(&mut stream.sock, PROMPTLY);
    assert!(closed.received.len() <= 64, "{closed:?}");
    let line = ingress.wait_for_access_line(&["outcome=relay_failed", "downstream read: cannot decrypt"]);
    assert!(line.contains(&format!("identity=client.{SERVICE_HOST} ")) && line.contains("bytes_received=17 "), "{line}");
    served(port, SERVICE_HOST, good(), "random bytes inside a TLS stream");

    // Each refusal was prompt, not the 10 s handshake timeout.
    for line in ingress.access_log().iter().filter(|l| l.contains("outcome=refused")) {
        let ms: u64 = line.split("duration_ms=").nth(1).and_then(|d| d.split_whitespace().next()).unwrap().parse().unwrap();
        assert!(ms < 5000, "a refusal waited {ms} ms: {line}");
    }
    assert_eq!(metric(&ingress, "strait_handshake_failures_total", &[("reason", "timeout")]), 0.0);
    assert_alive(&mut ingress);
    let served_lines = wait_for_lines(&ingress, &["route=mysql ", "outcome=closed"], 5);
    assert_eq!(served_lines.len(), 5, "{served_lines:#?}");
}
