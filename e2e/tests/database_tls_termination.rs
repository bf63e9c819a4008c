//! Termination of the databases' own in-protocol TLS: native clients that do TLS
//! themselves (`mariadb --ssl-verify-server-cert --ssl-cert`, `psql
//! sslmode=verify-full sslcert=`) connect to plain Strait listeners in front of plain
//! MariaDB and PostgreSQL. Strait answers the protocol's TLS request, presents its
//! certificate, verifies the client's and checks its identity; clients without a
//! certificate are refused, plaintext clients are refused when the route requires TLS
//! and served when it only prefers it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

use strait_e2e::config::{list, quoted, tls};
use strait_e2e::databases::{mariadb, mysql_ssl_request, psql, read_mysql_packet, ClientRun, LocalhostPki, PgTls, Postgres, LOCALHOST_CLIENT};
use strait_e2e::*;

/// Listener ports of the gateway under test.
struct Ports {
    mysql_required: u16,
    mysql_preferred: u16,
    pg_required: u16,
    pg_preferred: u16,
}

fn ingress(certs: &LocalhostPki, mariadb: u16, postgres: u16) -> Config {
    let mut config = Config::new();
    for (name, protocol, upstream, mode) in [
        ("mysql-required", "mysql", mariadb, "required"),
        ("mysql-preferred", "mysql", mariadb, "preferred"),
        ("pg-required", "postgres", postgres, "required"),
        ("pg-preferred", "postgres", postgres, "preferred"),
    ] {
        let mut route = Route::to(name, upstream)
            .protocol(protocol)
            .plaintext()
            .set("downstream_ssl_mode", quoted(mode))
            .set("downstream_tls", tls("mutual", &certs.server));
        // Plaintext clients carry no identity, so only TLS-required routes can have one.
        if mode == "required" {
            route = route.set("allow", list(&[&format!("dns:{LOCALHOST_CLIENT}")]));
        }
        config = config.listener(Listener::plain(name, name)).route(route);
    }
    config
}

/// `mariadb` over TLS to `localhost:port`, verifying the gateway's certificate and
/// presenting Secret `client` (none: no client certificate).
fn mariadb_tls(certs: &LocalhostPki, port: u16, client: Option<&Path>, sql: &str) -> ClientRun {
    let port = port.to_string();
    let ca = certs.ca.display().to_string();
    let mut args = vec!["-h", "localhost", "--protocol=TCP", "-P", &port, "-uapp", "-papp", "--ssl", "--ssl-verify-server-cert", "--ssl-ca", &ca];
    let (cert, key) = client.map(|c| (c.join("tls.crt").display().to_string(), c.join("tls.key").display().to_string())).unzip();
    if let (Some(cert), Some(key)) = (&cert, &key) {
        args.extend(["--ssl-cert", cert, "--ssl-key", key]);
    }
    args.extend(["-N", "-B", "-e", sql]);
    mariadb(&args)
}

fn mariadb_skip_ssl(port: u16, sql: &str) -> ClientRun {
    mariadb(&["-h", "127.0.0.1", "-P", &port.to_string(), "-uapp", "-papp", "--skip-ssl", "-N", "-B", "-e", sql])
}

/// psql with `sslmode=verify-full` to `localhost:port` (address 127.0.0.1), presenting
/// Secret `client` (none: no client certificate).
fn psql_tls(certs: &LocalhostPki, port: u16, client: Option<&Path>, sql: &str) -> ClientRun {
    let mut conninfo = format!("host=localhost hostaddr=127.0.0.1 port={port} user=app dbname=postgres sslmode=verify-full sslrootcert={}", certs.ca.display());
    if let Some(c) = client {
        conninfo.push_str(&format!(" sslcert={} sslkey={}", c.join("tls.crt").display(), c.join("tls.key").display()));
    }
    psql(&conninfo, sql)
}

fn psql_plain(port: u16, sql: &str) -> ClientRun {
    psql(&format!("host=127.0.0.1 port={port} user=app dbname=postgres sslmode=disable"), sql)
}

