//! Peer authentication per listener, as Istio's PeerAuthentication: on a `permissive`
//! port an mTLS client and a plaintext client both reach the backend (the first byte
//! tells them apart; plaintext takes `default_route`), while TLS on that port is as
//! strict as ever; a `strict` port refuses plaintext; a `disable` port takes plaintext.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use strait_e2e::config::quoted;
use strait_e2e::hostile::*;
use strait_e2e::*;

fn config(pki: &Pki, backend: u16) -> String {
    let secret = pki.path("ingress");
    let peer_auth = |name: &str, mode: &str| Listener::mutual(name, &secret).set("peer_auth", quoted(mode));
    Config::new()
        .listener(peer_auth("permissive", "permissive").set("default_route", quoted("echo")).set("handshake_timeout", quoted("2s")))
        .listener(peer_auth("strict", "strict"))
        .listener(peer_auth("disabled", "disable").set("default_route", quoted("echo")))
        .route(Route::to("echo", backend).hosts(&[SERVICE_HOST]))
        .toml()
}

#[test]
fn permissive_port_serves_mtls_and_plaintext_strict_refuses_plaintext() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let mut ingress = Gateway::start(Role::Ingress, pki.dir.path(), &config(&pki, echo.port));
    let [permissive, strict, disabled] = ["permissive", "strict", "disabled"].map(|name| ingress.port(name));
    let ca = pki.path("ingress/ca.crt");
    let good = || pki.egress_client();
    let identity = format!("identity=client.{SERVICE_HOST} ");

    // Permissive: mutual TLS, then plaintext, on the same port, both to the backend.
    served(permissive, SERVICE_HOST, good(), "start (permissive port, mTLS)");
    let line = ingress.wait_for_access_line(&["listener=permissive", "outcome=closed", &identity]);
    assert!(line.contains("route=echo ") && line.contains(&format!("sni={SERVICE_HOST} ")), "{line}");
    let message = b"SELECT 1; -- plaintext through the permissive port\n";
    let reply = plain_exchange(permissive, message).expect("a plaintext client on the permissive port");
    assert_eq!(reply, message);
    let line = ingress.wait_for_access_line(&["listener=permissive", "outcome=closed", "identity=- "]);
    assert!(line.contains("route=echo ") && line.contains("sni=- "), "{line}");
    assert!(line.contains(&format!("bytes_received={} ", message.len())), "{line}");
    // The same through openssl s_client, a third-party TLS stack.
    let args = s_client_args(&["-quiet", "-no_ign_eof"], SERVICE_HOST, &ca, &pki.path("egress"));
    let mut s_client = Interactive::s_client(pki.dir.path(), "permissive", permissive, &args);
    s_client.send("through s_client\n");
    assert!(s_client.wait_for("through s_client", Duration::from_secs(10)), "openssl s_client on the permissive port:\n{}", s_client.output());
    s_client.close_stdin();
    assert!(s_client.wait_exit(Duration::from_secs(10)).is_some_and(|s| s.success()), "{}", s_client.output());

    // Permissive does not weaken TLS: a TLS client still needs a trusted certificate.
    let how = refused(permissive, SERVICE_HOST, client_config(None, &ca));
    assert!(how.contains("CertificateRequired"), "no client certificate on the permissive port: {how}");
    let line = ingress.wait_for_access_line(&["listener=permissive", "outcome=refused", "peer sent no certificates"]);
    assert!(line.contains("route=- "), "{line}");
    assert_eq!(metric(&ingress, "strait_handshake_failures_total", &[("listener", "permissive"), ("reason", "no_client_cert")]), 1.0);
    served(permissive, SERVICE_HOST, good(), "a TLS client without a certificate on the permissive port");

    // A plaintext client that waits for the server to speak first never shows its first
    // byte: at a `tcp` default route it is closed by the handshake timeout, as with
    // Istio (a `mysql` default route greets it instead: see
    // permissive_mysql_client_gets_its_greeting_at_once).
    let mut silent = TcpStream::connect(("127.0.0.1", permissive)).unwrap();
    let start = Instant::now();
    let closed = closed_by_gateway(&mut silent, Duration::from_secs(8));
    assert!(closed.received.is_empty(), "{closed:?}");
    assert!(start.elapsed() >= Duration::from_millis(1500), "closed before the 2s handshake timeout: {:?}", start.elapsed());
    let line = ingress.wait_for_access_line(&["listener=permissive", "outcome=refused", "no first byte within 2s"]);
    assert!(line.contains("route=- "), "{line}");
    assert_eq!(metric(&ingress, "strait_handshake_failures_total", &[("listener", "permissive"), ("reason", "timeout")]), 1.0);
    let reply = plain_exchange(permissive, b"plaintext after a silent client\n").unwrap();
    assert_eq!(reply, b"plaintext after a silent client\n");

    // Strict: the same plaintext is refused, never reaches the backend; TLS still served.
    let mut stream = TcpStream::connect(("127.0.0.1", strict)).unwrap();
    stream.write_all(message).unwrap();
    let closed = closed_by_gateway(&mut stream, Duration::from_secs(5));
    assert!(!closed.received.windows(6).any(|w| w == b"SELECT"), "plaintext was relayed on the strict port: {closed:?}");
    assert!(closed.received.is_empty() || alert(&closed.received).is_some(), "{closed:?}");
    let line = ingress.wait_for_access_line(&["listener=strict", "outcome=refused"]);
    assert!(line.contains("bad ClientHello") && line.contains("route=- ") && line.contains("upstream=- "), "{line}");
    assert_eq!(metric(&ingress, "strait_handshake_failures_total", &[("listener", "strict"), ("reason", "not_tls")]), 1.0);
    served(strict, SERVICE_HOST, good(), "plaintext on the strict port");

    // Disable: plaintext only, to default_route.
    let reply = plain_exchange(disabled, b"plaintext on a disabled port\n").unwrap();
    assert_eq!(reply, b"plaintext on a disabled port\n");
    let line = ingress.wait_for_access_line(&["listener=disabled", "outcome=closed"]);
    assert!(line.contains("route=echo ") && line.contains("identity=- "), "{line}");

    // The metrics tell mTLS and plaintext apart on the permissive port.
    let closed = |mtls| metric(&ingress, "strait_tcp_connections_closed_total", &[("listener", "permissive"), ("mtls", mtls), ("outcome", "closed")]);
    assert_eq!(closed("true"), 3.0, "mTLS connections closed on the permissive port");
    assert_eq!(closed("false"), 2.0, "plaintext connections closed on the permissive port");
    assert_alive(&mut ingress);
}
