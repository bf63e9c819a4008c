//! Migrating the server cluster first: the client cluster is still all Istio — the
//! app's sidecar (ISTIO_MUTUAL to the egress gateway) and the egress gateway (Envoy
//! 1.40 configured as Istio configures it for the tutorial's Gateway, VirtualService,
//! DestinationRule `tls.mode: MUTUAL` with `credentialName` and `sni`, and ServiceEntry
//! `resolution: DNS`; e2e/envoy/istio-sidecar.yaml and istio-egress-gateway.yaml) — and
//! the server cluster runs Strait's ingress (config-examples/istio/strait-ingress.toml).
//! The tutorial's SQL crosses; Strait's access log shows Envoy's client certificate, the
//! SNI Envoy sent, and the client cluster's address.

use strait_e2e::envoy::{egress_gateway, sidecar, strait_ingress};
use strait_e2e::netns::{ServerServices, TwoClusters, INGRESS_PORT, MYSQL_PORT};
use strait_e2e::*;

#[test]
fn envoy_as_istio_egress_gateway_carries_the_tutorial_sql_to_strait_ingress() {
    let clusters = TwoClusters::new();
    let pki = Pki::reference();
    let server = ServerServices::start(&clusters, pki.dir.path());
    let ingress = clusters.server.gateway(Role::Ingress, pki.dir.path(), &strait_ingress(&pki));
    let gateway = egress_gateway(&clusters, &pki, &pki.path("egress"));
    let sidecar = sidecar(&clusters, &pki);
    // The app talks to "$SERVICE_URL:3306", which its sidecar intercepts.
    let app = std::net::SocketAddr::from(([127, 0, 0, 1], MYSQL_PORT));

    clusters.client.mariadb_sql(app, TUTORIAL_SQL).expect_ok("the tutorial's SQL, Istio sidecar -> Istio egress gateway -> Strait ingress");
    assert_eq!(server.db.root_sql("SELECT id, content FROM test_encrypted_connection.message").trim(), "1\tCrypto Hi");

    let strait_line = ingress.wait_for_access_line(&["listener=mtls", "route=mysql", "outcome=closed"]);
    assert!(strait_line.contains(&format!("sni={SERVICE_HOST}")), "{strait_line}");
    assert!(strait_line.contains(&format!("identity=client.{SERVICE_HOST}")), "Envoy's client credential: {strait_line}");
    assert!(strait_line.contains(&format!("downstream={}:", clusters.client.address)), "{strait_line}");
    assert!(strait_line.contains(&format!("upstream=127.0.0.1:{MYSQL_PORT}")), "{strait_line}");
    // The egress gateway resolved $SERVICE_URL with the server cluster's DNS and
    // originated from its cluster `outbound|13306||$SERVICE_URL`; the sidecar went to
    // the egress gateway's subset cluster.
    let ingress_address = clusters.server.at(INGRESS_PORT);
    let gateway_line = gateway.wait_for_access_line(&[&format!("\"{ingress_address}\" outbound|13306||{SERVICE_HOST}"), SERVICE_HOST]);
    assert!(gateway_line.ends_with("\"-\""), "{gateway_line}");
    assert!(server.dns.output().contains(&format!("query[A] {SERVICE_HOST}")), "{}", server.dns.output());
    sidecar.wait_for_access_line(&["outbound|15443|mysql|istio-egressgateway.istio-system.svc.cluster.local"]);
}
