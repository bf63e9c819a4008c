//! Abuse limits at the egress's plain port: a flood of connections from one source
//! address (127.0.0.2) is capped by its token bucket and by its concurrency limit,
//! counted (`outcome=refused` with the reason label) and logged at most once a second,
//! while another source (127.0.0.3) is served throughout. A burst of PostgreSQL
//! CancelRequests from one address is limited the same way, and psql's own cancel from
//! another address still stops a running query. At a mutual-TLS ingress listener, a
//! third concurrent connection of one client identity is refused after the handshake
//! while another identity is served.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use strait_e2e::databases::{psql_command, PgTls, Postgres};
use strait_e2e::hostile::{metric, wait_for_metric};
use strait_e2e::*;

/// A TCP connection to 127.0.0.1:port from the source address `from`.
fn connect_from(from: &str, port: u16) -> TcpStream {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(from.parse::<IpAddr>().unwrap(), 0)).unwrap();
        let stream = tokio::time::timeout(Duration::from_secs(5), socket.connect(SocketAddr::from(([127, 0, 0, 1], port)))).await.unwrap().unwrap();
        stream.into_std().unwrap()
    })
}

/// Whether a connection from `from` is relayed (a line comes back from the echo
/// backend) or refused (closed without a byte); the stream, if relayed.
fn echoed_from(from: &str, port: u16) -> Option<TcpStream> {
    let mut stream = connect_from(from, port);
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if stream.write_all(b"ping\n").is_err() {
        return None;
    }
    let mut echoed = [0u8; 5];
    match stream.read_exact(&mut echoed) {
        Ok(()) if &echoed == b"ping\n" => Some(stream),
        Ok(()) => panic!("unexpected bytes {echoed:?}"),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => panic!("neither relayed nor refused within 5 s"),
        Err(_) => None,
    }
}

fn refusals(gateway: &Gateway, listener: &str, reason: &str) -> f64 {
    metric(gateway, "strait_handshake_failures_total", &[("listener", listener), ("reason", reason)])
}

#[test]
fn a_flood_from_one_source_is_capped_and_others_are_served() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let config = Config::new()
        .listener(Listener::plain("rate", "echo").set("limits", "{ connections_per_second_per_source = 5, burst = 10 }"))
        .listener(Listener::plain("concurrent", "echo").set("limits", "{ concurrent_per_source = 3 }"))
        .route(Route::to("echo", echo.port).plaintext());
    let egress = Gateway::start(Role::Egress, pki.dir.path(), &config.toml());
    let (rate, concurrent) = (egress.port("rate"), egress.port("concurrent"));

    // 60 connections from 127.0.0.2 as fast as they go: the burst and the refill pass.
    let started = Instant::now();
    let mut held = Vec::new();
    let mut refused = 0;
    for i in 0..60 {
        match echoed_from("127.0.0.2", rate) {
            Some(stream) => held.push(stream),
            None => refused += 1,
        }
        if i % 10 == 0 {
            // Another source, in the middle of the flood: served every time.
            assert!(echoed_from("127.0.0.3", rate).is_some(), "127.0.0.3 refused during the flood from 127.0.0.2");
        }
    }
    let took = started.elapsed();
    let allowed = 10 + (took.as_secs_f64() * 5.0).ceil() as usize;
    println!("flood of 60 from 127.0.0.2 over {took:?}: {} relayed (at most {allowed} allowed), {refused} refused", held.len());
    assert!(held.len() >= 10 && held.len() <= allowed, "{} relayed", held.len());
    assert_eq!(refusals(&egress, "rate", "source_rate_limited"), refused as f64);
    assert_eq!(
        metric(&egress, "strait_tcp_connections_closed_total", &[("listener", "rate"), ("outcome", "refused")]),
        refused as f64,
        "each refusal is a closed connection with outcome refused"
    );
    let logged = egress.log_lines("abuse limit reached").len();
    assert!(logged >= 1 && logged <= took.as_secs() as usize + 1, "{logged} log lines in {took:?}: at most one a second");
    assert!(egress.access_log().iter().all(|l| !l.contains("source_rate_limited")), "no access-log line per refused connection");

    // Concurrency: three open from 127.0.0.2, the fourth refused; one closes, room again.
    let mut open: Vec<TcpStream> = (0..3).map(|_| echoed_from("127.0.0.2", concurrent).expect("within the concurrency limit")).collect();
    assert!(echoed_from("127.0.0.2", concurrent).is_none(), "a fourth from the same source");
    assert!(echoed_from("127.0.0.3", concurrent).is_some(), "another source");
    assert_eq!(refusals(&egress, "concurrent", "source_concurrency_limited"), 1.0);
    drop(open.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    while echoed_from("127.0.0.2", concurrent).is_none() {
        assert!(Instant::now() < deadline, "a closed connection never freed its place");
    }
}

const CANCEL_REQUEST_CODE: u32 = 80_877_102;

