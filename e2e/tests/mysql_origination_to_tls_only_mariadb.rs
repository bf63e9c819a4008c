//! MySQL origination: a plain `mariadb --skip-ssl` client reaches a MariaDB that
//! accepts only TLS and wants client certificates, because the egress's `mysql` route
//! makes the SSL request itself and presents the route's certificate. Password,
//! auth-switch (ed25519) and REQUIRE SUBJECT users log in; a route with a certificate
//! the server does not trust gives the client a MySQL error quickly, not a hang.

use std::time::Duration;

use strait::certs::{Leaf, Usage};
use strait_e2e::config::{inline, quoted, quoted_path};
use strait_e2e::databases::{mariadb, mariadb_plain, openssl_subject, TlsMariaDb};
use strait_e2e::*;

/// How long a refused login may take: the refusal is immediate, well under the
/// gateway's 10 s negotiation timeout (which is what a hang would end with).
const PROMPT: Duration = Duration::from_secs(5);

fn egress(pki: &Pki, db: u16, foreign: &std::path::Path) -> Config {
    // Verifies the server like the first route, but presents a certificate from a CA
    // MariaDB does not trust.
    let foreign_tls = inline(&[
        ("mode", quoted("mutual")),
        ("cert", quoted_path(&foreign.join("tls.crt"))),
        ("key", quoted_path(&foreign.join("tls.key"))),
        ("ca", quoted_path(&pki.path("ca-chain.cert.pem"))),
        ("sni", quoted(SERVICE_HOST)),
    ]);
    Config::new()
        .listener(Listener::plain("mysql-plain", "tls-mariadb"))
        .listener(Listener::plain("mysql-foreign", "foreign-cert"))
        .route(Route::to("tls-mariadb", db).protocol("mysql").mutual_origination(&pki.path("egress"), SERVICE_HOST))
        .route(Route::to("foreign-cert", db).protocol("mysql").set("upstream_tls", foreign_tls))
}

