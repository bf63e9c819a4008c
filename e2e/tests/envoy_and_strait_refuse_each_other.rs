//! Refusals interoperate too: a client certificate from a CA the other side does not
//! trust is refused whichever side is Envoy (configured as Istio configures it) and
//! whichever is Strait, with a log line that says so, and the app's mariadb client is
//! told instead of hanging.
//! - Envoy as Istio's egress gateway with a foreign client credential -> Strait's
//!   ingress refuses the handshake (`unknown_ca`).
//! - Strait's egress with a foreign client credential -> Envoy as Istio's ingress
//!   gateway refuses it (`CERTIFICATE_VERIFY_FAILED` in Envoy's access log).

use std::path::PathBuf;

use strait::certs::{Leaf, Usage};
use strait_e2e::envoy::{egress_gateway, ingress_gateway, sidecar, strait_egress, strait_ingress};
use strait_e2e::netns::{ServerServices, TwoClusters, INGRESS_PORT, MYSQL_PORT};
use strait_e2e::*;

/// A client credential (Secret layout) whose certificate comes from a CA nobody trusts,
/// named like the real one, but whose `ca.crt` trusts the real server: the handshake
/// gets as far as the client certificate.
fn foreign_client_credential(pki: &Pki) -> PathBuf {
    let mut leaf = Leaf::new(&format!("client.{SERVICE_HOST}"), Usage::Client, 30);
    leaf.dns.push(format!("client.{SERVICE_HOST}"));
    let dir = pki.foreign("foreign-client-credential", &leaf);
    std::fs::copy(pki.path("egress/ca.crt"), dir.join("ca.crt")).unwrap();
    dir
}

#[test]
fn strait_ingress_refuses_envoy_egress_gateway_with_a_foreign_client_certificate() {
    let clusters = TwoClusters::new();
    let pki = Pki::reference();
    let server = ServerServices::start(&clusters, pki.dir.path());
    let ingress = clusters.server.gateway(Role::Ingress, pki.dir.path(), &strait_ingress(&pki));
    let _gateway = egress_gateway(&clusters, &pki, &foreign_client_credential(&pki));
    let _sidecar = sidecar(&clusters, &pki);
    let app = std::net::SocketAddr::from(([127, 0, 0, 1], MYSQL_PORT));

    clusters.client.mariadb_sql(app, "SELECT 1").expect_refused("the app, behind an egress gateway with a foreign certificate");
    let line = ingress.wait_for_access_line(&["listener=mtls", "outcome=refused"]);
    assert!(line.contains(&format!("downstream={}:", clusters.client.address)), "{line}");
    assert!(line.contains(&format!("sni={SERVICE_HOST}")), "{line}");
    assert!(line.contains("reason=TLS handshake failed: invalid peer certificate: UnknownIssuer"), "{line}");
    let (_, metrics) = clusters.server.admin(&ingress, "GET", "/metrics");
    assert!(
        metrics.lines().any(|l| l.starts_with("strait_handshake_failures_total") && l.contains("reason=\"unknown_ca\"") && !l.ends_with(" 0")),
        "no unknown_ca handshake failure counted:\n{metrics}"
    );
    // Nothing reached MariaDB.
    assert!(!ingress.access_log().iter().any(|l| l.contains("route=mysql")), "{:?}", ingress.access_log());
    assert_eq!(server.db.root_sql("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE USER = 'app'").trim(), "0");
}

#[test]
fn envoy_ingress_gateway_refuses_strait_egress_with_an_untrusted_certificate() {
    let clusters = TwoClusters::new();
    let pki = Pki::reference();
    let _server = ServerServices::start(&clusters, pki.dir.path());
    let envoy = ingress_gateway(&clusters, pki.dir.path(), &pki.path("ingress"));
    let egress = clusters.client.gateway(Role::Egress, pki.dir.path(), &strait_egress(&clusters, &pki, &foreign_client_credential(&pki)));
    let app = clusters.client.at(MYSQL_PORT);

    clusters.client.mariadb_sql(app, "SELECT 1").expect_refused("the app, behind a Strait egress with an untrusted certificate");
    // Envoy: the SNI it matched, and why the handshake failed.
    let envoy_line = envoy.wait_for_access_line(&[SERVICE_HOST, "CERTIFICATE_VERIFY_FAILED"]);
    assert!(envoy_line.contains(&format!(" {} {}:", clusters.server.at(INGRESS_PORT), clusters.client.address)), "{envoy_line}");
    let listener = format!("listener.{}_{INGRESS_PORT}.ssl", clusters.server.address);
    assert!(envoy.stat(&clusters.server, &format!("{listener}.fail_verify_error")) >= 1, "Envoy counted no verify failure");
    assert_eq!(envoy.stat(&clusters.server, &format!("{listener}.handshake")), 0, "Envoy completed a handshake with the untrusted client");
    // Strait: the stream ended on the server's alert, and the line says which. (With
    // TLS 1.3 the client's handshake is complete before the server judges the client
    // certificate, so the alert arrives on the first read; Strait still classifies it as
    // the origination failure it is.)
    let strait_line = egress.wait_for_access_line(&["listener=mysql-plain", "route=mysql-external"]);
    assert!(strait_line.contains("outcome=upstream_failed") && strait_line.contains("refused our client certificate"), "{strait_line}");
    assert!(strait_line.contains("fatal alert: UnknownCA"), "Strait's line does not say the server refused its certificate: {strait_line}");
}
