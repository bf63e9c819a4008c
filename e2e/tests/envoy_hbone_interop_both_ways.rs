//! HBONE between Strait and Envoy 1.40, both ways, the tutorial's SQL through each, across
//! the two-cluster network (client cluster -> link -> server cluster, port 15008):
//! - Envoy originating (tcp_proxy `tunneling_config` over an HTTP/2 mutual-TLS cluster
//!   with ALPN h2, e2e/envoy/hbone-originate.yaml) -> Strait ingress HBONE listener ->
//!   MariaDB;
//! - Strait egress HBONE route -> Envoy terminating CONNECT (HTTP connection manager,
//!   `upgrade_configs` CONNECT with `connect_config`, mutual TLS,
//!   e2e/envoy/hbone-terminate.yaml) -> MariaDB.

use strait_e2e::envoy::Envoy;
use strait_e2e::hbone::AUTHORITY;
use strait_e2e::netns::{ServerServices, TwoClusters, MYSQL_PORT};
use strait_e2e::*;

/// Istio's HBONE port.
const HBONE_PORT: u16 = 15008;

#[test]
fn envoy_originating_hbone_reaches_mariadb_through_strait_ingress() {
    let clusters = TwoClusters::new();
    let pki = Pki::reference();
    let server = ServerServices::start(&clusters, pki.dir.path());
    let ingress_config = Config::new()
        .listener(Listener::mutual("hbone", &pki.path("ingress")).set("transport", "\"hbone\"").at(clusters.server.at(HBONE_PORT)))
        .route(Route::new("mysql", &format!("127.0.0.1:{MYSQL_PORT}")).hosts(&[SERVICE_HOST]));
    let ingress = clusters.server.gateway(Role::Ingress, pki.dir.path(), &ingress_config.toml());
    let vars = [
        ("LISTEN_IP", clusters.client.address.to_string()),
        ("AUTHORITY", AUTHORITY.to_owned()),
        ("HBONE_IP", clusters.server.address.to_string()),
        ("SERVER_NAME", SERVICE_HOST.to_owned()),
        ("CLIENT_CREDENTIAL", pki.path("egress").display().to_string()),
    ];
    let envoy = Envoy::start(&clusters.client, pki.dir.path(), "hbone-originate", "hbone-originate.yaml", &vars, clusters.client.at(MYSQL_PORT));

    let app = clusters.client.at(MYSQL_PORT);
    clusters.client.mariadb_sql(app, TUTORIAL_SQL).expect_ok("the tutorial's SQL, Envoy HBONE -> Strait ingress");
    let row = clusters.client.mariadb_sql(app, "SELECT content FROM test_encrypted_connection.message WHERE id = 1");
    assert_eq!(row.expect_ok("reading the row back").trim(), "Crypto Hi");
    assert_eq!(server.db.root_sql("SELECT id, content FROM test_encrypted_connection.message").trim(), "1\tCrypto Hi");

    let line = ingress.wait_for_access_line(&["listener=hbone", "route=mysql", "outcome=closed"]);
    assert!(line.contains(&format!("authority={AUTHORITY}")), "Envoy's CONNECT authority: {line}");
    assert!(line.contains(&format!("identity=client.{SERVICE_HOST}")), "Envoy's client certificate: {line}");
    assert!(line.contains(&format!("downstream={}:", clusters.client.address)), "{line}");
    envoy.wait_for_access_line(&[&format!("\"{}\" hbone", clusters.server.at(HBONE_PORT))]);
}

#[test]
fn strait_egress_hbone_reaches_mariadb_through_envoy_terminating_connect() {
    let clusters = TwoClusters::new();
    let pki = Pki::reference();
    let server = ServerServices::start(&clusters, pki.dir.path());
    let vars = [
        ("LISTEN_IP", clusters.server.address.to_string()),
        ("CREDENTIAL", pki.path("ingress").display().to_string()),
        ("AUTHORITY", AUTHORITY.to_owned()),
        ("MYSQL_PORT", MYSQL_PORT.to_string()),
    ];
    let envoy = Envoy::start(&clusters.server, pki.dir.path(), "hbone-terminate", "hbone-terminate.yaml", &vars, clusters.server.at(HBONE_PORT));
    let upstream = clusters.server.at(HBONE_PORT).to_string();
    let egress_config = Config::new()
        .listener(Listener::plain("mysql-plain", "to-server-cluster").at(clusters.client.at(MYSQL_PORT)))
        .route(strait_e2e::hbone::hbone_route(&pki, "to-server-cluster", &upstream, AUTHORITY));
    let egress = clusters.client.gateway(Role::Egress, pki.dir.path(), &egress_config.toml());

    let app = clusters.client.at(MYSQL_PORT);
    clusters.client.mariadb_sql(app, TUTORIAL_SQL).expect_ok("the tutorial's SQL, Strait egress HBONE -> Envoy");
    let row = clusters.client.mariadb_sql(app, "SELECT content FROM test_encrypted_connection.message WHERE id = 1");
    assert_eq!(row.expect_ok("reading the row back").trim(), "Crypto Hi");
    assert_eq!(server.db.root_sql("SELECT id, content FROM test_encrypted_connection.message").trim(), "1\tCrypto Hi");

    let line = egress.wait_for_access_line(&["listener=mysql-plain", "route=to-server-cluster", "outcome=closed"]);
    assert!(line.contains(&format!("upstream={upstream}")), "{line}");
    assert_eq!(egress.log_lines(strait_e2e::hbone::POOL_OPENED).len(), 1, "two client connections, one pool connection:\n{}", egress.proc.output());
    envoy.wait_for_access_line(&[&format!("\"CONNECT {AUTHORITY} HTTP/2\" 200"), &format!("\"127.0.0.1:{MYSQL_PORT}\"")]);
}
