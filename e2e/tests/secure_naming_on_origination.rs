//! Secure naming on origination, as DestinationRule `subjectAltNames`: the egress
//! accepts the ingress's certificate only if it carries one of the route's
//! `subject_alt_names`. A SPIFFE-only server certificate (no DNS SAN at all) works when
//! its URI is listed, exactly or by glob; a server whose names are not listed is
//! refused (`outcome=upstream_failed`, the message naming what the server presented),
//! as is that same SPIFFE-only certificate without `subject_alt_names` (host-name check)
//! or with `verify_hostname = true`. The good route keeps working after every refusal.

use std::time::Duration;

use strait::certs::Usage;
use strait_e2e::config::{inline, list, quoted, quoted_path};
use strait_e2e::hostile::*;
use strait_e2e::*;

const INGRESS_ID: &str = "spiffe://cluster.local/ns/db/sa/ingress-gateway";

/// One plain egress listener per route, each originating to the ingress with SNI
/// [`SERVICE_HOST`] and the given extra `upstream_tls` fields.
fn egress_config(client: &std::path::Path, ingress_port: u16, routes: &[(&str, Vec<(&str, String)>)]) -> String {
    let mut config = Config::new();
    for (name, extra) in routes {
        let mut upstream_tls = vec![("mode", quoted("mutual")), ("dir", quoted_path(client)), ("sni", quoted(SERVICE_HOST))];
        upstream_tls.extend(extra.iter().cloned());
        config = config.listener(Listener::plain(name, name)).route(Route::to(name, ingress_port).set("upstream_tls", inline(&upstream_tls)));
    }
    config.toml()
}

/// A plaintext client of the egress's port `port` gets its bytes back from the backend.
fn through(port: u16, after: &str) {
    let message = format!("secure naming: {after}\n");
    let reply = plain_exchange(port, message.as_bytes()).unwrap_or_else(|e| panic!("{after}: {e}"));
    assert_eq!(String::from_utf8_lossy(&reply), message, "{after}");
}

/// A plaintext client of the egress's port `port` is closed without a byte.
fn cut_off(port: u16, what: &str) {
    let reply = plain_exchange(port, b"must not arrive\n");
    assert!(reply.as_ref().is_ok_and(|r| r.is_empty()) || reply.is_err(), "{what}: {reply:?}");
}

#[test]
fn origination_checks_the_servers_names_against_subject_alt_names() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let ca = TestCa::new(&pki, "naming-ca");
    // The ingress presents a SPIFFE-only certificate: no DNS SAN, nothing to match SNI.
    let server = ca.issue("ingress", &leaf("ingress-gateway", Usage::Server, &[], &[INGRESS_ID]));
    let client = ca.issue("egress", &leaf("egress", Usage::Client, &[&format!("client.{SERVICE_HOST}")], &[]));
    let ingress_config = Config::new().listener(Listener::mutual("mtls", &server)).route(Route::to("db", echo.port).hosts(&[SERVICE_HOST]));
    let ingress = Gateway::start(Role::Ingress, pki.dir.path(), &ingress_config.toml());
    let ingress_port = ingress.port("mtls");

    let listed = ("subject_alt_names", list(&[INGRESS_ID]));
    let routes = [
        ("exact", vec![listed.clone()]),
        ("glob", vec![("subject_alt_names", list(&["spiffe://cluster.local/ns/db/sa/*"]))]),
        ("unlisted", vec![("subject_alt_names", list(&["spiffe://cluster.local/ns/db/sa/mysql", "db.strait.test"]))]),
        ("hostname", vec![]),
        ("both", vec![listed, ("verify_hostname", "true".to_owned())]),
    ];
    let egress = Gateway::start(Role::Egress, pki.dir.path(), &egress_config(&client, ingress_port, &routes));
    let [exact, glob, unlisted, hostname, both] = routes.map(|(name, _)| egress.port(name));

    through(exact, "the listed SPIFFE ID");
    let line = egress.wait_for_access_line(&["listener=exact", "outcome=closed"]);
    assert!(line.contains(&format!("upstream=127.0.0.1:{ingress_port} ")), "{line}");
    through(glob, "a SPIFFE glob");

    // Server names not on the list: refused, and the log says what the server presented.
    cut_off(unlisted, "unlisted SANs");
    let unlisted_line = egress.wait_for_access_line(&["listener=unlisted", "outcome=upstream_failed"]);
    let line = &unlisted_line;
    assert!(line.contains(INGRESS_ID), "{line}");
    assert!(line.contains(&format!("TLS origination to 127.0.0.1:{ingress_port} (SNI {SERVICE_HOST}) failed")), "{line}");
    assert_eq!(metric(&egress, "strait_upstream_connect_failures_total", &[("route", "unlisted")]), 1.0);
    through(exact, "a server with unlisted SANs");

    // Without subject_alt_names the host name is checked, and a SPIFFE-only
    // certificate has none: refused.
    cut_off(hostname, "host-name check");
    let line = egress.wait_for_access_line(&["listener=hostname", "outcome=upstream_failed"]);
    assert!(line.contains("NotValidForName") || line.contains("not valid for name"), "{line}");
    through(exact, "a host-name mismatch");

    // verify_hostname = true asks for both: the SAN is listed but the name is missing.
    cut_off(both, "verify_hostname");
    let line = egress.wait_for_access_line(&["listener=both", "outcome=upstream_failed"]);
    assert!(line.contains("NotValidForName") || line.contains("not valid for name"), "{line}");
    through(glob, "verify_hostname with a SPIFFE-only certificate");

    // The ingress saw the refused originations as handshakes the client aborted, and
    // every accepted one as a clean stream with the egress's identity.
    let refused = wait_for_lines(&ingress, &["outcome=refused"], 3);
    assert!(refused.iter().all(|l| l.contains("route=- ") && l.contains("bytes_received=0 ")), "{refused:#?}");
    let accepted = wait_for_lines(&ingress, &["outcome=closed", &format!("identity=client.{SERVICE_HOST} ")], 5);
    assert_eq!(accepted.len(), 5, "{accepted:#?}");
    assert_eq!(egress.access_log().iter().filter(|l| l.contains("outcome=upstream_failed")).count(), 3);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(egress.access_log().iter().filter(|l| l.contains("outcome=closed")).count(), 5);

    // Last, so every behaviour above is checked first: the operator reads why in the
    // access log — the names the server presented and the setting they failed.
    assert!(
        unlisted_line.contains("none of which is in upstream_tls.subject_alt_names"),
        "the refusal should say it failed subject_alt_names: {unlisted_line}"
    );
}
