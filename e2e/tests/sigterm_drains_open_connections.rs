//! SIGTERM stops the egress from accepting at once, lets the connections already open
//! finish, and exits 0: as soon as they are done, or when the drain timeout runs out
//! with one still open.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use strait_e2e::kube_secret::*;
use strait_e2e::*;

#[test]
fn sigterm_lets_an_open_connection_finish_then_exits_zero() {
    let pki = Pki::reference();
    let (_ingress, mut egress, port) = start(&pki, "");
    let mut open = connect(port);
    echo_line(&mut open, b"before SIGTERM\n");

    let mut tail = LogTail::from_now(&egress);
    signal(&egress, "TERM");
    tail.wait_for(&egress, "shutting down", Duration::from_secs(5));
    assert!(refuses(port), "new connections must be refused once SIGTERM arrived");
    echo_line(&mut open, b"during the drain\n");
    // The default drain timeout is 30 s: the process waits for the open connection.
    std::thread::sleep(Duration::from_millis(500));
    assert!(egress.proc.try_wait().is_none(), "the egress exited with a connection still open:\n{}", egress.proc.output());

    open.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut open), "", "the open connection ends with a clean EOF");
    let closed = Instant::now();
    let status = wait_for_exit(&mut egress, Duration::from_secs(10));
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
    let (_ingress, mut egress, port) = start(&pki, "[process]\ndrain_timeout = \"1s\"\n");
    let mut open = connect(port);
    echo_line(&mut open, b"left open\n");

    let sent = Instant::now();
    signal(&egress, "TERM");
    let status = wait_for_exit(&mut egress, Duration::from_secs(10));
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
    let ingress_port = free_port();
    let ingress = Gateway::start(Role::Ingress, pki.dir.path(), &ingress_config(pki, ingress_port, echo.port));
    let port = free_port();
    let config = format!(
        r#"
[[listener]]
name = "plain"
address = "127.0.0.1:{port}"
route = "to-ingress"

[[route]]
name = "to-ingress"
upstream = "127.0.0.1:{ingress_port}"
upstream_tls = {{ mode = "mutual", dir = "{client}", sni = "{SERVICE_HOST}" }}

{extra}"#,
        client = pki.path("egress").display()
    );
    let egress = Gateway::start(Role::Egress, pki.dir.path(), &config);
    (ingress, egress, port)
}

fn connect(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// Writes a line on an open connection and reads the same line back.
fn echo_line(stream: &mut TcpStream, line: &[u8]) {
    stream.write_all(line).unwrap();
    let mut echoed = vec![0u8; line.len()];
    stream.read_exact(&mut echoed).unwrap();
    assert_eq!(echoed, line);
}

/// Whether new connections to `port` are refused (waiting up to 2 s).
fn refuses(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return true,
            _ if Instant::now() > deadline => return false,
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

fn wait_for_exit(gateway: &mut Gateway, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = gateway.proc.try_wait() {
            return status;
        }
        assert!(Instant::now() < deadline, "still running {limit:?} after SIGTERM:\n{}", gateway.proc.output());
        std::thread::sleep(Duration::from_millis(10));
    }
}
