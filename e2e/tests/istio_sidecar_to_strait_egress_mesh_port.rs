//! Meshed apps keep their sidecars when the egress gateway becomes Strait: Envoy 1.40
//! configured as Istio configures the app's sidecar for the tutorial's VirtualService
//! (mesh match, port 3306 -> egress gateway 15443) and DestinationRule
//! `egressgateway-for-mysql` (`ISTIO_MUTUAL`, `sni: $SERVICE_URL`) —
//! e2e/envoy/istio-sidecar.yaml: the workload's SPIFFE certificate, the egress gateway's
//! SPIFFE identity verified, SNI, and Istio's ALPN values `istio-peer-exchange`/`istio`
//! — originates to Strait's egress mesh listener on 15443
//! (config-examples/istio/strait-egress.toml), which picks the route by SNI and
//! originates MUTUAL TLS across the clusters to Strait's ingress.

use strait_e2e::envoy::{sidecar, strait_egress, strait_ingress};
use strait_e2e::netns::{ServerServices, TwoClusters, INGRESS_PORT, MESH_PORT, MYSQL_PORT};
use strait_e2e::*;

#[test]
fn istio_sidecar_reaches_strait_egress_mesh_port_with_istio_mutual() {
    let clusters = TwoClusters::new();
    let pki = Pki::reference();
    let server = ServerServices::start(&clusters, pki.dir.path());
    let ingress = clusters.server.gateway(Role::Ingress, pki.dir.path(), &strait_ingress(&pki));
    let egress = clusters.client.gateway(Role::Egress, pki.dir.path(), &strait_egress(&clusters, &pki, &pki.path("egress")));
    let sidecar = sidecar(&clusters, &pki);
    let app = std::net::SocketAddr::from(([127, 0, 0, 1], MYSQL_PORT));

    clusters.client.mariadb_sql(app, TUTORIAL_SQL).expect_ok("the tutorial's SQL, Istio sidecar -> Strait egress mesh port -> Strait ingress");
    assert_eq!(server.db.root_sql("SELECT id, content FROM test_encrypted_connection.message").trim(), "1\tCrypto Hi");

    // Strait's mesh listener: the sidecar's SPIFFE identity, the SNI that picked the
    // route, TLS on both sides, from the sidecar to the server cluster's ingress.
    let mesh_line = egress.wait_for_access_line(&["listener=mesh", "route=mysql-external", "outcome=closed"]);
    assert!(mesh_line.contains("identity=spiffe://cluster.local/ns/default/sa/client"), "{mesh_line}");
    assert!(mesh_line.contains(&format!("sni={SERVICE_HOST}")), "{mesh_line}");
    assert!(mesh_line.contains("tls=both"), "{mesh_line}");
    assert!(mesh_line.contains(&format!("upstream={}", clusters.server.at(INGRESS_PORT))), "{mesh_line}");
    ingress.wait_for_access_line(&["route=mysql", "outcome=closed", &format!("identity=client.{SERVICE_HOST}")]);
    // The sidecar's side: its cluster to the egress gateway handshook once, and the
    // egress gateway's certificate passed its SPIFFE check.
    let cluster = "cluster.outbound|15443|mysql|istio-egressgateway.istio-system.svc.cluster.local";
    assert!(sidecar.stat(&clusters.client, &format!("{cluster}.ssl.handshake")) >= 1, "the sidecar completed no handshake with Strait");
    assert_eq!(sidecar.stat(&clusters.client, &format!("{cluster}.ssl.fail_verify_san")), 0);
    let sidecar_line = sidecar.wait_for_access_line(&[&format!("\"{}\"", clusters.client.at(MESH_PORT))]);
    // No response flags, no upstream TLS failure.
    assert!(sidecar_line.contains("\" 0 - - - \"-\" "), "the sidecar logged a failure: {sidecar_line}");
}
