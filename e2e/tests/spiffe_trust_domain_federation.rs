//! SPIFFE trust-domain federation at an ingress listener: `trust_domains` maps
//! `a.example` to root A and `b.example` to root B. A client certificate is verified
//! only against the bundle of the trust domain its SPIFFE ID names: B-signed with a
//! `spiffe://a.example/...` ID is refused (and says why in the access log), B-signed
//! with `spiffe://b.example/...` is accepted, two URI SANs or a malformed ID are
//! refused, and a certificate without a SPIFFE ID is refused since no `ca` is given for
//! those. Then the map is reloaded without `b.example`: new B clients are refused and
//! the B client still connected is closed at once, its record saying why.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use strait::certs::Usage;
use strait_e2e::config::{inline, quoted, quoted_path};
use strait_e2e::hostile::*;
use strait_e2e::kube_secret::LogTail;
use strait_e2e::*;

fn listener(server: &Path, domains: &[(&str, &Path)]) -> Listener {
    let map = domains.iter().map(|(domain, ca)| format!("{} = {}", quoted(domain), quoted_path(ca))).collect::<Vec<_>>().join(", ");
    let tls = inline(&[
        ("mode", quoted("mutual")),
        ("cert", quoted_path(&server.join("tls.crt"))),
        ("key", quoted_path(&server.join("tls.key"))),
        ("trust_domains", format!("{{ {map} }}")),
    ]);
    Listener::with_tls("federated", tls)
}

fn config(listener: Listener, backend: u16) -> String {
    Config::new().listener(listener).route(Route::to("echo", backend).hosts(&[SERVICE_HOST])).toml()
}

#[test]
fn a_peer_is_verified_only_against_its_trust_domains_bundle() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let server_ca = TestCa::new(&pki, "server-ca");
    let server = server_ca.server("server", SERVICE_HOST);
    let (a, b) = (TestCa::new(&pki, "root-a"), TestCa::new(&pki, "root-b"));
    let both = [("a.example", a.ca_file.as_path()), ("b.example", b.ca_file.as_path())];
    let ingress = Gateway::start(Role::Ingress, pki.dir.path(), &config(listener(&server, &both), echo.port));
    let port = ingress.port("federated");
    let client = |ca: &TestCa, name: &str, uris: &[&str]| presenting(&ca.issue(name, &leaf(name, Usage::Client, &[], uris)), &server_ca.ca_file);

    // The impostor: trusted root B, but an ID of trust domain A.
    let how = refused(port, SERVICE_HOST, client(&b, "impostor", &["spiffe://a.example/ns/default/sa/client"]));
    println!("B-signed spiffe://a.example/... refused: {how}");
    let line = ingress.wait_for_access_line(&["outcome=refused", "spiffe://a.example/ns/default/sa/client is not signed by a CA of trust domain"]);
    println!("access log: {line}");
    assert_eq!(metric(&ingress, "strait_handshake_failures_total", &[("listener", "federated"), ("reason", "unknown_ca")]), 1.0);

    // Each root for its own domain: served.
    served(port, SERVICE_HOST, client(&b, "b-client", &["spiffe://b.example/ns/default/sa/client"]), "the impostor");
    served(port, SERVICE_HOST, client(&a, "a-client", &["spiffe://a.example/ns/default/sa/client"]), "a B client");

    // Two URI SANs, a malformed ID, no SPIFFE ID at all.
    for (name, uris, reason) in [
        ("two-uris", &["spiffe://b.example/x", "spiffe://b.example/y"][..], "carries 2 URI SANs"),
        ("malformed", &["spiffe://b.example/x/../y"][..], "malformed SPIFFE ID"),
        ("no-spiffe", &[][..], "carries no SPIFFE ID"),
    ] {
        let how = refused(port, SERVICE_HOST, client(&b, name, uris));
        let line = ingress.wait_for_access_line(&["outcome=refused", reason]);
        println!("{name}: refused ({how}); access log: {line}");
        served(port, SERVICE_HOST, client(&b, "b-client", &["spiffe://b.example/ns/default/sa/client"]), name);
    }
    assert_eq!(metric(&ingress, "strait_handshake_failures_total", &[("listener", "federated"), ("reason", "bad_certificate")]), 3.0);

    // A B client stays connected while b.example is dropped from the map.
    let b_client = client(&b, "b-live", &["spiffe://b.example/ns/default/sa/live"]);
    let mut live = tls_connect(port, SERVICE_HOST, b_client.clone()).unwrap();
    live.write_all(b"before\n").unwrap();
    let mut echoed = [0u8; 7];
    live.read_exact(&mut echoed).unwrap();
    let mut tail = LogTail::from_now(&ingress);
    let written = Instant::now();
    std::fs::write(&ingress.config, config(listener(&server, &both[..1]), echo.port)).unwrap();
    let (reload, waited) = tail.wait_for_reload(&ingress, Duration::from_secs(10));
    assert!(reload.contains(kube_secret::RELOADED), "{reload}");
    let reloaded = Instant::now();
    live.sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut rest = [0u8; 16];
    let closed = live.read(&mut rest);
    assert!(matches!(closed, Ok(0) | Err(_)) && !matches!(&closed, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock), "{closed:?}");
    let after_reload = reloaded.elapsed();
    println!("live B connection closed {after_reload:?} after the reload line ({:?} after the file write, reload took {waited:?})", written.elapsed());
    assert!(after_reload < Duration::from_secs(1), "closed {after_reload:?} after the reload");
    let line = ingress.wait_for_access_line(&["outcome=revoked"]);
    assert!(line.contains("b.example") && line.contains("is not federated here"), "{line}");
    assert_eq!(metric(&ingress, "strait_connections_closed_on_trust_change_total", &[("listener", "federated")]), 1.0);
    refused(port, SERVICE_HOST, b_client);
    served(port, SERVICE_HOST, client(&a, "a-client", &["spiffe://a.example/ns/default/sa/client"]), "dropping b.example");
}
