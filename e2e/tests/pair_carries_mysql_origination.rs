//! The pair carries database origination too: a plain client -> egress (`tcp`, mTLS) ->
//! ingress, whose route is `protocol = "mysql"` with `upstream_tls` -> a MariaDB that
//! accepts only TLS with client certificates. The ingress makes the SSL request inside
//! the MySQL handshake; the client never does TLS itself.

use strait_e2e::databases::{mariadb_plain, TlsMariaDb};
use strait_e2e::*;

fn ingress(pki: &Pki, db: u16) -> Config {
    let route = Route::to("tls-mariadb", db).hosts(&[SERVICE_HOST]).protocol("mysql").mutual_origination(&pki.path("egress"), SERVICE_HOST);
    Config::new().listener(ingress_listener(&pki.path("ingress"))).route(route)
}

#[test]
fn plain_client_through_the_pair_into_a_tls_only_mariadb() {
    let pki = Pki::reference();
    let db = TlsMariaDb::start(&pki.path("ingress"), &pki.path("ca-chain.cert.pem"));
    db.root_sql("CREATE USER app@'%' IDENTIFIED BY 'app' REQUIRE X509; GRANT ALL ON *.* TO app@'%';");
    let ingress_gw = Gateway::start(strait_e2e::Role::Ingress, pki.dir.path(), &ingress(&pki, db.port).toml());
    let ingress_port = ingress_gw.port("mtls");
    let egress_gw = Gateway::start(strait_e2e::Role::Egress, pki.dir.path(), &egress_config(&pki, &format!("127.0.0.1:{ingress_port}")).toml());
    let plain = egress_gw.port("mysql-plain");

    mariadb_plain(plain, "app", "app", TUTORIAL_SQL).expect_ok("the tutorial's SQL through the pair");
    let row = mariadb_plain(plain, "app", "app", "SELECT content FROM test_encrypted_connection.message WHERE id = 1");
    assert_eq!(row.expect_ok("reading the row back through the pair").trim(), "Crypto Hi");
    assert_eq!(db.root_sql("SELECT id, content FROM test_encrypted_connection.message").trim(), "1\tCrypto Hi");
    let ssl = mariadb_plain(plain, "app", "app", "SHOW SESSION STATUS LIKE 'Ssl_version'");
    assert_eq!(ssl.expect_ok("Ssl_version through the pair").trim(), "Ssl_version\tTLSv1.3", "MariaDB must see TLS");

    // The egress carries bytes; the ingress negotiates MySQL TLS on both of its sides.
    let egress_line = egress_gw.wait_for_access_line(&["route=to-ingress", "outcome=closed"]);
    assert!(egress_line.contains("protocol=tcp") && egress_line.contains(&format!("upstream=127.0.0.1:{ingress_port}")), "{egress_line}");
    let ingress_line = ingress_gw.wait_for_access_line(&["route=tls-mariadb", "outcome=closed"]);
    assert!(ingress_line.contains("protocol=mysql") && ingress_line.contains("tls=both"), "{ingress_line}");
    assert!(ingress_line.contains(&format!("identity=client.{SERVICE_HOST}")), "{ingress_line}");
    assert!(ingress_line.contains(&format!("upstream=127.0.0.1:{}", db.port)), "{ingress_line}");

    // Without the pair, the same plain client is refused by the server.
    mariadb_plain(db.port, "app", "app", "SELECT 1").expect_refused("the plain client straight to MariaDB");
}
