//! One mutual-TLS ingress port, two routes chosen by SNI: `db.strait.test` gets the
//! listener's certificate and MariaDB, `echo.strait.test` gets its own certificate
//! (route `downstream_tls`, from a different CA) and an echo server. Client
//! verification stays the listener's for both: the route brings a cert and key only.

use std::io::{Read, Write};

use strait::identity::Identity;
use strait_e2e::config::{inline, quoted_path};
use strait_e2e::databases::read_mysql_greeting;
use strait_e2e::*;

const ECHO_HOST: &str = "echo.strait.test";

/// The DNS SANs of the certificate the server presented.
fn server_dns_names(stream: &rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>) -> Vec<String> {
    let chain = stream.conn.peer_certificates().expect("the server presented a certificate");
    Identity::from_cert(&chain[0]).dns
}

#[test]
fn each_sni_gets_its_own_certificate_and_backend() {
    let pki = Pki::reference();
    let db = MariaDb::start();
    let echo = EchoServer::start();
    let echo_secret = pki.server_secret("echo-server", ECHO_HOST);
    let echo_tls = inline(&[("cert", quoted_path(&echo_secret.join("tls.crt"))), ("key", quoted_path(&echo_secret.join("tls.key")))]);
    let config = Config::new()
        .listener(Listener::mutual("mtls", &pki.path("ingress")))
        .route(Route::to("mysql", db.port).hosts(&[SERVICE_HOST]))
        .route(Route::to("echo", echo.port).hosts(&[ECHO_HOST]).set("downstream_tls", echo_tls));
    let ingress = Gateway::start(Role::Ingress, pki.dir.path(), &config.toml());
    let port = ingress.port("mtls");
    let egress_cert = pki.path("egress");
    let trusts_ingress = client_config(Some(&egress_cert), &pki.path("ingress/ca.crt"));
    let trusts_echo = client_config(Some(&egress_cert), &echo_secret.join("ca.crt"));

    // db.strait.test: the listener's certificate, verified by the cross-cluster CA,
    // and MariaDB behind it.
    let mut to_db = tls_connect(port, SERVICE_HOST, trusts_ingress.clone()).expect("handshake for the db host");
    assert_eq!(server_dns_names(&to_db), [SERVICE_HOST]);
    let version = read_mysql_greeting(&mut to_db);
    let server_version = db.root_sql("SELECT VERSION()").trim().to_owned();
    assert!(version.contains("MariaDB") && version.ends_with(&server_version), "greeting {version:?}, server {server_version:?}");

    // echo.strait.test: the route's own certificate, verified by its own CA, and the
    // echo server behind it.
    let mut to_echo = tls_connect(port, ECHO_HOST, trusts_echo.clone()).expect("handshake for the echo host");
    assert_eq!(server_dns_names(&to_echo), [ECHO_HOST]);
    let message = b"through one port to the echo route\n";
    to_echo.write_all(message).unwrap();
    to_echo.flush().unwrap();
    let mut echoed = vec![0u8; message.len()];
    to_echo.read_exact(&mut echoed).expect("the echo server answers through the ingress");
    assert_eq!(echoed, message);

    // Each certificate is only the one its SNI selects: trusting the other CA fails.
    let wrong = tls_connect(port, ECHO_HOST, trusts_ingress.clone());
    assert!(wrong.is_err(), "the echo host must not present the cross-cluster certificate");
    let wrong = tls_connect(port, SERVICE_HOST, trusts_echo);
    assert!(wrong.is_err(), "the db host must not present the echo certificate");

    // The echo route keeps the listener's client verification: no certificate, no echo.
    let anonymous = client_config(None, &echo_secret.join("ca.crt"));
    if let Ok(mut stream) = tls_connect(port, ECHO_HOST, anonymous) {
        let _ = stream.write_all(message);
        let mut buffer = [0u8; 64];
        let read = stream.read(&mut buffer);
        assert!(!matches!(read, Ok(n) if n > 0), "a client without a certificate reached the echo route: {read:?}");
    }
    ingress.wait_for_access_line(&["outcome=refused", &format!("sni={ECHO_HOST} "), "peer sent no certificates"]);

    drop(to_db);
    drop(to_echo);
    let db_line = ingress.wait_for_access_line(&["route=mysql ", "outcome=closed"]);
    assert!(db_line.contains(&format!("sni={SERVICE_HOST} ")), "{db_line}");
    assert!(db_line.contains(&format!("upstream=127.0.0.1:{} ", db.port)), "{db_line}");
    assert!(db_line.contains(&format!("identity=client.{SERVICE_HOST} ")), "{db_line}");
    let echo_line = ingress.wait_for_access_line(&["route=echo ", "outcome=closed"]);
    assert!(echo_line.contains(&format!("sni={ECHO_HOST} ")), "{echo_line}");
    assert!(echo_line.contains(&format!("upstream=127.0.0.1:{} ", echo.port)), "{echo_line}");
    assert!(echo_line.contains(&format!("identity=client.{SERVICE_HOST} ")), "{echo_line}");
    assert!(echo_line.contains(&format!("bytes_received={} ", message.len())), "{echo_line}");
}
