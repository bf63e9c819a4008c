//! SPIFFE trust-domain federation at an ingress listener: `trust_domains` maps
//! `a.example` to root A and `b.example` to root B. A client certificate is verified
//! only against the bundle of the trust domain its SPIFFE ID names: B-signed with a
//! `spiffe://a.example/...` ID is refused (and says why in the access log), B-signed
//! with `spiffe://b.example/...` is accepted, two URI SANs or a malformed ID are
//! refused, and a certificate without a SPIFFE ID is refused since no `ca` is given for
//! those. Then the map is reloaded without `b.example`: new B clients are refused and
//! the B client still connected is closed at once, its record saying why.
//!
//! On origination the same: an egress route federating A and B, expecting the
//! ingress's `spiffe://b.example/...` ID, reaches the B-signed ingress and refuses an
//! A-signed impostor claiming that ID; when b.example leaves the route's map, its live
//! connection is re-checked and cut.

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

/// An egress route whose `upstream_tls` federates: it trusts roots A and B by trust
/// domain and expects the ingress's SPIFFE ID.
fn egress_route(name: &str, ingress_port: u16, client: &Path, domains: &[(&str, &Path)]) -> Route {
    let map = domains.iter().map(|(domain, ca)| format!("{} = {}", quoted(domain), quoted_path(ca))).collect::<Vec<_>>().join(", ");
    let tls = inline(&[
        ("mode", quoted("mutual")),
        ("cert", quoted_path(&client.join("tls.crt"))),
        ("key", quoted_path(&client.join("tls.key"))),
        ("sni", quoted(SERVICE_HOST)),
        ("trust_domains", format!("{{ {map} }}")),
        ("subject_alt_names", format!("[{}]", quoted("spiffe://b.example/ns/db/sa/ingress"))),
    ]);
    Route::new(name, &format!("127.0.0.1:{ingress_port}")).set("upstream_tls", tls)
}

fn egress_config(good: u16, impostor: u16, client: &Path, domains: &[(&str, &Path)]) -> String {
    Config::new()
        .listener(Listener::plain("good", "good"))
        .listener(Listener::plain("impostor", "impostor"))
        .route(egress_route("good", good, client, domains))
        .route(egress_route("impostor", impostor, client, domains))
        .toml()
}

/// One line through a plain egress port to the echo backend, on `stream`.
fn echo(stream: &mut std::net::TcpStream, line: &[u8]) -> std::io::Result<()> {
    stream.write_all(line)?;
    let mut back = vec![0u8; line.len()];
    stream.read_exact(&mut back)?;
    assert_eq!(back, line);
    Ok(())
}

#[test]
fn origination_verifies_the_server_by_its_trust_domain_and_rechecks_on_reload() {
    let pki = Pki::reference();
    let echo_server = EchoServer::start();
    let clients = TestCa::new(&pki, "clients");
    let client = clients.issue("egress-client", &leaf("egress-client", Usage::Client, &["egress.strait.test"], &[]));
    let (a, b) = (TestCa::new(&pki, "root-a"), TestCa::new(&pki, "root-b"));
    let ingress_id = "spiffe://b.example/ns/db/sa/ingress";
    // The real ingress has B's certificate for B's ID; the impostor A's for the same ID.
    let start_ingress = |ca: &TestCa, name: &str| {
        let server = ca.issue(name, &leaf(SERVICE_HOST, Usage::Server, &[SERVICE_HOST], &[ingress_id]));
        let tls = inline(&[
            ("mode", quoted("mutual")),
            ("cert", quoted_path(&server.join("tls.crt"))),
            ("key", quoted_path(&server.join("tls.key"))),
            ("ca", quoted_path(&clients.ca_file)),
        ]);
        Gateway::start(Role::Ingress, pki.dir.path(), &config(Listener::with_tls("federated", tls), echo_server.port))
    };
    let (good, impostor) = (start_ingress(&b, "ingress-b"), start_ingress(&a, "ingress-a"));
    let (good_port, impostor_port) = (good.port("federated"), impostor.port("federated"));
    let both = [("a.example", a.ca_file.as_path()), ("b.example", b.ca_file.as_path())];
    let egress = Gateway::start(Role::Egress, pki.dir.path(), &egress_config(good_port, impostor_port, &client, &both));

    let mut live = std::net::TcpStream::connect(("127.0.0.1", egress.port("good"))).unwrap();
    live.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    echo(&mut live, b"through B's ingress\n").unwrap();
    let mut refused = std::net::TcpStream::connect(("127.0.0.1", egress.port("impostor"))).unwrap();
    refused.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    assert!(echo(&mut refused, b"never relayed\n").is_err(), "an A-signed server claiming B's ID");
    let line = egress.wait_for_access_line(&["listener=impostor ", "outcome=upstream_failed"]);
    assert!(line.contains(&format!("{ingress_id} is not signed by a CA of trust domain")), "{line}");

    // b.example leaves the egress's map: its live connection to B's ingress is cut.
    let mut tail = LogTail::from_now(&egress);
    std::fs::write(&egress.config, egress_config(good_port, impostor_port, &client, &both[..1])).unwrap();
    let (reload, _) = tail.wait_for_reload(&egress, Duration::from_secs(10));
    assert!(reload.contains(kube_secret::RELOADED), "{reload}");
    let reloaded = Instant::now();
    let mut rest = [0u8; 8];
    let closed = live.read(&mut rest);
    assert!(matches!(closed, Ok(0)) || matches!(&closed, Err(e) if e.kind() != std::io::ErrorKind::WouldBlock), "{closed:?}");
    println!("live origination closed {:?} after the reload line", reloaded.elapsed());
    assert!(reloaded.elapsed() < Duration::from_secs(1));
    let line = egress.wait_for_access_line(&["listener=good ", "outcome=revoked"]);
    assert!(line.contains("server certificate no longer trusted after the reload") && line.contains("\"b.example\" is not federated here"), "{line}");
    assert_eq!(metric(&egress, "strait_connections_closed_on_trust_change_total", &[("listener", "good")]), 1.0);
}
