//! With no drain delay (`drain_delay = "0s"`; the delay itself is
//! `rollout_drain_delay_keeps_serving.rs`'s), SIGTERM stops the egress from accepting at once, lets the connections already open
//! finish, and exits 0: as soon as they are done, or when the drain timeout runs out
//! with one still open.

use std::io::{ErrorKind, Read};
use std::net::Shutdown;
use std::time::{Duration, Instant};

use strait_e2e::kube_secret::*;
use strait_e2e::*;

#[test]
fn sigterm_lets_an_open_connection_finish_then_exits_zero() {
    let pki = Pki::reference();
    let (_ingress, mut egress, port) = start(&pki, "[process]\ndrain_delay = \"0s\"\n");
    let mut open = open_connection(port);
    echo_line(&mut open, b"before SIGTERM\n");

    let mut tail = LogTail::from_now(&egress);
    egress.signal("TERM");
    tail.wait_for(&egress, "shutting down", Duration::from_secs(5));
    assert!(refuses(port), "new connections must be refused once SIGTERM arrived");
    echo_line(&mut open, b"during the drain\n");
    // The default drain timeout is 30 s: the process waits for the open connection.
    std::thread::sleep(Duration::from_millis(500));
    assert!(egress.proc.try_wait().is_none(), "the egress exited with a connection still open:\n{}", egress.proc.output());

    open.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut open), "", "the open connection ends with a clean EOF");
    let closed = Instant::now();
    let status = egress.wait_for_exit(Duration::from_secs(10));
    let took = closed.elapsed();
    println!("exited {took:?} after the last connection closed");
    assert!(status.success(), "exit status {status}:\n{}", egress.proc.output());
    assert!(took < Duration::from_secs(3), "exit must follow the last close promptly, took {took:?}");
    let log = egress.proc.output();
    assert!(log.contains("drained; exiting") && !log.contains("drain timeout reached"), "{log}");
}

#[test]
fn sigterm_with_a_connection_left_open_exits_zero_after_the_drain_timeout() {
    let pki = Pki::reference();
    let (_ingress, mut egress, port) = start(&pki, "[process]\ndrain_delay = \"0s\"\ndrain_timeout = \"1s\"\n");
    let mut open = open_connection(port);
    echo_line(&mut open, b"left open\n");

    let sent = Instant::now();
    egress.signal("TERM");
    let status = egress.wait_for_exit(Duration::from_secs(10));
    let took = sent.elapsed();
    println!("exited {took:?} after SIGTERM with drain_timeout = 1s");
    assert!(status.success(), "exit status {status}:\n{}", egress.proc.output());
    assert!(took >= Duration::from_millis(900), "the egress must wait for the drain timeout, exited after {took:?}");
    assert!(egress.proc.output().contains("drain timeout reached"), "{}", egress.proc.output());
    // The connection it gave up on is closed, not left hanging.
    let mut buf = [0u8; 16];
    match open.read(&mut buf) {
        Ok(0) => {}
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionReset | ErrorKind::BrokenPipe) => {}
        other => panic!("the connection left open should be closed at exit, read gave {other:?}"),
    }
}

/// Ingress in front of an echo server, and an egress with one plain listener to it;
/// `extra` is appended to the egress config. Returns the egress's plain port.
fn start(pki: &Pki, extra: &str) -> (Gateway, Gateway, u16) {
    let echo = EchoServer::start();
    let (ingress, ingress_port) = Gateway::reference_ingress(pki, echo.port);
    let config = Config::new()
        .listener(Listener::plain("plain", "to-ingress"))
        .route(Route::to("to-ingress", ingress_port).mutual_origination(&pki.path("egress"), SERVICE_HOST))
        .raw(extra);
    let egress = Gateway::start(Role::Egress, pki.dir.path(), &config.toml());
    let port = egress.port("plain");
    (ingress, egress, port)
}
