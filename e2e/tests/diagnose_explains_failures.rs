//! `strait-egress diagnose ROUTE` walks the route's origination against real servers
//! and says in plain words what is wrong: one test per failure class, each provoked for
//! real, checking the exit code and the message. `strait-ingress diagnose` does the same
//! from the client side against a running ingress.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use strait::certs::{Authority, KeyType, Leaf, Usage};
use strait_e2e::config::{inline, quoted, quoted_path};
use strait_e2e::dns::Dnsmasq;
use strait_e2e::*;

#[test]
fn a_working_route_prints_the_server_chain_and_exits_zero() {
    let pki = Pki::reference();
    let (_echo, ingress_port, _ingress) = ingress(&pki);
    let route = mutual_route(&format!("127.0.0.1:{ingress_port}"), &pki.path("egress"), None, SERVICE_HOST);

    let (ok, out) = diagnose(&pki, route, "");
    assert!(ok, "the working path must exit 0:\n{out}");
    assert!(out.contains(&format!("TCP 127.0.0.1:{ingress_port}: connected")), "{out}");
    assert!(out.contains(&format!("(SNI {SERVICE_HOST}): TLSv1_3")), "{out}");
    assert!(out.contains("server chain:"), "{out}");
    assert!(out.contains(&format!("0: subject CN={SERVICE_HOST}")), "the leaf: {out}");
    assert!(out.contains(&format!("SANs    [{SERVICE_HOST}]")), "{out}");
    assert!(out.contains("issuer  CN=Strait Intermediate CA"), "{out}");
    assert!(out.contains("1: subject CN=Strait Intermediate CA"), "the intermediate: {out}");
    assert!(out.contains("server certificate verified against"), "{out}");
    assert!(out.contains("client certificate accepted"), "the ingress kept the connection: {out}");
    assert!(out.contains("\nOK: the path works\n"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
}

#[test]
fn a_server_chain_from_another_ca_names_both_cas() {
    let pki = Pki::reference();
    let (_echo, ingress_port, _ingress) = ingress(&pki);
    let other = Authority::root("Some Other Root CA", KeyType::EcdsaP256, 30).unwrap();
    let other_ca = pki.path("other-ca.pem");
    std::fs::write(&other_ca, other.bundle_pem()).unwrap();
    let route = mutual_route(&format!("127.0.0.1:{ingress_port}"), &pki.path("egress"), Some(&other_ca), SERVICE_HOST);

    let (ok, out) = diagnose(&pki, route, "");
    assert!(!ok, "{out}");
    let expected = format!(
        "FAIL: the server's chain ends in CA \"CN=Strait Root CA, O=Strait demo\", but this route trusts CA \"CN=Some Other Root CA, O=Strait demo\" ({})",
        other_ca.display()
    );
    assert!(out.contains(&expected), "expected {expected:?} in:\n{out}");
    assert!(out.contains("server chain:") && out.contains(&format!("subject CN={SERVICE_HOST}")), "the chain is shown on failure: {out}");
}

#[test]
fn a_refused_client_certificate_names_the_alert_and_the_file() {
    let pki = Pki::reference();
    let (_echo, ingress_port, _ingress) = ingress(&pki);
    let mut leaf = Leaf::new("stranger", Usage::Client, 30);
    leaf.dns.push("stranger.strait.test".into());
    let foreign = pki.foreign("foreign-client", &leaf);
    // It trusts the ingress all right; the ingress does not trust its certificate.
    let route = mutual_route(&format!("127.0.0.1:{ingress_port}"), &foreign, Some(&pki.path("ca-chain.cert.pem")), SERVICE_HOST);

    let (ok, out) = diagnose(&pki, route, "");
    assert!(!ok, "{out}");
    let expected = format!(
        "FAIL: the server refused our client certificate (alert: unknown_ca): its client CA does not include the issuer of {}",
        foreign.join("tls.crt").display()
    );
    assert!(out.contains(&expected), "expected {expected:?} in:\n{out}");
    assert!(out.contains("server certificate verified against"), "the server side was fine: {out}");
}

#[test]
fn an_expired_server_certificate_says_how_long_ago() {
    let pki = Pki::reference();
    // Strait refuses to serve an expired certificate, so openssl serves it.
    let ca = Authority::root("Expired Test CA", KeyType::EcdsaP256, 365).unwrap();
    let mut leaf = Leaf::new(SERVICE_HOST, Usage::Server, 0);
    leaf.dns.push(SERVICE_HOST.into());
    leaf.valid_from = time::Duration::days(-40);
    leaf.valid_until = time::Duration::days(-3);
    let expired = pki.path("expired");
    strait::certs::write_secret(&expired, &ca.issue(&leaf).unwrap(), &ca.bundle_pem()).unwrap();
    let (port, _server) = s_server(&pki, &expired);
    let route = mutual_route(&format!("127.0.0.1:{port}"), &pki.path("egress"), Some(&expired.join("ca.crt")), SERVICE_HOST);

    let (ok, out) = diagnose(&pki, route, "");
    assert!(!ok, "{out}");
    assert!(out.contains("FAIL: the server's certificate expired 3 days ago: it must be renewed on the server"), "{out}");
    assert!(out.contains("(expired 3 days ago)"), "the chain listing shows it too: {out}");
}

#[test]
fn an_sni_not_in_the_server_certificate_lists_the_names_it_has() {
    let pki = Pki::reference();
    // A server whose certificate names only SERVICE_HOST, asked for another name.
    let (port, _server) = s_server(&pki, &pki.path("ingress"));
    let wrong = "other.strait.test";
    let route = mutual_route(&format!("127.0.0.1:{port}"), &pki.path("egress"), None, wrong);

    let (ok, out) = diagnose(&pki, route, "");
    assert!(!ok, "{out}");
    let expected = format!("FAIL: the server's certificate names [{SERVICE_HOST}], not \"{wrong}\"");
    assert!(out.contains(&expected), "expected {expected:?} in:\n{out}");
    assert!(out.contains("set the route's upstream_tls.sni to one of those names"), "{out}");
}

#[test]
fn nothing_listening_says_the_connection_was_refused() {
    let pki = Pki::reference();
    // A port nothing listens on: the one thing free_port is for.
    let port = free_port();
    let route = mutual_route(&format!("127.0.0.1:{port}"), &pki.path("egress"), None, SERVICE_HOST);

    let (ok, out) = diagnose(&pki, route, "");
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("TCP 127.0.0.1:{port}: refused (nothing listens there)")), "{out}");
    assert!(out.contains(&format!("FAIL: no address of 127.0.0.1 accepts TCP on port {port}")), "{out}");
    assert!(!out.contains("TLS to"), "no handshake without a connection: {out}");
}

