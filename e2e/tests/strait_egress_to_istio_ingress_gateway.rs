//! Migrating the client cluster first: Strait's egress (config-examples/istio/
//! strait-egress.toml) in the client cluster, Istio's ingress gateway still in the
//! server cluster — Envoy 1.40 configured as Istio configures it for the tutorial's
//! Gateway `gateway-mysql` (`tls.mode: MUTUAL`, `credentialName: mysql-credential`) and
//! VirtualService (e2e/envoy/istio-ingress-gateway.yaml: tls_inspector, a filter chain
//! matched on the SNI, a client certificate required, tcp_proxy to MariaDB). The
//! tutorial's SQL crosses, and each side's log shows the stream.

use strait_e2e::envoy::{ingress_gateway, strait_egress};
use strait_e2e::netns::{ServerServices, TwoClusters, INGRESS_PORT, MYSQL_PORT};
use strait_e2e::*;

#[test]
fn strait_egress_carries_the_tutorial_sql_through_envoy_as_istio_ingress_gateway() {
    let clusters = TwoClusters::new();
    let pki = Pki::reference();
    let server = ServerServices::start(&clusters, pki.dir.path());
    let envoy = ingress_gateway(&clusters, pki.dir.path(), &pki.path("ingress"));
    let egress = clusters.client.gateway(Role::Egress, pki.dir.path(), &strait_egress(&clusters, &pki, &pki.path("egress")));
    let app = clusters.client.at(MYSQL_PORT);

    clusters.client.mariadb_sql(app, TUTORIAL_SQL).expect_ok("the tutorial's SQL, Strait egress -> Istio ingress gateway");
    assert_eq!(server.db.root_sql("SELECT id, content FROM test_encrypted_connection.message").trim(), "1\tCrypto Hi");

    let ingress_address = clusters.server.at(INGRESS_PORT);
    let strait_line = egress.wait_for_access_line(&["listener=mysql-plain", "route=mysql-external", "outcome=closed"]);
    assert!(strait_line.contains(&format!("upstream={ingress_address}")), "{strait_line}");
    // Envoy's line (Istio's format): the tcp_proxy cluster of the VirtualService, the
    // SNI it matched, bytes both ways, and no TLS failure.
    let envoy_line = envoy.wait_for_access_line(&["outbound|3306||mysql.default.svc.cluster.local", SERVICE_HOST]);
    assert!(envoy_line.contains(&format!(" {ingress_address} {}:", clusters.client.address)), "downstream local and remote addresses: {envoy_line}");
    assert!(envoy_line.ends_with("\"-\""), "a TLS failure was logged: {envoy_line}");
    let handshakes = envoy.stat(&clusters.server, &format!("listener.{}_{INGRESS_PORT}.ssl.handshake", clusters.server.address));
    assert!(handshakes >= 1, "Envoy counted no completed handshake");
}
