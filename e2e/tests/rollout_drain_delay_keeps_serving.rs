//! A rollout's SIGTERM, as Istio's gateways take it: readiness fails at once on the health
//! port, the listeners keep serving for `[process] drain_delay` (Istio's
//! `terminationDrainDuration`) while Kubernetes takes the endpoint away, then they
//! close; a connection still open finishes and the process exits 0.
//!
//! Also the split of the HTTP ports: the health port (15021) and the metrics port (15090)
//! serve only what kubelets and Prometheus need, never the configuration or the log
//! level, and the admin port (15000) stays on loopback unless explicitly allowed.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use strait_e2e::config::{Config, Listener, Route};
use strait_e2e::http_ports::{health_port, metrics_port};
use strait_e2e::*;

const DRAIN_DELAY: Duration = Duration::from_secs(2);
/// The most connections the test opens during the delay (one every 10 ms or so).
const MAX_ATTEMPTS: usize = 1000;

/// An egress with one plain listener to an echo server; `extra` is appended.
fn egress(dir: &TempDir, extra: &str) -> (Gateway, u16) {
    let echo = EchoServer::start();
    let config = Config::new().listener(Listener::plain("plain", "echo")).route(Route::to("echo", echo.port).plaintext()).raw(extra);
    let gateway = Gateway::start(Role::Egress, dir.path(), &config.toml());
    let port = gateway.port("plain");
    (gateway, port)
}

/// One whole new connection: connect, echo `line`, half-close, EOF. `Err` when the
/// listener refused it (`ConnectionRefused`) or it failed after connecting.
fn echo_once(port: u16, line: &[u8]) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(line)?;
    let mut echoed = vec![0u8; line.len()];
    stream.read_exact(&mut echoed)?;
    if echoed != line {
        return Err(std::io::Error::other(format!("echoed {echoed:?}")));
    }
    stream.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest)?;
    if !rest.is_empty() {
        return Err(std::io::Error::other(format!("{} more bytes after the echo", rest.len())));
    }
    Ok(())
}

