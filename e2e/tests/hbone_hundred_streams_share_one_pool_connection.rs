//! A hundred client connections at once through the egress's HBONE route become a
//! hundred concurrent `CONNECT` streams on one pooled mutual-TLS connection (the
//! route's default `hbone_max_streams` is 100): every stream's bytes arrive intact and
//! unmixed (the backend's SHA-256 of each), the egress opened one pool connection, and
//! the ingress accepted one TLS connection (one `protocol=hbone` line when it closed)
//! carrying a hundred stream lines.

use std::sync::{mpsc, Arc, Barrier};
use std::time::{Duration, Instant};

use strait_e2e::digest::{digest_reply, exchange_checked, payload, DigestServer};
use strait_e2e::hbone::{pool_connections_opened, wait_for_access_lines, HbonePair};
use strait_e2e::*;

const CLIENTS: usize = 100;
const SIZE: usize = 256 * 1024;
const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn hundred_concurrent_streams_over_one_pool_connection_each_get_their_digest() {
    let pki = Pki::reference();
    let backend = DigestServer::start();
    // A short pool idle timeout (2 s), so the pool connection closes (and is logged) soon after.
    let pair = HbonePair::start(&pki, backend.port, |r| r.set("hbone_idle_timeout", "\"2s\""));
    let port = pair.plain_port;

    let (done, results) = mpsc::channel();
    let barrier = Arc::new(Barrier::new(CLIENTS + 1));
    // Payloads first: the pool's idle timer must not run while they are being made.
    let payloads: Vec<Vec<u8>> = (0..CLIENTS).map(|client| payload(client as u64, SIZE)).collect();
    for (client, data) in payloads.into_iter().enumerate() {
        let (done, barrier) = (done.clone(), barrier.clone());
        std::thread::spawn(move || {
            barrier.wait();
            let outcome = exchange_checked(port, &data, LIMIT);
            let _ = done.send((client, outcome));
        });
    }
    drop(done);
    // Warm the pool with one stream, so the hundred find its connection open; its stream
    // has ended (and left its place) once the egress logged it.
    assert_eq!(exchange_within(port, b"warm", LIMIT).unwrap(), digest_reply(b"warm"));
    wait_for_access_lines(&pair.egress, &["route=to-ingress", "outcome=closed"], 1);
    barrier.wait();
    let start = Instant::now();
    let mut failures = Vec::new();
    for _ in 0..CLIENTS {
        match results.recv_timeout(LIMIT.saturating_sub(start.elapsed())) {
            Ok((_, Ok(()))) => {}
            Ok((client, Err(e))) => failures.push(format!("client {client}: {e}")),
            Err(_) => panic!("not every client finished within {LIMIT:?}; failures so far: {failures:#?}"),
        }
    }
    assert!(failures.is_empty(), "{} of {CLIENTS} clients failed:\n{}", failures.len(), failures.join("\n"));

    let full = format!("bytes_received={SIZE} ");
    wait_for_access_lines(&pair.ingress, &["listener=hbone", "route=mysql", "outcome=closed", &full], CLIENTS);
    wait_for_access_lines(&pair.egress, &["route=to-ingress", "outcome=closed", &full], CLIENTS);
    assert!(pair.egress.access_log().iter().all(|l| l.contains("outcome=closed")), "{}", pair.egress.proc.output());
    assert_eq!(pool_connections_opened(&pair.egress), 1, "{}", pair.egress.proc.output());
    // Idle for 2 s, the pool connection closes: the ingress logs the one TLS connection.
    wait_for_access_lines(&pair.ingress, &["listener=hbone", "protocol=hbone"], 1);
    assert_eq!(pair.ingress.access_log().iter().filter(|l| l.contains("protocol=hbone")).count(), 1, "{}", pair.ingress.proc.output());
}
