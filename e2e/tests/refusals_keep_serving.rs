//! The ingress refuses what it must — an SNI no route claims, a client without SNI
//! (no `default_route`), a client without a certificate, a certificate from a CA it
//! does not trust — with a TLS alert and an `outcome=refused` access-log line, and
//! keeps serving: after every refusal a good client still gets through.
//!
//! Each refusal is made twice, by the rustls client and by `openssl s_client` (which
//! names the alert it received). In TLS 1.3 the client's certificate is judged after
//! the client has finished its side of the handshake, so a refused certificate shows as
//! "no data, an alert or a close at the first read", not necessarily a handshake error.

use std::io::{ErrorKind, Read, Write};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use strait::certs::{Leaf, Usage};
use strait_e2e::*;

const UNKNOWN_HOST: &str = "unknown.strait.test";

/// A client the ingress must serve: the cross-cluster client certificate, SNI
/// [`SERVICE_HOST`]. Its bytes must come back from the echo server.
fn good_client_is_served(port: u16, pki: &Pki, after: &str) {
    let config = client_config(Some(&pki.path("egress")), &pki.path("ingress/ca.crt"));
    let mut stream = tls_connect(port, SERVICE_HOST, config)
        .unwrap_or_else(|e| panic!("a good client was refused after {after}: {e}"));
    let message = format!("still serving after {after}\n");
    stream.write_all(message.as_bytes()).unwrap();
    stream.flush().unwrap();
    let mut echoed = vec![0u8; message.len()];
    stream.read_exact(&mut echoed).unwrap_or_else(|e| panic!("no echo for a good client after {after}: {e}"));
    assert_eq!(String::from_utf8_lossy(&echoed), message);
    // A clean close both ways, so the access line says `closed`.
    stream.conn.send_close_notify();
    stream.flush().unwrap();
    let rest = read_all(&mut stream);
    assert!(rest.is_empty(), "{rest:?}");
}

/// Connects with rustls and proves the stream is refused: the handshake fails, or the
/// first read after it yields an error or EOF, never data. A read that merely times out
/// is not a refusal. Returns how it was refused.
fn refused_by_rustls(port: u16, sni: &str, config: Arc<rustls::ClientConfig>) -> String {
    let mut stream = match tls_connect(port, sni, config) {
        Err(e) => return format!("handshake failed: {e}"),
        Ok(stream) => stream,
    };
    let _ = stream.write_all(b"must not reach the backend\n");
    let _ = stream.flush();
    let mut buffer = [0u8; 256];
    match stream.read(&mut buffer) {
        Ok(0) => "closed at the first read".into(),
        Ok(n) => panic!("a refused client (SNI {sni}) received data: {:?}", String::from_utf8_lossy(&buffer[..n])),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("the ingress neither served nor refused the client (SNI {sni}) within 10s")
        }
        Err(e) => format!("first read failed: {e}"),
    }
}

