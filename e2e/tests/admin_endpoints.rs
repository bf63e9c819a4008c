//! The admin port of both gateways: probes, Prometheus metrics after real MySQL
//! traffic and after refusals, the config dump (credentials, never keys), the log level
//! changed at run time, and readiness dropping to 503 while a SIGTERM drain runs.

use std::net::Shutdown;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use strait_e2e::hostile::{metric, tls_refused, wait_for_metric};
use strait_e2e::*;

#[test]
fn probes_answer_live_and_ready_on_both_gateways() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let pair = Pair::start(&pki, echo.port);
    for gateway in [&pair.egress, &pair.ingress] {
        assert_eq!(gateway.admin("GET", "/healthz/live"), (200, "live\n".to_owned()));
        assert_eq!(gateway.admin("GET", "/healthz/ready"), (200, "ready\n".to_owned()));
        assert_eq!(gateway.admin("GET", "/no-such-endpoint").0, 404);
    }
}

#[test]
fn metrics_count_a_mysql_query_through_the_pair() {
    let pki = Pki::reference();
    let db = MariaDb::start();
    let pair = Pair::start(&pki, db.port);

    assert_eq!(mariadb_sql(pair.plain_port, "SELECT 40 + 2").expect("a query through the pair").trim(), "42");
    pair.egress.wait_for_access_line(&["listener=mysql-plain", "outcome=closed"]);
    pair.ingress.wait_for_access_line(&["listener=mtls", "outcome=closed"]);

    let (status, egress) = pair.egress.admin("GET", "/metrics");
    assert_eq!(status, 200);
    println!("egress /metrics:\n{egress}");
    assert!(egress.ends_with("# EOF\n"), "OpenMetrics text ends with # EOF:\n{egress}");
    for family in ["strait_tcp_connections_opened_total", "strait_tcp_connections_closed_total", "strait_tcp_received_bytes_total"] {
        assert!(egress.contains(&format!("# TYPE {} counter", family.trim_end_matches("_total"))), "{family} is declared:\n{egress}");
    }

    // The egress: outbound, plaintext client, one connection, bytes both ways.
    let outbound = [("listener", "mysql-plain"), ("route", "to-ingress"), ("direction", "outbound"), ("mtls", "false")];
    assert_eq!(metric(&pair.egress, "strait_tcp_connections_opened_total", &outbound), 1.0, "{egress}");
    let closed = [&outbound[..], &[("outcome", "closed")]].concat();
    assert_eq!(metric(&pair.egress, "strait_tcp_connections_closed_total", &closed), 1.0, "{egress}");
    assert!(metric(&pair.egress, "strait_tcp_received_bytes_total", &outbound) > 0.0, "the client's query: {egress}");
    assert!(metric(&pair.egress, "strait_tcp_sent_bytes_total", &outbound) > 0.0, "MariaDB's greeting and answer: {egress}");
    assert_eq!(metric(&pair.egress, "strait_active_connections", &[("listener", "mysql-plain")]), 0.0, "{egress}");

    // The upstream connect latency histogram: buckets, a count of one, a sum.
    let route = [("route", "to-ingress")];
    assert_eq!(metric(&pair.egress, "strait_upstream_connect_seconds_count", &route), 1.0, "{egress}");
    assert!(metric(&pair.egress, "strait_upstream_connect_seconds_sum", &route) > 0.0, "{egress}");
    assert_eq!(metric(&pair.egress, "strait_upstream_connect_seconds_bucket", &[("route", "to-ingress"), ("le", "+Inf")]), 1.0, "{egress}");
    let buckets = egress.lines().filter(|l| l.starts_with("strait_upstream_connect_seconds_bucket{")).count();
    assert!(buckets > 5, "a latency histogram has buckets ({buckets}):\n{egress}");

    // Expiry of the loaded client certificate, labelled with its file and serial.
    let cert_file = pki.path("egress/tls.crt").display().to_string();
    let not_after = metric(&pair.egress, "strait_certificate_not_after_seconds", &[("file", &cert_file)]);
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    assert!(not_after > now + 29.0 * 86400.0 && not_after < now + 31.0 * 86400.0, "a 30-day certificate: {not_after} (now {now}):\n{egress}");
    let serial = openssl_serial(&pki.path("egress/tls.crt"));
    let labelled = egress.lines().find(|l| l.starts_with("strait_certificate_not_after_seconds{") && l.contains(&cert_file)).unwrap();
    assert_eq!(normalise_serial(labelled), serial, "the serial label is the certificate's: {labelled}");

    // The ingress: inbound, mutual TLS verified.
    let (_, ingress) = pair.ingress.admin("GET", "/metrics");
    println!("ingress /metrics:\n{ingress}");
    let inbound = [("listener", "mtls"), ("route", "mysql"), ("direction", "inbound"), ("mtls", "true")];
    assert_eq!(metric(&pair.ingress, "strait_tcp_connections_opened_total", &inbound), 1.0, "{ingress}");
    let closed = [&inbound[..], &[("outcome", "closed")]].concat();
    assert_eq!(metric(&pair.ingress, "strait_tcp_connections_closed_total", &closed), 1.0, "{ingress}");
    assert!(metric(&pair.ingress, "strait_tcp_received_bytes_total", &inbound) > 0.0, "{ingress}");
    let server_cert = pki.path("ingress/tls.crt").display().to_string();
    assert!(metric(&pair.ingress, "strait_certificate_not_after_seconds", &[("file", &server_cert)]) > now, "{ingress}");
    // Label cardinality stays bounded: no client address in any label.
    assert!(!egress.lines().chain(ingress.lines()).any(|l| l.contains("127.0.0.1:")), "{egress}\n{ingress}");
}

