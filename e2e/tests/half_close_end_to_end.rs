//! A client that shuts down its write side still gets the whole reply: its FIN crosses
//! the egress, the mTLS hop (close_notify) and the ingress to a backend that answers
//! only after EOF, and the answer travels back over the half-open connection.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;

use strait_e2e::digest::{digest_reply, DigestServer};
use strait_e2e::*;

#[test]
fn reply_after_client_half_close_crosses_both_hops() {
    let pki = Pki::reference();
    let backend = DigestServer::start();
    let pair = Pair::start(&pki, backend.port);

    // Larger than one relay buffer and one TLS record, so EOF follows many writes.
    let request: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut stream = TcpStream::connect(("127.0.0.1", pair.plain_port)).unwrap();
    // If the FIN is lost the backend never answers: fail in bounded time, don't hang.
    stream.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    stream.write_all(&request).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap_or_else(|e| panic!("no reply after half-close ({e}); egress log:\n{}", pair.egress.proc.output()));
    assert_eq!(reply, digest_reply(&request), "the backend's digest of what it read, then EOF");

    // Both hops saw the whole request one way and the whole reply the other, and
    // closed cleanly: the half-close was relayed, not turned into a reset.
    let sizes = [format!("bytes_received={}", request.len()), format!("bytes_sent={}", reply.len())];
    let egress = pair.egress.wait_for_access_line(&["listener=mysql-plain", "outcome=closed"]);
    let ingress = pair.ingress.wait_for_access_line(&["route=mysql", "outcome=closed"]);
    for line in [&egress, &ingress] {
        for size in &sizes {
            assert!(line.contains(size.as_str()), "{size} missing in {line}");
        }
    }
}