#[test]
fn a_name_without_a_dns_answer_says_so() {
    let pki = Pki::reference();
    let dns = Dnsmasq::start(&[("present.strait.test", std::net::Ipv4Addr::LOCALHOST)]);
    let missing = "missing.strait.test";
    // The name never resolves, so the port is never dialled.
    let route = mutual_route(&format!("{missing}:13306"), &pki.path("egress"), None, SERVICE_HOST);

    let (ok, out) = diagnose(&pki, route, &dns.resolver_table());
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("DNS {missing}: no answer")), "{out}");
    assert!(out.contains(&format!("FAIL: no DNS answer for {missing}")), "{out}");
    assert!(out.contains("[resolver] nameservers"), "it says what to check: {out}");
    assert!(!out.contains("TCP "), "no connection without an address: {out}");
    let asked = dns.proc.output();
    assert!(asked.contains(&format!("query[A] {missing}")), "the configured DNS server was asked:\n{asked}");
    assert!(asked.contains(&format!("{missing} is NXDOMAIN")), "and answered NXDOMAIN:\n{asked}");
}

#[test]
fn ingress_diagnose_accepts_a_good_client_certificate_and_refuses_a_foreign_one() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    // `diagnose --config` dials the listener's address as the file gives it, so the file
    // must hold the real port, not 0.
    let ingress_port = free_port();
    let listener = ingress_listener(&pki.path("ingress")).port(ingress_port);
    let ingress = Gateway::start(Role::Ingress, pki.dir.path(), &ingress_config_with(listener, echo.port).toml());
    let config = ingress.config.display().to_string();
    let egress_cert = pki.path("egress/tls.crt").display().to_string();
    let egress_key = pki.path("egress/tls.key").display().to_string();

    let args = ["diagnose", "--config", &config, "--sni", SERVICE_HOST, "--cert", &egress_cert, "--key", &egress_key];
    let (ok, out) = run_binary(Role::Ingress, &args);
    println!("{out}");
    assert!(ok, "a trusted client certificate must pass:\n{out}");
    assert!(out.contains(&format!("listener at 127.0.0.1:{ingress_port}: SNI {SERVICE_HOST}")), "{out}");
    assert!(out.contains("client certificate accepted"), "{out}");
    assert!(out.contains("\nOK: the path works\n"), "{out}");

    let mut leaf = Leaf::new("stranger", Usage::Client, 30);
    leaf.dns.push("stranger.strait.test".into());
    let foreign = pki.foreign("foreign-client", &leaf);
    let (cert, key) = (foreign.join("tls.crt").display().to_string(), foreign.join("tls.key").display().to_string());
    let address = format!("127.0.0.1:{ingress_port}");
    let ca = pki.path("ca-chain.cert.pem").display().to_string();
    let args = ["diagnose", "--config", &config, "--sni", SERVICE_HOST, "--cert", &cert, "--key", &key, "--ca", &ca, "--address", &address];
    let (ok, out) = run_binary(Role::Ingress, &args);
    println!("{out}");
    assert!(!ok, "a foreign client certificate must fail:\n{out}");
    assert!(
        out.contains(&format!("the server refused our client certificate (alert: unknown_ca): its client CA does not include the issuer of {cert}")),
        "{out}"
    );
}

