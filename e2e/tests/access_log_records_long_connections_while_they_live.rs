//! With `access_log_flush_interval` (Envoy's), a long connection is visible while it
//! lives: a `record=open` line as soon as its relay starts, a `record=periodic` line every
//! interval carrying the bytes moved since the previous record, and the byte metrics
//! brought up to date at each record. The close line (`record=close`) still carries the
//! totals, which are exactly what the records before it added up to, and the metrics are
//! not counted twice.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use strait_e2e::config::{quoted, Config, Listener, Route};
use strait_e2e::kube_secret::LogTail;
use strait_e2e::*;

/// The listener's flush interval.
const FLUSH: Duration = Duration::from_millis(300);
/// Bytes the client sends in each burst (each echoed back), some intervals apart.
const BURSTS: [usize; 3] = [1000, 2500, 700];
/// How long any one record may take to appear.
const RECORD_LIMIT: Duration = Duration::from_secs(5);

#[test]
fn access_log_records_long_connections_while_they_live() {
    let started = Instant::now();
    let echo = EchoServer::start();
    let dir = TempDir::new().unwrap();
    let config = Config::new()
        .listener(Listener::plain("plain", "echo").set("access_log_flush_interval", quoted("300ms")))
        .route(Route::to("echo", echo.port).plaintext());
    let egress = Gateway::start(Role::Egress, dir.path(), &config.toml());
    let port = egress.port("plain");
    let mut tail = LogTail::from_now(&egress);

    let mut conn = open_connection(port);
    // The open record comes first, before any byte moved, as the relay starts: not at the
    // first interval and not at close.
    let (open, _) = tail.wait_for(&egress, "record=", RECORD_LIMIT);
    assert!(open.contains("record=open ") || open.ends_with("record=open"), "the first record must be the open one: {open}");
    assert_eq!(bytes(&open), (0, 0), "{open}");
    let written_after = Duration::from_millis(field(&open, "duration_ms"));
    assert!(written_after < FLUSH, "the open record must be written when the relay starts, not {written_after:?} later: {open}");

    // Several bursts while the connection stays open; after each, the periodic records
    // account for exactly the bytes moved so far, and so do the metrics.
    let mut reported = (0, 0);
    let mut periodic = 0;
    let mut total = 0;
    for (i, size) in BURSTS.into_iter().enumerate() {
        let burst = vec![b'a' + i as u8; size];
        conn.write_all(&burst).unwrap();
        let mut echoed = vec![0u8; size];
        conn.read_exact(&mut echoed).unwrap();
        assert_eq!(echoed, burst);
        total += size as u64;
        while reported != (total, total) {
            let (line, _) = tail.wait_for(&egress, "record=", RECORD_LIMIT);
            assert!(line.contains("record=periodic"), "an open connection writes periodic records only: {line}");
            let delta = bytes(&line);
            reported = (reported.0 + delta.0, reported.1 + delta.1);
            periodic += 1;
            assert!(reported.0 <= total && reported.1 <= total, "records must report each byte once ({reported:?} of {total} so far): {line}");
        }
        let metrics = egress.admin("GET", "/metrics").1;
        for name in ["strait_tcp_received_bytes_total", "strait_tcp_sent_bytes_total"] {
            assert_eq!(metric(&metrics, name, "listener=\"plain\""), total, "{name} while the connection is open:\n{metrics}");
        }
        for name in ["istio_tcp_received_bytes_total", "istio_tcp_sent_bytes_total"] {
            assert_eq!(metric(&metrics, name, "reporter=\"source\""), total, "{name} while the connection is open:\n{metrics}");
        }
    }
    // With nothing moving, the next record says so: bytes since the previous record, not
    // the running total.
    let (idle, _) = tail.wait_for(&egress, "record=", RECORD_LIMIT);
    assert!(idle.contains("record=periodic") && bytes(&idle) == (0, 0), "an idle interval reports no bytes: {idle}");
    periodic += 1;

    conn.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut conn), "", "the echo closes after the client's EOF");
    let (close, _) = tail.wait_for(&egress, "record=close", RECORD_LIMIT);
    assert_eq!(bytes(&close), (total, total), "the close record carries the totals: {close}");
    assert_eq!(bytes(&close), reported, "the records' deltas add up to the close record's totals: {close}");
    assert!(close.contains("outcome=closed "), "{close}");
    assert!(periodic > BURSTS.len(), "{periodic} periodic records");

    let metrics = egress.admin("GET", "/metrics").1;
    assert_eq!(metric(&metrics, "strait_tcp_received_bytes_total", "listener=\"plain\""), total, "counted once, not again at close:\n{metrics}");
    assert_eq!(metric(&metrics, "istio_tcp_sent_bytes_total", "reporter=\"source\""), total, "counted once, not again at close:\n{metrics}");
    assert_eq!(metric(&metrics, "strait_tcp_connections_opened_total", "listener=\"plain\""), 1, "{metrics}");
    assert_eq!(metric(&metrics, "istio_tcp_connections_closed_total", "reporter=\"source\""), 1, "{metrics}");
    println!("{periodic} periodic records for {total} bytes each way; test took {:?}", started.elapsed());
}

/// An integer field (`key=123`) of an access-log line.
fn field(line: &str, key: &str) -> u64 {
    let prefix = format!("{key}=");
    let value = line.split_whitespace().find_map(|word| word.strip_prefix(&prefix)).unwrap_or_else(|| panic!("no {key} in {line}"));
    value.parse().unwrap_or_else(|e| panic!("{key}={value} in {line}: {e}"))
}

/// (bytes_received, bytes_sent) of an access-log line.
fn bytes(line: &str) -> (u64, u64) {
    (field(line, "bytes_received"), field(line, "bytes_sent"))
}

/// The sum of the series of `name` whose labels contain `selector`, from Prometheus text.
fn metric(text: &str, name: &str, selector: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(selector))
        .map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()).unwrap_or_else(|| panic!("unparsable sample {l}")) as u64)
        .sum()
}
