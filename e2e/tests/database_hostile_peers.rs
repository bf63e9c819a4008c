//! Hostile peers in the database negotiation: a server that sends bytes behind its `S`,
//! a client that sends bytes behind its TLS request, oversized, truncated and stalled
//! startup packets and greetings. Each closes that one connection promptly (bounded by
//! the negotiation timeout at worst), nothing reaches the database, and good clients of
//! the same gateway are served after every one of them.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use strait_e2e::config::tls;
use strait_e2e::databases::{
    connect_and_send, drain, mariadb_plain, mysql_ssl_request, psql, read_mysql_packet, FakeServer, LocalhostPki, PgTls, Postgres, PG_SSL_REQUEST,
};
use strait_e2e::hostile::closed_by_gateway;
use strait_e2e::*;

/// How long a refusal may take when the peer's fault is visible at once.
const PROMPT: Duration = Duration::from_secs(5);
/// A stalled negotiation must end by the gateway's 10 s negotiation timeout (plus slack).
const STALL_LIMIT: Duration = Duration::from_secs(15);

/// A PostgreSQL server that accepts our SSLRequest with `S` and, in the same write,
/// bytes that are not TLS: what a man in the middle injects (CVE-2021-23222 class).
fn pg_s_then_injected(mut stream: TcpStream) {
    let mut request = [0u8; 8];
    if stream.read_exact(&mut request).is_ok() {
        let _ = stream.write_all(b"S\x00injected plaintext, not a TLS record\n");
        drain(stream);
    }
}

/// A MySQL server whose greeting announces 16 MiB.
fn mysql_oversized_greeting(mut stream: TcpStream) {
    let mut greeting = vec![0xff, 0xff, 0xff, 0x00, 0x0a];
    greeting.extend_from_slice(&[b'5'; 1024]);
    let _ = stream.write_all(&greeting);
    drain(stream);
}

/// A MySQL server that sends part of a greeting and closes.
fn mysql_truncated_greeting(mut stream: TcpStream) {
    let _ = stream.write_all(b"\x50\x00\x00\x00\x0a5.5.5-10.11");
    let _ = stream.shutdown(Shutdown::Both);
}

struct Ports {
    pg_fake: u16,
    pg_term: u16,
    my_big: u16,
    my_short: u16,
    my_term: u16,
}

const LISTENERS: [&str; 5] = ["pg-fake", "pg-term", "my-big", "my-short", "my-term"];

fn egress(pki: &Pki, certs: &LocalhostPki, fakes: (u16, u16, u16), pg: u16, mariadb: u16) -> Config {
    let (fake_pg, fake_big, fake_short) = fakes;
    let client = pki.path("egress");
    let server = tls("mutual", &certs.server);
    let mut config = Config::new();
    for name in LISTENERS {
        config = config.listener(Listener::plain(name, name));
    }
    config
        .route(Route::to("pg-fake", fake_pg).protocol("postgres").mutual_origination(&client, SERVICE_HOST))
        .route(Route::to("pg-term", pg).protocol("postgres").plaintext().set("downstream_tls", &server))
        .route(Route::to("my-big", fake_big).protocol("mysql").mutual_origination(&client, SERVICE_HOST))
        .route(Route::to("my-short", fake_short).protocol("mysql").mutual_origination(&client, SERVICE_HOST))
        // TLS offered, plaintext served: the good MySQL client stays plain.
        .route(Route::to("my-term", mariadb).protocol("mysql").plaintext().set("downstream_ssl_mode", "\"preferred\"").set("downstream_tls", &server))
}