/// A CancelRequest for (pid, key) from `from`; waits for the gateway to close it.
fn cancel_from(from: &str, port: u16, pid: u32, key: u32) {
    let mut stream = connect_from(from, port);
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut message = 16u32.to_be_bytes().to_vec();
    for word in [CANCEL_REQUEST_CODE, pid, key] {
        message.extend_from_slice(&word.to_be_bytes());
    }
    stream.write_all(&message).unwrap();
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "a CancelRequest gets no answer: {rest:?}");
}

#[test]
fn a_burst_of_cancel_requests_is_limited_per_source() {
    let pki = Pki::reference();
    let pg = Postgres::start(PgTls::Off);
    pg.superuser_sql("CREATE USER app");
    let config = Config::new()
        .listener(Listener::plain("pg", "pg").set("limits", "{ cancel_requests_per_second_per_source = 5 }"))
        .route(Route::to("pg", pg.port).protocol("postgres").plaintext());
    let egress = Gateway::start(Role::Egress, pki.dir.path(), &config.toml());
    let port = egress.port("pg");

    // 50 guesses at a cancel key from 127.0.0.2.
    let started = Instant::now();
    for key in 0..50 {
        cancel_from("127.0.0.2", port, 4242, key);
    }
    let took = started.elapsed();
    let limited = refusals(&egress, "pg", "cancel_rate_limited");
    let allowed = 10.0 + (took.as_secs_f64() * 5.0).ceil();
    println!("50 CancelRequests from 127.0.0.2 over {took:?}: {limited} refused (at most {allowed} forwarded)");
    assert!(limited >= 50.0 - allowed && limited <= 40.0, "{limited} refused");
    let forwarded = wait_for_metric(&egress, "strait_tcp_connections_closed_total", &[("listener", "pg"), ("outcome", "closed")], 50.0 - limited);
    assert_eq!(forwarded, 50.0 - limited, "every other CancelRequest was forwarded to PostgreSQL");

    // psql's own cancel (Ctrl-C), from 127.0.0.1, still stops a running query.
    let conninfo = format!("host=127.0.0.1 port={port} user=app dbname=postgres sslmode=disable");
    let mut child = psql_command(&conninfo, "SELECT pg_sleep(30)").stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let running = "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query = 'SELECT pg_sleep(30)'";
    let deadline = Instant::now() + Duration::from_secs(20);
    while pg.superuser_sql(running).trim() != "1" {
        assert!(Instant::now() < deadline, "the pg_sleep query never showed up");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "psql still waiting 5 s after Ctrl-C: its cancel was not forwarded");
        std::thread::sleep(Duration::from_millis(20));
    }
    let stderr = String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).into_owned();
    assert!(stderr.contains("canceling statement due to user request"), "{stderr}");
}

#[test]
fn connections_per_identity_are_limited_after_the_handshake() {
    use strait::certs::Usage;
    use strait_e2e::config::{inline, quoted, quoted_path};
    use strait_e2e::hostile::{leaf, presenting, refused, served, TestCa};

    let pki = Pki::reference();
    let echo = EchoServer::start();
    let ca = TestCa::new(&pki, "clients");
    let server = ca.server("server", SERVICE_HOST);
    let tls = inline(&[
        ("mode", quoted("mutual")),
        ("cert", quoted_path(&server.join("tls.crt"))),
        ("key", quoted_path(&server.join("tls.key"))),
        ("ca", quoted_path(&ca.ca_file)),
    ]);
    let config = Config::new()
        .listener(Listener::with_tls("mtls", tls).set("limits", "{ concurrent_per_identity = 2 }"))
        .route(Route::to("echo", echo.port).hosts(&[SERVICE_HOST]));
    let ingress = Gateway::start(Role::Ingress, pki.dir.path(), &config.toml());
    let port = ingress.port("mtls");
    let client =
        |name: &str| presenting(&ca.issue(name, &leaf(name, Usage::Client, &[], &[&format!("spiffe://cluster.local/ns/default/sa/{name}")])), &ca.ca_file);
    let (busy, other) = (client("busy"), client("other"));

    let mut held: Vec<_> = (0..2).map(|_| tls_connect(port, SERVICE_HOST, busy.clone()).unwrap()).collect();
    for stream in &mut held {
        stream.write_all(b"hold\n").unwrap();
        let mut echoed = [0u8; 5];
        stream.read_exact(&mut echoed).unwrap();
    }
    let how = refused(port, SERVICE_HOST, busy.clone());
    println!("third connection of one identity: {how}");
    served(port, SERVICE_HOST, other, "a third connection of another identity");
    assert_eq!(refusals(&ingress, "mtls", "identity_concurrency_limited"), 1.0);
    assert!(no_access_line_with(&ingress, "identity_concurrency_limited"), "no access-log line per refusal");
    assert_eq!(ingress.log_lines("abuse limit reached").len(), 1);
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut stream = tls_connect(port, SERVICE_HOST, busy.clone()).unwrap();
        let _ = stream.write_all(b"again\n");
        let mut echoed = [0u8; 6];
        if stream.read_exact(&mut echoed).is_ok() {
            break;
        }
        assert!(Instant::now() < deadline, "a closed connection never freed its identity's place");
    }
}

fn no_access_line_with(gateway: &Gateway, needle: &str) -> bool {
    gateway.access_log().iter().all(|l| !l.contains(needle))
}
