//! A hundred clients at once, each pushing a MiB of its own bytes through the pair: every
//! stream arrives intact and unmixed, checked by the backend's SHA-256 of what it read.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use strait_e2e::digest::{exchange_checked, payload, DigestServer};
use strait_e2e::*;

const CLIENTS: usize = 100;
const SIZE: usize = 1024 * 1024;
const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn hundred_concurrent_clients_each_get_their_own_digest() {
    let pki = Pki::reference();
    let backend = DigestServer::start();
    let pair = Pair::start(&pki, backend.port);
    let port = pair.plain_port;

    let start = Instant::now();
    let (done, results) = mpsc::channel();
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(CLIENTS));
    for client in 0..CLIENTS {
        let done = done.clone();
        let barrier = barrier.clone();
        std::thread::spawn(move || {
            let data = payload(client as u64, SIZE);
            // All connect together, so the streams really overlap in the gateways.
            barrier.wait();
            let outcome = exchange_checked(port, &data, LIMIT);
            let _ = done.send((client, outcome));
        });
    }
    drop(done);

    let mut failures = Vec::new();
    for _ in 0..CLIENTS {
        let left = LIMIT.saturating_sub(start.elapsed());
        match results.recv_timeout(left) {
            Ok((_, Ok(()))) => {}
            Ok((client, Err(e))) => failures.push(format!("client {client}: {e}")),
            Err(_) => panic!("not every client finished within {LIMIT:?}; failures so far: {failures:#?}"),
        }
    }
    assert!(failures.is_empty(), "{} of {CLIENTS} clients failed:\n{}", failures.len(), failures.join("\n"));

    // Each hop logged every stream as a clean close carrying exactly one payload.
    let full = format!("bytes_received={SIZE} ");
    for gateway in [&pair.egress, &pair.ingress] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let clean = gateway.access_log().iter().filter(|l| l.contains("outcome=closed") && l.contains(&full)).count();
            if clean == CLIENTS {
                break;
            }
            assert!(Instant::now() < deadline, "{clean} of {CLIENTS} clean {full} lines in:\n{}", gateway.proc.output());
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(gateway.access_log().len(), CLIENTS, "{}", gateway.proc.output());
    }
}
