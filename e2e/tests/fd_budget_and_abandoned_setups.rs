//! The file-descriptor budget: started under a soft open-file limit of 1024 (hard 4096),
//! the egress raises the soft limit to the hard one and derives the default
//! `max_connections` from it ((4096 - 256) / 2 connections, shared by the listeners that
//! set none; an explicit cap stays as written). And a client that goes away while its
//! upstream is still being set up (here an origination handshake, or a MySQL greeting,
//! that never comes) has that set-up abandoned at once, its sockets freed, instead of
//! held until the connect timeout.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use strait_e2e::config::quoted;
use strait_e2e::hostile::metric;
use strait_e2e::*;

/// A loopback server that accepts and never says a word (a TLS handshake to it hangs, so
/// does a wait for its MySQL greeting); reports each connection's accept and its close
/// by the gateway.
fn black_hole() -> (u16, mpsc::Receiver<&'static str>) {
    let (events, received) = mpsc::channel();
    let events = std::sync::Mutex::new(events);
    let port = serve_each(move |mut stream| {
        let events = events.lock().unwrap().clone();
        let _ = events.send("accepted");
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut sink = [0u8; 4096];
        // The ClientHello arrives and is never answered; the read ends when the gateway
        // closes its side.
        while matches!(stream.read(&mut sink), Ok(n) if n > 0) {}
        let _ = events.send("closed");
    });
    (port, received)
}

fn config(pki: &Pki, black_hole: u16) -> String {
    let origination =
        |name: &str, timeout: &str| Route::to(name, black_hole).mutual_origination(&pki.path("egress"), SERVICE_HOST).set("connect_timeout", quoted(timeout));
    Config::new()
        .listener(Listener::plain("hangs", "hangs"))
        .listener(Listener::plain("db", "db").set("handshake_timeout", quoted("10s")))
        .listener(Listener::plain("spoken", "spoken").set("max_connections", 20))
        .route(origination("hangs", "10s"))
        .route(origination("db", "10s").protocol("mysql"))
        .route(origination("spoken", "2s"))
        .toml()
}

/// Waits (bounded) for the black hole to report `event`.
fn expect(events: &mpsc::Receiver<&'static str>, event: &str) {
    let got = events.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|e| panic!("no {event:?} from the black hole: {e}"));
    assert_eq!(got, event);
}

fn duration_ms(line: &str) -> u64 {
    let field = line.split_whitespace().find_map(|f| f.strip_prefix("duration_ms=")).unwrap_or_else(|| panic!("no duration_ms in {line}"));
    field.parse().unwrap()
}

#[test]
fn soft_limit_is_raised_the_cap_derived_and_abandoned_setups_end_at_once() {
    let pki = Pki::reference();
    let (hole, events) = black_hole();
    let egress = Gateway::start_under(&["prlimit", "--nofile=1024:4096"], Role::Egress, pki.dir.path(), &config(&pki, hole));

    // The limit, raised and logged, and the caps in the effective configuration.
    let raised = egress.log_lines("open-file limit");
    assert!(raised.iter().any(|l| l.contains("soft_before=1024") && l.contains("soft=4096") && l.contains("hard=4096")), "{raised:#?}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", egress.pid())).unwrap();
    let open_files = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    assert_eq!(open_files.split_whitespace().collect::<Vec<_>>()[3..5], ["4096", "4096"], "{open_files}");
    let (_, dump) = egress.admin("GET", "/config_dump");
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let caps: Vec<_> = dump["config"]["listener"].as_array().unwrap_or_else(|| panic!("{dump}")).iter().map(|l| l["max_connections"].clone()).collect();
    // (4096 - 256) / 2 = 1920, less the explicit 20, shared by the two listeners without one.
    assert_eq!(caps, [950, 950, 20], "{dump}");
    assert!(!egress.log_lines("max_connections=950").is_empty(), "the derived cap is logged with the listener");

    // A client that closes while the origination handshake hangs: the connection ends
    // within a second of the close, not after the 10s connect timeout.
    for listener in ["hangs", "db"] {
        let opened = Instant::now();
        let client = TcpStream::connect(("127.0.0.1", egress.port(listener))).unwrap();
        expect(&events, "accepted");
        let held = opened.elapsed();
        drop(client);
        let closed = Instant::now();
        let line = egress.wait_for_access_line(&[&format!("listener={listener} "), "outcome=refused", "set-up abandoned"]);
        let noticed = closed.elapsed();
        expect(&events, "closed");
        let took = Duration::from_millis(duration_ms(&line));
        println!("{listener}: client held {held:?}, closed; access line {noticed:?} later, duration {took:?}");
        assert!(took < held + Duration::from_secs(1), "{listener}: the set-up ran on after the client closed: {line}");
        assert!(line.contains("INFO"), "a client giving up is logged at INFO: {line}");
    }
    assert_eq!(metric(&egress, "strait_handshake_failures_total", &[("reason", "client_closed")]), 2.0);

    // A client that has already spoken is not taken as gone: its set-up runs on to the
    // connect timeout (2s here) and fails as an origination would.
    let mut spoken = TcpStream::connect(("127.0.0.1", egress.port("spoken"))).unwrap();
    spoken.write_all(b"first request bytes").unwrap();
    expect(&events, "accepted");
    let line = egress.wait_for_access_line(&["listener=spoken ", "outcome=upstream_failed"]);
    assert!(line.contains("handshake timed out after 2s"), "{line}");
    assert!(duration_ms(&line) >= 1900, "{line}");
    expect(&events, "closed");
}