#[test]
fn refusals_show_in_handshake_failures_by_reason() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let pair = Pair::start(&pki, echo.port);
    let ca = pki.path("ingress/ca.crt");

    // No client certificate at the ingress's mutual-TLS listener.
    refuse(pair.ingress_port, client_config(None, &ca));
    let no_cert = [("listener", "mtls"), ("reason", "no_client_cert")];
    wait_for_metric(&pair.ingress, "strait_handshake_failures_total", &no_cert, 1.0);

    // A client certificate from a CA the listener does not trust.
    let mut leaf = strait::certs::Leaf::new("intruder", strait::certs::Usage::Client, 30);
    leaf.dns.push("intruder.strait.test".into());
    let foreign = pki.foreign("intruder", &leaf);
    refuse(pair.ingress_port, client_config(Some(&foreign), &ca));
    refuse(pair.ingress_port, client_config(Some(&foreign), &ca));
    let unknown_ca = [("listener", "mtls"), ("reason", "unknown_ca")];
    wait_for_metric(&pair.ingress, "strait_handshake_failures_total", &unknown_ca, 2.0);

    let (_, body) = pair.ingress.admin("GET", "/metrics");
    println!("{body}");
    assert_eq!(metric(&pair.ingress, "strait_handshake_failures_total", &no_cert), 1.0, "{body}");
    assert_eq!(metric(&pair.ingress, "strait_handshake_failures_total", &unknown_ca), 2.0, "{body}");
    let refused = [("listener", "mtls"), ("direction", "inbound"), ("outcome", "refused")];
    assert_eq!(metric(&pair.ingress, "strait_tcp_connections_closed_total", &refused), 3.0, "{body}");
    assert_eq!(metric(&pair.ingress, "strait_tcp_connections_opened_total", &[]), 0.0, "a refused connection is never opened: {body}");
}

#[test]
fn config_dump_shows_credentials_and_no_private_key() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let pair = Pair::start(&pki, echo.port);

    let (status, body) = pair.egress.admin("GET", "/config_dump");
    assert_eq!(status, 200);
    println!("{body}");
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("/config_dump is not JSON ({e}):\n{body}"));
    let routes = dump["config"]["route"].as_array().unwrap_or_else(|| panic!("config.route: {dump:#}"));
    assert!(routes.iter().any(|r| r["name"] == "to-ingress" && r["upstream"] == format!("127.0.0.1:{}", pair.ingress_port)), "{dump:#}");
    let listeners = dump["config"]["listener"].as_array().unwrap();
    assert!(listeners.iter().any(|l| l["name"] == "mysql-plain" && l["address"] == format!("127.0.0.1:{}", pair.plain_port)), "{dump:#}");

    let credentials = dump["credentials"].as_array().unwrap_or_else(|| panic!("credentials: {dump:#}"));
    for secret in ["egress", "mesh/egress"] {
        let cert_file = pki.path(secret).join("tls.crt");
        let credential = credentials
            .iter()
            .find(|c| c["cert_file"] == cert_file.display().to_string())
            .unwrap_or_else(|| panic!("no credential for {}: {dump:#}", cert_file.display()));
        let serial = credential["serial"].as_str().unwrap();
        assert_eq!(normalise_serial(serial), openssl_serial(&cert_file), "{credential:#}");
        assert_eq!(credential["not_after"].as_str().unwrap(), openssl_not_after(&cert_file), "{credential:#}");
        assert!(credential["subject"].as_str().unwrap().contains("CN="), "{credential:#}");
        assert!(credential["sans"].as_array().is_some_and(|s| !s.is_empty()), "{credential:#}");
    }

    // Never key material: no PEM key block, and no line of any key file.
    assert!(!body.contains("PRIVATE KEY"), "{body}");
    for secret in ["egress", "mesh/egress"] {
        let key = std::fs::read_to_string(pki.path(secret).join("tls.key")).unwrap();
        for line in key.lines().filter(|l| !l.starts_with("-----") && l.len() > 16) {
            assert!(!body.contains(line), "/config_dump holds a line of {secret}/tls.key");
        }
    }
}

