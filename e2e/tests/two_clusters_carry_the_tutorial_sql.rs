//! The reference topology with a real network in the middle: the client cluster and the
//! server cluster are network namespaces joined by a veth pair. `$SERVICE_URL` is
//! resolved by the server cluster's DNS, the egress (client cluster) originates mTLS
//! across the link to the ingress (server cluster), which forwards to MariaDB on the
//! server cluster's loopback. The tutorial's SQL crosses it and the row is read back on
//! the server side; a client in the client cluster cannot reach MariaDB by itself.

use std::net::SocketAddr;
use std::time::Duration;

use strait_e2e::netns::{egress_config, ingress_config, ServerServices, TwoClusters, INGRESS_PORT, MYSQL_PORT};
use strait_e2e::*;

#[test]
fn tutorial_sql_crosses_from_the_client_cluster_into_the_server_clusters_mariadb() {
    let clusters = TwoClusters::new();
    let pki = Pki::reference();
    let server = ServerServices::start(&clusters, pki.dir.path());
    let ingress = clusters.server.gateway(Role::Ingress, pki.dir.path(), &ingress_config(&pki, &clusters, "handshake_timeout = \"2s\"", ""));
    let egress = clusters.client.gateway(Role::Egress, pki.dir.path(), &egress_config(&pki, &clusters, "", ""));
    let app_port = clusters.client.at(MYSQL_PORT);

    clusters.client.mariadb_sql(app_port, TUTORIAL_SQL).expect_ok("the tutorial's SQL from the client cluster");
    let through = clusters.client.mariadb_sql(app_port, "SELECT content FROM test_encrypted_connection.message WHERE id = 1");
    assert_eq!(through.expect_ok("reading the row back through the pair").trim(), "Crypto Hi");
    assert_eq!(server.db.root_sql("SELECT id, content FROM test_encrypted_connection.message").trim(), "1\tCrypto Hi");

    // The egress found the ingress through the server cluster's DNS and crossed the link.
    let ingress_address = clusters.server.at(INGRESS_PORT);
    let egress_line = egress.wait_for_access_line(&["listener=mysql-plain", "route=to-server-cluster", "outcome=closed"]);
    assert!(egress_line.contains(&format!("upstream={ingress_address}")), "{egress_line}");
    assert!(egress_line.contains("tls=upstream"), "{egress_line}");
    assert!(server.dns.output().contains(&format!("query[A] {SERVICE_HOST}")), "dnsmasq saw no query:\n{}", server.dns.output());
    // The ingress saw the client cluster's address, the SNI and the client certificate.
    let ingress_line = ingress.wait_for_access_line(&["route=mysql", "outcome=closed"]);
    assert!(ingress_line.contains(&format!("downstream={}:", clusters.client.address)), "{ingress_line}");
    assert!(ingress_line.contains(&format!("sni={SERVICE_HOST}")), "{ingress_line}");
    assert!(ingress_line.contains(&format!("identity=client.{SERVICE_HOST}")), "{ingress_line}");

    // Only the gateway pair crosses: MariaDB listens on the server cluster's loopback,
    // so nothing in the client cluster reaches it, and the ingress wants a certificate.
    let mariadb_direct = SocketAddr::from((clusters.server.address, MYSQL_PORT));
    assert!(clusters.client.connect(mariadb_direct, Duration::from_secs(2)).is_err(), "MariaDB is reachable from the client cluster");
    // (MySQL waits for the server to speak first: the ingress gives up on the missing
    // ClientHello after its 2 s handshake_timeout.)
    let bypass = clusters.client.mariadb_sql(ingress_address, "SELECT 1");
    bypass.expect_refused("a plain client straight to the ingress");
    ingress.wait_for_access_line(&["listener=mtls", "outcome=refused", "TLS handshake not completed within 2s"]);
}
