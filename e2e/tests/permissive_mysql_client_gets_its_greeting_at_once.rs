//! A permissive port whose default route is MySQL (a server-first protocol): a plaintext
//! MySQL client sends nothing until it hears the server's greeting, so Istio's permissive
//! mode (which waits for the client's first byte) leaves it hanging. Strait waits only
//! for `permissive_detection_window`: a silent client is plaintext and gets the greeting
//! at once, while mTLS clients on the same port are served as before.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use strait::protocol::mysql::{parse_greeting, CLIENT_SSL};
use strait_e2e::config::quoted;
use strait_e2e::hostile::metric;
use strait_e2e::*;

fn config(pki: &Pki, db: u16) -> String {
    Config::new()
        .listener(
            Listener::mutual("permissive", &pki.path("ingress"))
                .set("peer_auth", quoted("permissive"))
                .set("default_route", quoted("mysql"))
                .set("handshake_timeout", quoted("5s"))
                .set("permissive_detection_window", quoted("50ms")),
        )
        .route(Route::to("mysql", db).hosts(&[SERVICE_HOST]).protocol("mysql"))
        .toml()
}

/// Reads one MySQL packet (4-byte header, then its payload); returns the payload.
fn read_packet(stream: &mut impl Read) -> Vec<u8> {
    let mut header = [0u8; 4];
    stream.read_exact(&mut header).expect("a MySQL packet header");
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload).expect("the MySQL packet's payload");
    payload
}

#[test]
fn plaintext_mysql_client_is_greeted_at_once_and_mtls_still_works() {
    let pki = Pki::reference();
    let db = MariaDb::start();
    let ingress = Gateway::start(Role::Ingress, pki.dir.path(), &config(&pki, db.port));
    let port = ingress.port("permissive");
    let (_, dump) = ingress.admin("GET", "/config_dump");
    assert!(dump.replace(char::is_whitespace, "").contains("\"permissive_detection_window\":\"50ms\""), "{dump}");

    // A raw plaintext client that says nothing: the greeting comes well before the 5s
    // handshake timeout a first-byte wait would take.
    let mut silent = TcpStream::connect(("127.0.0.1", port)).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let start = Instant::now();
    let greeting = read_packet(&mut silent);
    let took = start.elapsed();
    println!("plaintext client: server greeting after {took:?} (detection window 50ms, handshake_timeout 5s)");
    assert!(took < Duration::from_secs(2), "the greeting took {took:?}: the gateway waited for the client's first byte");
    parse_greeting(&greeting).expect("a MySQL HandshakeV10 greeting");
    drop(silent);

    // The real mariadb client runs the tutorial's SQL through the permissive port.
    mariadb_sql(port, TUTORIAL_SQL).expect("the tutorial's SQL through the permissive port in plaintext");
    assert_eq!(db.root_sql("SELECT id, content FROM test_encrypted_connection.message").trim(), "1\tCrypto Hi");
    let line = ingress.wait_for_access_line(&["listener=permissive", "route=mysql", "outcome=closed", "identity=- ", "protocol=mysql"]);
    assert!(line.contains("sni=- ") && !line.contains("bytes_received=0 "), "{line}");

    // An mTLS client on the same port: its ClientHello arrives inside the window, so it
    // is TLS as before, and inside TLS it reads the greeting, TLS not offered again.
    let mut tls = tls_connect(port, SERVICE_HOST, pki.egress_client()).expect("mTLS on the permissive port");
    let greeting = read_packet(&mut tls);
    let parsed = parse_greeting(&greeting).expect("a MySQL greeting inside TLS");
    assert_eq!(parsed.capabilities & CLIENT_SSL, 0, "TLS offered again inside TLS");
    drop(tls);
    let line = ingress.wait_for_access_line(&["listener=permissive", "route=mysql", &format!("identity=client.{SERVICE_HOST} ")]);
    assert!(line.contains(&format!("sni={SERVICE_HOST} ")), "{line}");
    assert_eq!(metric(&ingress, "strait_handshake_failures_total", &[("listener", "permissive"), ("reason", "timeout")]), 0.0);
}