#[test]
fn log_level_changes_at_run_time_without_a_restart() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let pair = Pair::start(&pki, echo.port);
    let egress = &pair.egress;
    assert_eq!(egress.admin("GET", "/logging"), (200, "level: info,strait=debug\n".to_owned()));

    // At warn, a clean close (an info line) is not logged.
    assert_eq!(egress.admin("POST", "/logging?level=warn"), (200, "level: warn\n".to_owned()));
    assert_eq!(egress.admin("GET", "/logging"), (200, "level: warn\n".to_owned()));
    echo_through(pair.plain_port, b"quiet\n");
    wait_for_metric(egress, "strait_tcp_connections_closed_total", &[("listener", "mysql-plain"), ("outcome", "closed")], 1.0);
    assert!(egress.access_log().is_empty(), "no access line at level warn:\n{}", egress.proc.output());

    // Back at debug, the next connection is logged.
    assert_eq!(egress.admin("POST", "/logging?level=debug"), (200, "level: debug\n".to_owned()));
    assert_eq!(egress.admin("GET", "/logging"), (200, "level: debug\n".to_owned()));
    echo_through(pair.plain_port, b"loud\n");
    egress.wait_for_access_line(&["listener=mysql-plain", "outcome=closed"]);
    assert_eq!(egress.access_log().len(), 1, "{}", egress.proc.output());
    assert!(egress.proc.output().contains("log level changed"), "{}", egress.proc.output());

    // A filter that does not parse is refused and the level in force stays.
    let (status, body) = egress.admin("POST", "/logging?level=strait=loud");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("strait=loud"), "the error names the bad level: {body}");
    let (status, body) = egress.admin("POST", "/logging");
    assert_eq!(status, 400, "POST without a level: {body}");
    assert_eq!(egress.admin("GET", "/logging"), (200, "level: debug\n".to_owned()));
}

#[test]
fn ready_answers_503_while_draining_after_sigterm() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let (_ingress, ingress_port) = Gateway::reference_ingress(&pki, echo.port);
    let upstream = format!("127.0.0.1:{ingress_port}");
    let config = egress_config(&pki, &upstream).raw("[process]\ndrain_delay = \"0s\"\ndrain_timeout = \"60s\"");
    let mut egress = Gateway::start(Role::Egress, pki.dir.path(), &config.toml());
    let plain_port = egress.port("mysql-plain");
    assert_eq!(egress.admin("GET", "/healthz/ready").0, 200);

    let mut open = open_connection(plain_port);
    echo_line(&mut open, b"held open\n");

    egress.signal("TERM");
    wait_for_log(&egress, "shutting down", Duration::from_secs(10));
    let (status, body) = egress.admin("GET", "/healthz/ready");
    assert_eq!((status, body.as_str()), (503, "not ready\n"), "ready while draining:\n{}", egress.proc.output());
    assert_eq!(egress.admin("GET", "/healthz/live").0, 200, "still live while draining");
    echo_line(&mut open, b"still served while draining\n");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(egress.admin("GET", "/healthz/ready").0, 503, "stays not ready for the whole drain");
    assert!(egress.proc.try_wait().is_none(), "exited with a connection open and 60 s of drain left");

    open.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut open), "");
    let status = egress.wait_for_exit(Duration::from_secs(10));
    assert!(status.success(), "exit status {status}:\n{}", egress.proc.output());
}

/// Connects with `config` and sees the connection refused (at the handshake, or on the
/// first read in TLS 1.3).
fn refuse(port: u16, config: std::sync::Arc<rustls::ClientConfig>) {
    assert!(tls_refused(tls_connect(port, SERVICE_HOST, config)), "the connection should have been refused");
}

/// One connection to the echo server behind the pair: send, half-close, read it back.
fn echo_through(port: u16, message: &[u8]) {
    assert_eq!(plain_exchange(port, message).unwrap(), message);
}

fn wait_for_log(gateway: &Gateway, needle: &str, limit: Duration) {
    let deadline = Instant::now() + limit;
    while !gateway.proc.output().contains(needle) {
        assert!(Instant::now() < deadline, "no {needle:?} in the log after {limit:?}:\n{}", gateway.proc.output());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `openssl x509 -serial`, upper-case hex without leading zeros.
fn openssl_serial(cert: &std::path::Path) -> String {
    let out = openssl_x509(cert, &["-serial"]);
    normalise_serial(out.trim().trim_start_matches("serial="))
}

/// `openssl x509 -enddate` as RFC 3339 (`2026-12-25T15:18:12Z`).
fn openssl_not_after(cert: &std::path::Path) -> String {
    let out = openssl_x509(cert, &["-enddate", "-dateopt", "iso_8601"]);
    out.trim().trim_start_matches("notAfter=").replacen(' ', "T", 1)
}

fn openssl_x509(cert: &std::path::Path, args: &[&str]) -> String {
    require("openssl");
    let out = Command::new("openssl").args(["x509", "-noout", "-in"]).arg(cert).args(args).output().unwrap();
    assert!(out.status.success(), "openssl x509 {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A serial in any spelling (`22:92:0a`, `22920A`) as upper-case hex without colons or
/// leading zeros; inside a longer text, the serial label's value.
fn normalise_serial(text: &str) -> String {
    let value = text.split("serial=\"").nth(1).and_then(|v| v.split('"').next()).unwrap_or(text);
    value.replace(':', "").to_ascii_uppercase().trim_start_matches('0').to_owned()
}