/// MySQL has no answer to the SSL request: a client may send its TLS ClientHello right
/// behind it, and the two can arrive in one segment. This client does exactly that
/// (SSL request and ClientHello in one write), finishes TLS with the client
/// certificate, logs in as `user` (no password) and returns the server's reply packet.
fn mysql_login_with_coalesced_client_hello(certs: &LocalhostPki, port: u16, user: &str) -> Result<Vec<u8>, String> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let greeting = read_mysql_packet(&mut tcp).map_err(|e| format!("greeting: {e}"))?;
    let version_end = greeting[5..].iter().position(|&b| b == 0).ok_or("greeting without version")? + 5;
    let caps = u16::from_le_bytes([greeting[version_end + 14], greeting[version_end + 15]]);
    assert_ne!(caps & 0x0800, 0, "the gateway must offer TLS (CLIENT_SSL) in its greeting");
    let config = client_config(Some(&certs.client), &certs.ca);
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut conn = rustls::ClientConnection::new(config, name).unwrap();
    let mut first_write = mysql_ssl_request();
    conn.write_tls(&mut first_write).unwrap();
    tcp.write_all(&first_write).map_err(|e| format!("SSL request + ClientHello: {e}"))?;
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock).map_err(|e| format!("TLS handshake: {e}"))?;
    }
    // HandshakeResponse41: 4.1 protocol, secure connection, plugin auth, SSL.
    let mut response = (0x0000_0200u32 | 0x0000_8000 | 0x0008_0000 | 0x0000_0800).to_le_bytes().to_vec();
    response.extend_from_slice(&(16u32 << 20).to_le_bytes());
    response.push(33);
    response.extend_from_slice(&[0; 23]);
    response.extend_from_slice(user.as_bytes());
    response.extend_from_slice(&[0, 0]);
    response.extend_from_slice(b"mysql_native_password\0");
    let mut packet = (response.len() as u32).to_le_bytes()[..3].to_vec();
    packet.push(2);
    packet.extend(response);
    tls.write_all(&packet).map_err(|e| format!("handshake response: {e}"))?;
    let mut header = [0u8; 4];
    tls.read_exact(&mut header).map_err(|e| format!("reply to the login: {e}"))?;
    let mut reply = vec![0u8; u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize];
    tls.read_exact(&mut reply).map_err(|e| format!("reply to the login: {e}"))?;
    Ok(reply)
}

