//! `diagnose` on database routes asks for TLS the way the protocol does (MySQL's SSL
//! request after the greeting, PostgreSQL's SSLRequest) before the handshake, and says
//! plainly when the server does not offer TLS at all.

use strait_e2e::databases::{PgTls, Postgres, TlsMariaDb};
use strait_e2e::*;

fn route(name: &str, protocol: &str, port: u16, pki: &Pki) -> Route {
    Route::to(name, port).protocol(protocol).mutual_origination(&pki.path("egress"), SERVICE_HOST)
}

#[test]
fn diagnose_negotiates_tls_inside_the_database_protocol() {
    let pki = Pki::reference();
    let tls_mariadb = TlsMariaDb::start(&pki.path("ingress"), &pki.path("ca-chain.cert.pem"));
    // Without any user for TCP clients, MariaDB refuses the host before greeting.
    tls_mariadb.root_sql("CREATE USER app@'%' IDENTIFIED BY 'app' REQUIRE X509");
    let plain_mariadb = MariaDb::start();
    let tls_pg = Postgres::start(PgTls::ClientCertRequired { server: &pki.path("ingress"), client_ca: &pki.path("ca-chain.cert.pem") });
    let plain_pg = Postgres::start(PgTls::Off);

    // diagnose never binds the listener: port 0 is as good as any.
    let config = Config::new()
        .listener(Listener::plain("p", "mysql-tls"))
        .route(route("mysql-tls", "mysql", tls_mariadb.port, &pki))
        .route(route("mysql-plain", "mysql", plain_mariadb.port, &pki))
        .route(route("pg-tls", "postgres", tls_pg.port, &pki))
        .route(route("pg-plain", "postgres", plain_pg.port, &pki));
    let path = pki.path("db-diagnose.toml");
    std::fs::write(&path, config.toml()).unwrap();
    let path = path.to_str().unwrap();

    for (route, said) in [("mysql-tls", "MySQL greeting offers TLS"), ("pg-tls", "PostgreSQL answered S")] {
        let (ok, out) = run_binary(Role::Egress, &["diagnose", route, "--config", path]);
        assert!(ok, "{route}: {out}");
        assert!(out.contains(said) && out.contains("OK: the path works") && out.contains(&format!("SANs    [{SERVICE_HOST}]")), "{route}: {out}");
    }
    let (ok, out) = run_binary(Role::Egress, &["diagnose", "mysql-plain", "--config", path]);
    assert!(!ok && out.contains("does not offer TLS (no CLIENT_SSL)"), "{out}");
    let (ok, out) = run_binary(Role::Egress, &["diagnose", "pg-plain", "--config", path]);
    assert!(!ok && out.contains("answered N to SSLRequest"), "{out}");
}