/// Runs `openssl s_client` against the ingress to completion (at most 15s) with no
/// input, so it only handshakes and waits for the server; returns (exit success, output).
fn s_client(pki: &Pki, port: u16, name: &str, args: &[&dyn AsRef<std::ffi::OsStr>]) -> (bool, String) {
    require("openssl");
    let mut command = Command::new("openssl");
    command.args(["s_client", "-connect", &format!("127.0.0.1:{port}"), "-quiet"]);
    command.arg("-CAfile").arg(pki.path("ingress/ca.crt"));
    for arg in args {
        command.arg(arg);
    }
    let mut proc = Proc::spawn(command, pki.path(&format!("s_client-{name}.log")));
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if let Some(status) = proc.try_wait() {
            return (status.success(), proc.output());
        }
        assert!(Instant::now() < deadline, "openssl s_client ({name}) still connected after 15s:\n{}", proc.output());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The certificate and key arguments of s_client for Secret `dir`.
fn cert_args(dir: &Path) -> [std::path::PathBuf; 2] {
    [dir.join("tls.crt"), dir.join("tls.key")]
}

/// Waits until the access log holds `count` lines containing every one of `needles`.
fn wait_for_lines(gateway: &Gateway, needles: &[&str], count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<String> =
            gateway.access_log().into_iter().filter(|l| needles.iter().all(|n| l.contains(n))).collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(Instant::now() < deadline, "expected {count} access-log lines with {needles:?} in:\n{}", gateway.proc.output());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn refused_clients_are_logged_and_good_clients_still_served() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let port = free_port();
    let mut ingress = Gateway::start(Role::Ingress, pki.dir.path(), &ingress_config(&pki, port, echo.port));
    let ingress_ca = pki.path("ingress/ca.crt");
    let good = client_config(Some(&pki.path("egress")), &ingress_ca);
    let mut client_leaf = Leaf::new(&format!("client.{SERVICE_HOST}"), Usage::Client, 30);
    client_leaf.dns.push(format!("client.{SERVICE_HOST}"));
    let foreign = pki.foreign("foreign-client", &client_leaf);
    let [good_cert, good_key] = cert_args(&pki.path("egress"));
    let [foreign_cert, foreign_key] = cert_args(&foreign);

    good_client_is_served(port, &pki, "start");

    // An SNI no route claims: an alert during the handshake, whatever the certificate.
    let how = refused_by_rustls(port, UNKNOWN_HOST, good.clone());
    assert!(how.starts_with("handshake failed") && how.contains("alert"), "unknown SNI: {how}");
    good_client_is_served(port, &pki, "an unknown SNI (rustls)");
    let (ok, out) = s_client(&pki, port, "unknown-sni", &[&"-servername", &UNKNOWN_HOST, &"-cert", &good_cert, &"-key", &good_key]);
    assert!(!ok && out.contains(" alert "), "s_client with an unknown SNI:\n{out}");
    good_client_is_served(port, &pki, "an unknown SNI (openssl)");
    let lines = wait_for_lines(&ingress, &["outcome=refused", &format!("sni={UNKNOWN_HOST} ")], 2);
    for line in &lines {
        assert!(line.contains(&format!("reason=unknown SNI \"{UNKNOWN_HOST}\"")), "{line}");
        assert!(line.contains("route=- ") && line.contains("upstream=- "), "{line}");
    }

    // No SNI at all, and the listener has no default_route.
    let (ok, out) = s_client(&pki, port, "no-sni", &[&"-noservername", &"-cert", &good_cert, &"-key", &good_key]);
    assert!(!ok && out.contains(" alert "), "s_client without SNI:\n{out}");
    good_client_is_served(port, &pki, "a client without SNI");
    let line = ingress.wait_for_access_line(&["outcome=refused", "sni=- "]);
    assert!(line.contains("no SNI and the listener has no default_route"), "{line}");

    // No client certificate: mutual TLS demands one.
    let anonymous = client_config(None, &ingress_ca);
    let how = refused_by_rustls(port, SERVICE_HOST, anonymous);
    assert!(how.contains("alert") && how.contains("CertificateRequired"), "no client certificate: {how}");
    good_client_is_served(port, &pki, "a client without a certificate (rustls)");
    let (ok, out) = s_client(&pki, port, "no-cert", &[&"-servername", &SERVICE_HOST]);
    assert!(!ok && out.contains("alert certificate required"), "s_client without a certificate:\n{out}");
    good_client_is_served(port, &pki, "a client without a certificate (openssl)");
    let lines = wait_for_lines(&ingress, &["outcome=refused", "peer sent no certificates"], 2);
    for line in &lines {
        assert!(line.contains(&format!("sni={SERVICE_HOST} ")) && line.contains("identity=- "), "{line}");
        assert!(line.contains("route=- ") && line.contains("bytes_received=0 "), "{line}");
    }

    // The same names as the good client's certificate, issued by a CA the ingress does
    // not trust.
    let outsider = client_config(Some(&foreign), &ingress_ca);
    let how = refused_by_rustls(port, SERVICE_HOST, outsider);
    assert!(how.contains("alert") && how.contains("UnknownCA"), "foreign client certificate: {how}");
    good_client_is_served(port, &pki, "a foreign client certificate (rustls)");
    let (ok, out) = s_client(&pki, port, "foreign-cert", &[&"-servername", &SERVICE_HOST, &"-cert", &foreign_cert, &"-key", &foreign_key]);
    assert!(!ok && out.contains("alert unknown ca"), "s_client with a foreign certificate:\n{out}");
    good_client_is_served(port, &pki, "a foreign client certificate (openssl)");
    let lines = wait_for_lines(&ingress, &["outcome=refused", "UnknownIssuer"], 2);
    for line in &lines {
        assert!(line.contains(&format!("sni={SERVICE_HOST} ")) && line.contains("identity=- "), "{line}");
        assert!(line.contains("route=- ") && line.contains("bytes_received=0 "), "{line}");
    }

    // Still alive, every refusal logged once, every good client served and logged.
    assert!(ingress.proc.try_wait().is_none(), "the ingress exited:\n{}", ingress.proc.output());
    let refused = wait_for_lines(&ingress, &["outcome=refused"], 7);
    assert_eq!(refused.len(), 7, "{refused:#?}");
    let served = wait_for_lines(&ingress, &["route=mysql ", "outcome=closed", &format!("identity=client.{SERVICE_HOST} ")], 8);
    assert_eq!(served.len(), 8, "{served:#?}");
    assert!(ingress.access_log().iter().all(|l| l.contains("outcome=refused") || l.contains("outcome=closed")), "{:#?}", ingress.access_log());
}