/// The reference ingress in front of an echo server; returns (echo, its port, ingress).
fn ingress(pki: &Pki) -> (EchoServer, u16, Gateway) {
    let echo = EchoServer::start();
    let (gateway, port) = Gateway::reference_ingress(pki, echo.port);
    (echo, port, gateway)
}

/// A route named `probe` originating mutual TLS to `upstream` with the Secret at
/// `secret`, trusting `ca` (default: the Secret's `ca.crt`) and sending `sni`.
fn mutual_route(upstream: &str, secret: &Path, ca: Option<&Path>, sni: &str) -> Route {
    let mut upstream_tls = vec![("mode", quoted("mutual")), ("dir", quoted_path(secret)), ("sni", quoted(sni))];
    upstream_tls.extend(ca.map(|ca| ("ca", quoted_path(ca))));
    Route::new("probe", upstream).set("upstream_tls", inline(&upstream_tls))
}

/// Writes an egress config with a plain listener on `route` (port 0: diagnose binds
/// nothing), plus `extra`, and runs `strait-egress diagnose probe`; returns (exit 0?,
/// output).
fn diagnose(pki: &Pki, route: Route, extra: &str) -> (bool, String) {
    let config = Config::new().listener(Listener::plain("plain", "probe")).route(route).raw(extra);
    let file = tempfile::Builder::new().prefix("diagnose-").suffix(".toml").tempfile_in(pki.dir.path()).unwrap().into_temp_path();
    std::fs::write(&file, config.toml()).unwrap();
    let path = file.display().to_string();
    let (ok, out) = run_binary(Role::Egress, &["diagnose", "probe", "--config", &path]);
    println!("$ strait-egress diagnose probe --config {path}\n{out}");
    (ok, out)
}

/// `openssl s_server` serving the Secret at `secret` on a loopback port.
fn s_server(pki: &Pki, secret: &Path) -> (u16, Proc) {
    require("openssl");
    // s_server takes its port on the command line and says nothing of it with -quiet.
    let port = free_port();
    let mut command = Command::new("openssl");
    command
        .args(["s_server", "-quiet", "-accept", &format!("127.0.0.1:{port}")])
        .arg("-cert")
        .arg(secret.join("tls.crt"))
        .arg("-key")
        .arg(secret.join("tls.key"));
    let log: PathBuf = pki.dir.path().join(format!("s_server-{port}.log"));
    let server = Proc::spawn(command, log);
    wait_for_port(port, Duration::from_secs(10));
    (port, server)
}
