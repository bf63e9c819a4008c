//! Half-close across HBONE, both ways: a client's FIN becomes END_STREAM on its
//! `CONNECT` stream and a FIN to the backend, with the reply still carried back; and a
//! backend that finishes first (FIN) leaves the client's direction open, so bytes the
//! client sends afterwards still arrive.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

use strait_e2e::digest::{digest_reply, DigestServer};
use strait_e2e::hbone::{wait_for_access_lines, HbonePair};
use strait_e2e::*;

#[test]
fn client_fin_crosses_and_the_reply_comes_back() {
    let pki = Pki::reference();
    // The digest server answers only after it has read EOF.
    let backend = DigestServer::start();
    let pair = HbonePair::start(&pki, backend.port, |r| r);
    let message = b"all I have to say".repeat(1000);
    let reply = exchange_within(pair.plain_port, &message, Duration::from_secs(10)).expect("the exchange");
    assert_eq!(reply, digest_reply(&message));
    wait_for_access_lines(&pair.ingress, &["route=mysql", "outcome=closed", &format!("bytes_received={} ", message.len())], 1);
}

#[test]
fn server_fin_first_leaves_the_client_direction_open() {
    let pki = Pki::reference();
    let (got, heard) = mpsc::channel::<Vec<u8>>();
    let got = Mutex::new(got);
    let backend = serve_each(move |mut stream| {
        stream.write_all(b"greeting, and that is all from me").unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        let _ = got.lock().unwrap().send(rest);
    });
    let pair = HbonePair::start(&pki, backend, |r| r);
    let mut client = open_connection(pair.plain_port);
    let mut greeting = Vec::new();
    client.read_to_end(&mut greeting).expect("the backend's bytes, then its FIN");
    assert_eq!(greeting, b"greeting, and that is all from me");
    client.write_all(b"sent after the server's FIN").unwrap();
    client.shutdown(Shutdown::Write).unwrap();
    let late = heard.recv_timeout(Duration::from_secs(10)).expect("the backend read to EOF");
    assert_eq!(late, b"sent after the server's FIN");
    let line = wait_for_access_lines(&pair.ingress, &["route=mysql", "outcome=closed"], 1).remove(0);
    assert!(line.contains("bytes_received=27 ") && line.contains("bytes_sent=33 "), "{line}");
}