/// Good clients of both protocols, through the gateway's termination routes.
fn good_clients_served(certs: &LocalhostPki, p: &Ports, after: &str) {
    let conninfo = format!(
        "host=localhost hostaddr=127.0.0.1 port={} user=app dbname=postgres sslmode=verify-full sslrootcert={} sslcert={} sslkey={}",
        p.pg_term,
        certs.ca.display(),
        certs.client.join("tls.crt").display(),
        certs.client.join("tls.key").display()
    );
    let pg = psql(&conninfo, "SELECT 'still served'");
    assert_eq!(pg.expect_ok(&format!("psql verify-full after {after}")).trim(), "still served");
    let my = mariadb_plain(p.my_term, "app", "app", "SELECT 'still served'");
    assert_eq!(my.expect_ok(&format!("mariadb after {after}")).trim(), "still served");
}

/// Reads until the gateway closes `stream`, within `PROMPT`; returns what it sent.
fn closed_promptly(stream: &mut TcpStream, what: &str) -> Vec<u8> {
    let closed = closed_by_gateway(stream, PROMPT);
    assert!(closed.after < PROMPT, "{what}: closed only after {:?}", closed.after);
    closed.received
}

#[test]
fn hostile_database_peers_lose_only_their_own_connection() {
    let pki = Pki::reference();
    let certs = LocalhostPki::issue(&pki, "localhost");
    let pg = Postgres::start(PgTls::Off);
    pg.superuser_sql("CREATE USER app");
    let db = MariaDb::start();
    let fakes =
        (FakeServer::start(pg_s_then_injected).port, FakeServer::start(mysql_oversized_greeting).port, FakeServer::start(mysql_truncated_greeting).port);
    let gateway = Gateway::start(strait_e2e::Role::Egress, pki.dir.path(), &egress(&pki, &certs, fakes, pg.port, db.port).toml());
    let [pg_fake, pg_term, my_big, my_short, my_term] = LISTENERS.map(|name| gateway.port(name));
    let p = Ports { pg_fake, pg_term, my_big, my_short, my_term };
    good_clients_served(&certs, &p, "start-up");

    // A client that starts a startup packet and goes silent: checked at the end, by
    // which time the negotiation timeout must have closed it.
    let stalled_since = Instant::now();
    let mut stalled = connect_and_send(p.pg_term, &[0, 0, 0, 40, 0, 3, 0, 0]);

    // PostgreSQL server: `S` followed by injected bytes. The client gets an error.
    let run = psql(&format!("host=127.0.0.1 port={} user=app dbname=postgres sslmode=disable", p.pg_fake), "SELECT 1");
    let message = run.expect_refused("psql through a route whose server injects bytes after S");
    assert!(run.took < PROMPT, "took {:?}: {message}", run.took);
    assert!(message.contains("strait"), "{message}");
    let line = gateway.wait_for_access_line(&["route=pg-fake", "outcome=upstream_failed"]);
    assert!(line.contains("protocol=postgres"), "{line}");
    good_clients_served(&certs, &p, "a server injecting bytes after S");

    // PostgreSQL client: SSLRequest with bytes behind it in the same write.
    let mut request = PG_SSL_REQUEST.to_vec();
    request.extend_from_slice(b"plaintext smuggled behind the SSLRequest");
    let mut stream = connect_and_send(p.pg_term, &request);
    let received = closed_promptly(&mut stream, "bytes after SSLRequest");
    assert!(!received.starts_with(b"S"), "the gateway agreed to TLS although bytes followed the SSLRequest: {received:02x?}");
    let line = gateway.wait_for_access_line(&["route=pg-term", "after its TLS request"]);
    assert!(line.contains("outcome=refused") && line.contains("upstream=-"), "{line}");
    good_clients_served(&certs, &p, "bytes after an SSLRequest");

    // Oversized startup packet (PostgreSQL's own limit is 10000 bytes).
    let mut oversized = 12_288u32.to_be_bytes().to_vec();
    oversized.extend_from_slice(&[0, 3, 0, 0]);
    oversized.extend_from_slice(b"user\0app\0");
    let mut stream = connect_and_send(p.pg_term, &oversized);
    let received = closed_promptly(&mut stream, "an oversized startup packet");
    assert!(received.is_empty() || received[0] == b'E', "{received:02x?}");
    let line = gateway.wait_for_access_line(&["route=pg-term", "12288"]);
    assert!(line.contains("outcome=refused") && line.contains("upstream=-"), "{line}");
    good_clients_served(&certs, &p, "an oversized startup packet");

    // Truncated startup packet: the client closes mid-packet.
    let mut stream = connect_and_send(p.pg_term, &[0, 0, 0, 40, 0, 3, 0, 0, b'u', b's']);
    stream.shutdown(Shutdown::Write).unwrap();
    closed_promptly(&mut stream, "a truncated startup packet");
    let line = gateway.wait_for_access_line(&["route=pg-term", "outcome=refused", "startup packet:"]);
    assert!(line.contains("upstream=-"), "{line}");
    good_clients_served(&certs, &p, "a truncated startup packet");

    // MySQL server: a greeting announcing 16 MiB. The client gets an error promptly.
    let run = mariadb_plain(p.my_big, "app", "app", "SELECT 1");
    let message = run.expect_refused("mariadb through a route whose server sends an oversized greeting");
    assert!(run.took < PROMPT && message.contains("ERROR"), "took {:?}: {message}", run.took);
    let line = gateway.wait_for_access_line(&["route=my-big", "outcome=upstream_failed"]);
    assert!(line.contains("limit"), "{line}");
    good_clients_served(&certs, &p, "an oversized MySQL greeting");

    // MySQL server: half a greeting, then close.
    let run = mariadb_plain(p.my_short, "app", "app", "SELECT 1");
    let message = run.expect_refused("mariadb through a route whose server truncates its greeting");
    assert!(run.took < PROMPT && message.contains("ERROR"), "took {:?}: {message}", run.took);
    gateway.wait_for_access_line(&["route=my-short", "outcome=upstream_failed"]);
    good_clients_served(&certs, &p, "a truncated MySQL greeting");

    // MySQL client: an SSL request followed by bytes that are not a TLS ClientHello.
    let mut stream = TcpStream::connect(("127.0.0.1", p.my_term)).unwrap();
    read_mysql_packet(&mut stream).expect("the greeting");
    let mut request = mysql_ssl_request();
    request.extend_from_slice(b"plaintext smuggled behind the SSL request");
    stream.write_all(&request).unwrap();
    let received = closed_promptly(&mut stream, "non-TLS bytes after a MySQL SSL request");
    assert!(received.first() != Some(&0x00) && received.get(4) != Some(&0x00), "{received:02x?}");
    let line = gateway.wait_for_access_line(&["route=my-term", "outcome=refused"]);
    assert!(line.contains("tls=none"), "{line}");
    good_clients_served(&certs, &p, "non-TLS bytes after a MySQL SSL request");

    // MySQL client: a handshake response announcing 16 MiB.
    let mut stream = TcpStream::connect(("127.0.0.1", p.my_term)).unwrap();
    read_mysql_packet(&mut stream).expect("the greeting");
    stream.write_all(&[0xff, 0xff, 0xff, 0x01, 0x00, 0x02, 0x00, 0x00]).unwrap();
    closed_promptly(&mut stream, "an oversized MySQL handshake response");
    let line = gateway.wait_for_access_line(&["route=my-term", "outcome=refused", "limit"]);
    assert!(line.contains("protocol=mysql"), "{line}");
    good_clients_served(&certs, &p, "an oversized MySQL handshake response");

    // The stalled client has been closed by the negotiation timeout.
    let left = STALL_LIMIT.saturating_sub(stalled_since.elapsed()).max(Duration::from_millis(1));
    closed_by_gateway(&mut stalled, left);
    let line = gateway.wait_for_access_line(&["route=pg-term", "outcome=refused", "not finished within"]);
    assert!(line.contains("upstream=-"), "{line}");
    good_clients_served(&certs, &p, "a stalled startup packet");
}
