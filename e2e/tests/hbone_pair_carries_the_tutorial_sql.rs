//! The tutorial's SQL over HBONE: client -> egress plain port -> one HTTP/2 `CONNECT`
//! stream (authority `db.strait.test:3306`) inside a pooled mutual-TLS connection ->
//! ingress HBONE listener -> MariaDB. Each client connection is one stream, logged per
//! stream at both ends; the pool connection is logged once at the ingress when it closes.

use strait_e2e::hbone::{pool_connections_opened, wait_for_access_lines, HbonePair, AUTHORITY};
use strait_e2e::*;

#[test]
fn tutorial_sql_crosses_the_pair_as_hbone_streams() {
    let pki = Pki::reference();
    let db = MariaDb::start();
    let pair = HbonePair::start(&pki, db.port, |r| r);

    mariadb_sql(pair.plain_port, TUTORIAL_SQL).expect("the tutorial's SQL through the HBONE pair");
    let row = mariadb_sql(pair.plain_port, "SELECT content FROM test_encrypted_connection.message WHERE id = 1").expect("reading the row back");
    assert_eq!(row.trim(), "Crypto Hi");
    assert_eq!(db.root_sql("SELECT id, content FROM test_encrypted_connection.message").trim(), "1\tCrypto Hi");

    // Two client connections, two streams, one pool connection.
    let ingress_streams = wait_for_access_lines(&pair.ingress, &["listener=hbone", "route=mysql", "outcome=closed"], 2);
    for line in &ingress_streams {
        assert!(line.contains(&format!("authority={AUTHORITY}")), "{line}");
        assert!(line.contains(&format!("identity=client.{SERVICE_HOST}")), "{line}");
        assert!(line.contains(&format!("upstream=127.0.0.1:{}", db.port)), "{line}");
        assert!(!line.contains("bytes_received=0 "), "the stream carried the client's bytes: {line}");
    }
    let egress_streams = wait_for_access_lines(&pair.egress, &["listener=mysql-plain", "route=to-ingress", "outcome=closed"], 2);
    for line in &egress_streams {
        assert!(line.contains(&format!("upstream=127.0.0.1:{}", pair.hbone_port)), "{line}");
        assert!(line.contains("tls=upstream"), "{line}");
    }
    assert_eq!(pool_connections_opened(&pair.egress), 1, "{}", pair.egress.proc.output());

    // The pool connection itself is logged once, when it closes (the egress stops).
    let HbonePair { mut egress, ingress, .. } = pair;
    egress.proc.kill();
    let outer = wait_for_access_lines(&ingress, &["listener=hbone", "protocol=hbone"], 1);
    assert!(outer[0].contains(&format!("identity=client.{SERVICE_HOST}")), "{}", outer[0]);
}
