//! The tutorial's check: a plain MySQL client talks to the egress's plain port, the
//! pair carries it over mTLS, and the row lands in MariaDB.

use strait_e2e::*;

#[test]
fn tutorial_sql_crosses_the_pair_into_mariadb() {
    let pki = Pki::reference();
    let db = MariaDb::start();
    let pair = Pair::start(&pki, db.port);

    mariadb_sql(pair.plain_port, TUTORIAL_SQL).expect("the tutorial's SQL through the egress plain port");
    let through_pair = mariadb_sql(pair.plain_port, "SELECT content FROM test_encrypted_connection.message WHERE id = 1").unwrap();
    assert_eq!(through_pair.trim(), "Crypto Hi");
    // Read back on the server side, bypassing both gateways.
    assert_eq!(db.root_sql("SELECT id, content FROM test_encrypted_connection.message").trim(), "1\tCrypto Hi");

    // Each hop logs the stream: route, SNI, the client identity the ingress verified.
    let egress_line = pair.egress.wait_for_access_line(&["listener=mysql-plain", "route=to-ingress", "outcome=closed"]);
    assert!(egress_line.contains(&format!("upstream=127.0.0.1:{}", pair.ingress_port)), "{egress_line}");
    let ingress_line = pair.ingress.wait_for_access_line(&["route=mysql", "outcome=closed"]);
    assert!(ingress_line.contains(&format!("sni={SERVICE_HOST}")), "{ingress_line}");
    assert!(ingress_line.contains(&format!("identity=client.{SERVICE_HOST}")), "{ingress_line}");
    assert!(!ingress_line.contains("bytes_received=0 "), "{ingress_line}");
}
