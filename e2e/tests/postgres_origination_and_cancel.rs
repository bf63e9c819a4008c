//! PostgreSQL origination: `psql "sslmode=disable"` reaches a PostgreSQL that accepts
//! only `hostssl ... cert clientcert=verify-full`, because the egress's `postgres` route
//! sends the SSLRequest itself and presents the route's certificate. psql's own cancel
//! request (Ctrl-C) takes the same way and stops a running query at once; a server that
//! answers `N` is refused, never used in plaintext.

use std::process::Stdio;
use std::time::{Duration, Instant};

use strait_e2e::databases::{psql, psql_command, PgTls, Postgres};
use strait_e2e::*;

/// The user the reference client certificate maps to (its CN; `cert` authentication).
const CERT_USER: &str = "client.db.strait.test";

/// Upper bound for a cancel to take effect: it is sub-second through the gateway; a
/// lost cancel request would leave the 30 s sleep running.
const CANCEL_LIMIT: Duration = Duration::from_secs(5);

fn egress(pki: &Pki, pg: u16, pg_no_tls: u16) -> String {
    let client = pki.path("egress");
    Config::new()
        .listener(Listener::plain("pg-plain", "tls-postgres"))
        .listener(Listener::plain("pg-no-tls", "no-tls-postgres"))
        .route(Route::to("tls-postgres", pg).protocol("postgres").mutual_origination(&client, SERVICE_HOST))
        // The same origination settings, to a server with ssl=off.
        .route(Route::to("no-tls-postgres", pg_no_tls).protocol("postgres").mutual_origination(&client, SERVICE_HOST))
        .toml()
}

fn plain_conninfo(port: u16) -> String {
    format!("host=127.0.0.1 port={port} user={CERT_USER} dbname=postgres sslmode=disable")
}

#[test]
fn plain_psql_reaches_a_cert_only_postgres_and_cancel_works() {
    let pki = Pki::reference();
    let pg = Postgres::start(PgTls::ClientCertRequired { server: &pki.path("ingress"), client_ca: &pki.path("ca-chain.cert.pem") });
    pg.superuser_sql(&format!("CREATE USER \"{CERT_USER}\""));
    let no_tls = Postgres::start(PgTls::Off);
    no_tls.superuser_sql(&format!("CREATE USER \"{CERT_USER}\""));
    let gateway = Gateway::start(strait_e2e::Role::Egress, pki.dir.path(), &egress(&pki, pg.port, no_tls.port));
    let (plain, no_tls_port) = (gateway.port("pg-plain"), gateway.port("pg-no-tls"));

    // Through the egress: the server sees TLS and the certificate's user.
    let through = psql(&plain_conninfo(plain), "SELECT ssl, current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
    assert_eq!(through.expect_ok("psql sslmode=disable through the egress").trim(), format!("t|{CERT_USER}"));
    let line = gateway.wait_for_access_line(&["route=tls-postgres", "outcome=closed"]);
    assert!(line.contains("protocol=postgres") && line.contains("tls=upstream"), "{line}");

    // Straight to the server, plaintext has no pg_hba.conf entry.
    let direct = psql(&plain_conninfo(pg.port), "SELECT 1");
    let refused = direct.expect_refused("psql sslmode=disable straight to PostgreSQL");
    assert!(refused.contains("no pg_hba.conf entry") && refused.contains("no encryption"), "{refused}");

    // Ctrl-C: psql sends a CancelRequest on a new connection, through the egress.
    let mut sleeper = psql_command(&plain_conninfo(plain), "SELECT pg_sleep(30)");
    let mut child = sleeper.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let running = "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = 'SELECT pg_sleep(30)'";
    while pg.superuser_sql(running).trim() != "1" {
        assert!(child.try_wait().unwrap().is_none(), "psql ended before its query ran: {:?}", child.wait_with_output());
        assert!(Instant::now() < deadline, "the pg_sleep query never showed up in pg_stat_activity");
        std::thread::sleep(Duration::from_millis(50));
    }
    let interrupted = Instant::now();
    let status = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
    while child.try_wait().unwrap().is_none() {
        if interrupted.elapsed() > CANCEL_LIMIT {
            let _ = child.kill();
            panic!("psql still waiting {CANCEL_LIMIT:?} after Ctrl-C: the cancel did not reach the server\n{}", gateway.proc.output());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = interrupted.elapsed();
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("canceling statement due to user request"), "psql ended after {took:?} without the server's cancel error: {stderr}");
    assert_eq!(pg.superuser_sql(running).trim(), "0", "the query is still running on the server");
    // The cancel was its own connection through the egress, next to the session's.
    // Lines so far: the first query, then the cancel and the cancelled session.
    let deadline = Instant::now() + Duration::from_secs(10);
    let closed_on_route =
        || gateway.access_log().iter().filter(|l| l.contains("route=tls-postgres") && l.contains("tls=upstream") && l.contains("outcome=closed")).count();
    while closed_on_route() < 3 {
        assert!(Instant::now() < deadline, "the cancel request left no access-log line:\n{}", gateway.proc.output());
        std::thread::sleep(Duration::from_millis(20));
    }

    // A server that answers N to our SSLRequest: refused, not used in plaintext.
    let answer_n = psql(&plain_conninfo(no_tls_port), "SELECT 1");
    let refused = answer_n.expect_refused("a route to a server without TLS");
    assert!(refused.contains("strait") && refused.contains("SSLRequest"), "the client must learn why: {refused}");
    let line = gateway.wait_for_access_line(&["route=no-tls-postgres"]);
    assert!(line.contains("outcome=upstream_failed") && line.contains("tls=none"), "{line}");
    let sessions = no_tls.superuser_sql(&format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{CERT_USER}'"));
    assert_eq!(sessions.trim(), "0");

    // The TLS route still serves.
    let again = psql(&plain_conninfo(plain), "SELECT 1");
    assert_eq!(again.expect_ok("psql through the egress after the refusal").trim(), "1");
}