#[test]
fn sigterm_keeps_serving_new_connections_for_the_drain_delay() {
    let started = Instant::now();
    let dir = TempDir::new().unwrap();
    let (mut egress, port) = egress(&dir, "[process]\ndrain_delay = \"2s\"\ndrain_timeout = \"10s\"\n");
    let health = health_port(&egress);
    assert_eq!(http(health, "GET", "/healthz/ready").0, 200, "ready before SIGTERM");
    let mut held = open_connection(port);
    echo_line(&mut held, b"open before SIGTERM\n");

    let sent = Instant::now();
    egress.signal("TERM");
    // Readiness fails at once, long before the listeners close.
    let deadline = sent + Duration::from_secs(1);
    while http(health, "GET", "/healthz/ready").0 != 503 {
        assert!(Instant::now() < deadline, "/healthz/ready still not 503 1s after SIGTERM:\n{}", egress.proc.output());
        std::thread::sleep(Duration::from_millis(10));
    }
    let not_ready = sent.elapsed();

    // New connections keep coming (Kubernetes has not removed the endpoint yet): every
    // one is served end to end until the listener closes, and it closes only after the
    // delay. A connection the kernel completed just as the socket closed may be reset;
    // that can only happen at the close.
    let (mut served, mut last_served, mut cut_at_close) = (0, Duration::ZERO, 0);
    let refused_at = loop {
        assert!(served + cut_at_close < MAX_ATTEMPTS, "the listener still accepts after {MAX_ATTEMPTS} connections ({:?})", sent.elapsed());
        assert!(sent.elapsed() < DRAIN_DELAY + Duration::from_secs(5), "the listener still accepts {:?} after SIGTERM", sent.elapsed());
        match echo_once(port, format!("new connection {served} during the drain delay\n").as_bytes()) {
            Ok(()) => {
                served += 1;
                last_served = sent.elapsed();
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => break sent.elapsed(),
            Err(e) => {
                let at = sent.elapsed();
                assert!(
                    at >= DRAIN_DELAY,
                    "connection {} failed {at:?} after SIGTERM, inside the drain delay: {e}\n{}",
                    served + cut_at_close,
                    egress.proc.output()
                );
                cut_at_close += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    println!("not ready after {not_ready:?}; served {served} new connections, the last {last_served:?} after SIGTERM; refused from {refused_at:?} ({cut_at_close} cut at the close)");
    assert!(refused_at >= DRAIN_DELAY, "the listener closed {refused_at:?} after SIGTERM, before the drain delay of {DRAIN_DELAY:?}");
    assert!(refused_at < DRAIN_DELAY + Duration::from_millis(1500), "the listener should close right after the delay, not {refused_at:?} after SIGTERM");
    assert!(last_served + Duration::from_millis(500) >= DRAIN_DELAY, "new connections were served until {last_served:?} only");
    assert!(served >= 10, "only {served} connections served during the delay");
    assert!(cut_at_close <= 1, "{cut_at_close} connections cut");
    assert!(refuses(port), "new connections stay refused after the delay");

    // Still draining: the kubelet sees "not ready" (not a dead port) and "live".
    assert_eq!(http(health, "GET", "/healthz/ready").0, 503);
    assert_eq!(http(health, "GET", "/healthz/live").0, 200);
    // The connection opened before SIGTERM still carries data, then finishes.
    echo_line(&mut held, b"still open after the listener closed\n");
    held.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut held), "", "the held connection ends with a clean EOF");
    let status = egress.wait_for_exit(Duration::from_secs(5));
    assert!(status.success(), "exit status {status}:\n{}", egress.proc.output());
    let log = egress.proc.output();
    assert!(log.contains("still accepting for the drain delay") && log.contains("drained; exiting") && !log.contains("drain timeout reached"), "{log}");
    println!("test took {:?}", started.elapsed());
}

#[test]
fn health_and_metrics_ports_serve_only_probes_and_the_scrape() {
    let dir = TempDir::new().unwrap();
    let (egress, port) = egress(&dir, "");
    let (health, metrics) = (health_port(&egress), metrics_port(&egress));
    // One connection, so the connection metrics have series to show.
    echo_once(port, b"one connection\n").unwrap();
    assert_ne!(health, egress.admin_port);
    assert_ne!(metrics, egress.admin_port);

    assert_eq!(http(health, "GET", "/healthz/ready").0, 200);
    assert_eq!(http(health, "GET", "/healthz/live").0, 200);
    for path in ["/config_dump", "/logging", "/stats/prometheus", "/metrics"] {
        assert_eq!(http(health, "GET", path).0, 404, "the health port must not serve {path}");
    }
    assert_eq!(http(health, "POST", "/logging?level=trace").0, 404, "the health port must not change the log level");

    let deadline = Instant::now() + Duration::from_secs(5);
    let scrape = loop {
        let (status, scrape) = http(metrics, "GET", "/stats/prometheus");
        assert_eq!(status, 200);
        if scrape.contains("istio_tcp_connections_closed_total{") {
            break scrape;
        }
        assert!(Instant::now() < deadline, "the connection is not in the scrape after 5s:\n{scrape}");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(scrape.contains("strait_tcp_connections_opened_total{") && scrape.ends_with("# EOF\n"), "{scrape}");
    assert_eq!(http(metrics, "GET", "/metrics").0, 200);
    for path in ["/config_dump", "/logging", "/healthz/ready"] {
        assert_eq!(http(metrics, "GET", path).0, 404, "the metrics port must not serve {path}");
    }
    assert_eq!(http(metrics, "POST", "/logging?level=trace").0, 404, "the metrics port must not change the log level");

    // The admin port has everything, on loopback.
    assert_eq!(egress.admin("GET", "/config_dump").0, 200);
    assert_eq!(egress.admin("GET", "/logging").0, 200);
    assert_eq!(egress.admin("GET", "/stats/prometheus").0, 200);
}

#[test]
fn check_refuses_a_remote_admin_port_unless_allowed() {
    let dir = TempDir::new().unwrap();
    let base = Config::new().listener(Listener::plain("plain", "echo")).route(Route::to("echo", 9).plaintext());
    let check = |name: &str, admin: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, base.clone().raw(admin).toml()).unwrap();
        run_binary(Role::Egress, &["check", "--config", path.to_str().unwrap()])
    };

    let (ok, out) = check("remote.toml", "[admin]\naddress = \"0.0.0.0:15000\"");
    assert!(!ok, "a non-loopback admin port without allow_remote must be refused:\n{out}");
    for words in ["admin.address", "0.0.0.0:15000", "127.0.0.1", "allow_remote = true"] {
        assert!(out.contains(words), "the refusal should name {words:?}:\n{out}");
    }

    let (ok, out) = check("allowed.toml", "[admin]\naddress = \"0.0.0.0:15000\"\nallow_remote = true");
    assert!(ok, "allow_remote = true accepts it:\n{out}");
    let (ok, out) = check("loopback.toml", "[admin]\naddress = \"127.0.0.1:15000\"");
    assert!(ok, "the loopback default needs nothing:\n{out}");
}