#[test]
fn plain_clients_reach_a_tls_only_mariadb_through_mysql_origination() {
    let pki = Pki::reference();
    let db = TlsMariaDb::start(&pki.path("ingress"), &pki.path("ca-chain.cert.pem"));
    let subject = openssl_subject(&pki.path("egress/tls.crt"));
    assert!(subject.contains("CN=client.db.strait.test") && subject.contains("O=Strait demo"), "{subject}");
    db.root_sql(&format!(
        "CREATE USER app@'%' IDENTIFIED BY 'app' REQUIRE X509; GRANT ALL ON *.* TO app@'%'; \
         INSTALL SONAME 'auth_ed25519'; \
         CREATE USER ed@'%' IDENTIFIED VIA ed25519 USING PASSWORD('pw') REQUIRE X509; \
         CREATE USER subj@'%' IDENTIFIED BY 'subj' REQUIRE SUBJECT '{subject}'; \
         CREATE USER other@'%' IDENTIFIED BY 'other' REQUIRE SUBJECT '/CN=someone-else.strait.test/O=Strait demo'; \
         CREATE USER anyone@'%' IDENTIFIED BY 'anyone';"
    ));

    let foreign = pki.foreign("foreign-client", &Leaf::new("client.db.strait.test", Usage::Client, 30));
    let gateway = Gateway::start(strait_e2e::Role::Egress, pki.dir.path(), &egress(&pki, db.port, &foreign).toml());
    let (plain, foreign_port) = (gateway.port("mysql-plain"), gateway.port("mysql-foreign"));

    // The tutorial's SQL, through the egress, lands in MariaDB over TLS.
    mariadb_plain(plain, "app", "app", TUTORIAL_SQL).expect_ok("the tutorial's SQL through the egress");
    let row = mariadb_plain(plain, "app", "app", "SELECT content FROM test_encrypted_connection.message WHERE id = 1");
    assert_eq!(row.expect_ok("reading the row back").trim(), "Crypto Hi");
    assert_eq!(db.root_sql("SELECT id, content FROM test_encrypted_connection.message").trim(), "1\tCrypto Hi");
    let ssl = mariadb_plain(plain, "app", "app", "SHOW SESSION STATUS LIKE 'Ssl_version'");
    assert_eq!(ssl.expect_ok("Ssl_version through the egress").trim(), "Ssl_version\tTLSv1.3", "the server side must be TLS");
    let line = gateway.wait_for_access_line(&["route=tls-mariadb", "outcome=closed"]);
    assert!(line.contains("protocol=mysql") && line.contains("tls=upstream"), "{line}");
    assert!(line.contains(&format!("upstream=127.0.0.1:{}", db.port)), "{line}");

    // Straight to the server, plaintext is refused even for a user without REQUIRE
    // (MariaDB 10.11 reports require_secure_transport as "Access denied"), while the
    // same user over TLS is served: the server is TLS-only. `app` needs the client
    // certificate as well: TLS without it is refused.
    let port = db.port.to_string();
    let direct = mariadb_plain(db.port, "anyone", "anyone", "SELECT 1");
    assert!(direct.expect_refused("plain client straight to MariaDB").contains("Access denied"), "{direct:?}");
    let direct_tls = mariadb(&["-h", "127.0.0.1", "-P", &port, "-uanyone", "-panyone", "--ssl", "-N", "-B", "-e", "SELECT 1"]);
    assert_eq!(direct_tls.expect_ok("the same user over TLS, straight to MariaDB").trim(), "1");
    let direct_app = mariadb_plain(db.port, "app", "app", "SELECT 1");
    direct_app.expect_refused("`app` in plaintext straight to MariaDB");
    let no_cert = mariadb(&["-h", "127.0.0.1", "-P", &port, "-uapp", "-papp", "--ssl", "-N", "-B", "-e", "SELECT 1"]);
    assert!(no_cert.expect_refused("`app` over TLS without a client certificate").contains("Access denied"), "{no_cert:?}");

    // An ed25519 user: the server asks the client to switch plugins mid-login.
    let ed = mariadb_plain(plain, "ed", "pw", "SELECT CURRENT_USER()");
    assert_eq!(ed.expect_ok("ed25519 login through the egress").trim(), "ed@%");
    let wrong = mariadb_plain(plain, "ed", "not-the-password", "SELECT 1");
    let wrong = wrong.expect_refused("ed25519 with a wrong password");
    assert!(wrong.contains("ERROR 1045") && wrong.contains("Access denied"), "the server's own error must reach the client: {wrong}");

    // REQUIRE SUBJECT: the route's certificate has exactly that subject, and another
    // subject is really checked.
    let subj = mariadb_plain(plain, "subj", "subj", "SELECT CURRENT_USER()");
    assert_eq!(subj.expect_ok("REQUIRE SUBJECT login through the egress").trim(), "subj@%");
    let other = mariadb_plain(plain, "other", "other", "SELECT 1");
    assert!(other.expect_refused("a REQUIRE SUBJECT user whose subject differs").contains("Access denied"), "{other:?}");

    // A client certificate MariaDB does not trust: a MySQL error, promptly.
    let bad = mariadb_plain(foreign_port, "app", "app", "SELECT 1");
    let message = bad.expect_refused("a route presenting a foreign client certificate");
    assert!(bad.took < PROMPT, "the refusal took {:?}: {message}", bad.took);
    let line = gateway.wait_for_access_line(&["route=foreign-cert", "protocol=mysql"]);
    assert!(line.contains("outcome=upstream_failed"), "{line}");
    let error_line = message.lines().find(|l| l.starts_with("ERROR")).unwrap_or_else(|| panic!("no MySQL ERROR line: {message:?}"));
    let lower = error_line.to_lowercase();
    assert!(
        lower.contains("strait") && (lower.contains("tls") || lower.contains("certificate")),
        "the client's error must say that the gateway's TLS to the server failed, as the access log does:\nclient: {error_line}\naccess log: {line}"
    );

    // And the good route is unaffected.
    mariadb_plain(plain, "app", "app", "SELECT 1").expect_ok("a good client after the refusal");
}