#[test]
fn native_tls_clients_are_terminated_in_front_of_plain_databases() {
    let pki = Pki::reference();
    let certs = LocalhostPki::issue(&pki, "localhost");
    let db = MariaDb::start();
    let pg = Postgres::start(PgTls::Off);
    pg.superuser_sql("CREATE USER app; GRANT ALL ON SCHEMA public TO app;");
    let gateway = Gateway::start(strait_e2e::Role::Ingress, pki.dir.path(), &ingress(&certs, db.port, pg.port).toml());
    let ports = Ports {
        mysql_required: gateway.port("mysql-required"),
        mysql_preferred: gateway.port("mysql-preferred"),
        pg_required: gateway.port("pg-required"),
        pg_preferred: gateway.port("pg-preferred"),
    };
    let client = Some(certs.client.as_path());

    // A MySQL client whose ClientHello follows its SSL request in the same segment is
    // a correct client (MySQL sends no answer to the SSL request to wait for).
    db.root_sql("CREATE USER nopw@'%';");
    for attempt in 0..3 {
        let reply = mysql_login_with_coalesced_client_hello(&certs, ports.mysql_required, "nopw")
            .unwrap_or_else(|e| panic!("attempt {attempt}: SSL request and ClientHello in one segment were refused: {e}\n{}", gateway.proc.output()));
        assert_eq!(reply.first(), Some(&0x00), "the server's OK must come back over the terminated TLS: {reply:02x?}");
    }

    // MySQL: TLS to the gateway, verified both ways; the tutorial's SQL lands.
    let status = mariadb_tls(&certs, ports.mysql_required, client, "status");
    assert!(status.expect_ok("mariadb over TLS to the gateway").contains("Cipher in use is TLS_"), "{status:?}");
    mariadb_tls(&certs, ports.mysql_required, client, TUTORIAL_SQL).expect_ok("the tutorial's SQL over terminated TLS");
    assert_eq!(db.root_sql("SELECT id, content FROM test_encrypted_connection.message").trim(), "1\tCrypto Hi");
    let line = gateway.wait_for_access_line(&["listener=mysql-required", "outcome=closed"]);
    assert!(line.contains("protocol=mysql") && line.contains("tls=downstream"), "{line}");
    assert!(line.contains(&format!("identity={LOCALHOST_CLIENT}")), "{line}");

    // PostgreSQL: the same, with libpq's strictest mode.
    let conninfo = psql_tls(&certs, ports.pg_required, client, "\\conninfo");
    assert!(conninfo.expect_ok("psql verify-full to the gateway").contains("SSL connection (protocol: TLSv1."), "{conninfo:?}");
    let user = psql_tls(&certs, ports.pg_required, client, "CREATE TABLE t (v text); INSERT INTO t VALUES ('Crypto Hi'); SELECT current_user");
    assert_eq!(user.expect_ok("SQL over terminated TLS").lines().last(), Some("app"), "{user:?}");
    assert_eq!(pg.superuser_sql("SELECT v FROM t").trim(), "Crypto Hi");
    let line = gateway.wait_for_access_line(&["listener=pg-required", "outcome=closed"]);
    assert!(line.contains("protocol=postgres") && line.contains("tls=downstream"), "{line}");
    assert!(line.contains(&format!("identity={LOCALHOST_CLIENT}")), "{line}");

    // No client certificate: the TLS handshake is refused.
    mariadb_tls(&certs, ports.mysql_required, None, "SELECT 1").expect_refused("mariadb without a client certificate");
    gateway.wait_for_access_line(&["listener=mysql-required", "outcome=refused", "client TLS handshake"]);
    psql_tls(&certs, ports.pg_required, None, "SELECT 1").expect_refused("psql without a client certificate");
    gateway.wait_for_access_line(&["listener=pg-required", "outcome=refused", "client TLS handshake"]);

    // A verified certificate whose identity is not on the route's allow list: denied,
    // with the reason in the client's own error.
    let intruder = Some(certs.intruder.as_path());
    let denied = mariadb_tls(&certs, ports.mysql_required, intruder, "SELECT 1");
    let message = denied.expect_refused("mariadb with an identity not on the allow list");
    assert!(message.contains("strait") && message.contains("allow list"), "{message}");
    gateway.wait_for_access_line(&["listener=mysql-required", "outcome=denied", "identity=intruder.strait.test"]);
    let denied = psql_tls(&certs, ports.pg_required, intruder, "SELECT 1");
    let message = denied.expect_refused("psql with an identity not on the allow list");
    assert!(message.contains("strait") && message.contains("allow list"), "{message}");
    gateway.wait_for_access_line(&["listener=pg-required", "outcome=denied", "identity=intruder.strait.test"]);

    // Plaintext where TLS is required: the protocol's own error.
    let plain = mariadb_skip_ssl(ports.mysql_required, "SELECT 1");
    let message = plain.expect_refused("mariadb --skip-ssl where TLS is required");
    assert!(message.contains("ERROR 3159") && message.contains("strait"), "{message}");
    gateway.wait_for_access_line(&["listener=mysql-required", "outcome=refused", "did not request TLS"]);
    let plain = psql_plain(ports.pg_required, "SELECT 1");
    let message = plain.expect_refused("psql sslmode=disable where TLS is required");
    assert!(message.contains("strait") && message.contains("did not request TLS"), "{message}");
    gateway.wait_for_access_line(&["listener=pg-required", "outcome=refused", "did not request TLS"]);

    // Where TLS is preferred, plaintext clients are served, and TLS clients too.
    let status = mariadb_skip_ssl(ports.mysql_preferred, "status");
    assert!(status.expect_ok("mariadb --skip-ssl where TLS is preferred").contains("Not in use"), "{status:?}");
    let status = mariadb_tls(&certs, ports.mysql_preferred, client, "status");
    assert!(status.expect_ok("mariadb over TLS where TLS is preferred").contains("Cipher in use is TLS_"), "{status:?}");
    let line = gateway.wait_for_access_line(&["listener=mysql-preferred", "tls=none", "outcome=closed"]);
    assert!(line.contains("protocol=mysql"), "{line}");
    gateway.wait_for_access_line(&["listener=mysql-preferred", "tls=downstream", "outcome=closed"]);
    let plain = psql_plain(ports.pg_preferred, "SELECT v FROM t");
    assert_eq!(plain.expect_ok("psql sslmode=disable where TLS is preferred").trim(), "Crypto Hi");
    let conninfo = psql_tls(&certs, ports.pg_preferred, client, "\\conninfo");
    assert!(conninfo.expect_ok("psql verify-full where TLS is preferred").contains("SSL connection"), "{conninfo:?}");
    gateway.wait_for_access_line(&["listener=pg-preferred", "tls=none", "outcome=closed"]);
    gateway.wait_for_access_line(&["listener=pg-preferred", "tls=downstream", "outcome=closed"]);
}
