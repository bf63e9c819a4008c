//! A gateway run in-process through the library's `gateway::run`, as the binaries run it:
//! listeners on port 0 with the addresses learnt from the handle, and a connection that
//! outlives `drain_timeout` cut at the end of the drain, with its access-log line and
//! closed metric saying so.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use strait::config::Role;
use strait::gateway::{self, Options};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Log output captured from the gateway (every task runs on this test's thread).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// An echo server on a loopback port 0; returns its address.
async fn echo() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    address
}

/// Two plain listeners on port 0, both to the echo backend.
fn config(dir: &std::path::Path, backend: std::net::SocketAddr, drain: &str) -> std::path::PathBuf {
    let path = dir.join("egress.toml");
    let text = format!(
        r#"
[[listener]]
name = "first"
address = "127.0.0.1:0"
route = "echo"

[[listener]]
name = "second"
address = "127.0.0.1:0"
route = "echo"

[[route]]
name = "echo"
upstream = "{backend}"
upstream_tls = {{ mode = "disable" }}

[admin]
enabled = false

[health]
address = "127.0.0.1:0"

[metrics]
enabled = false

[process]
drain_delay = "0s"
drain_timeout = "{drain}"
"#
    );
    std::fs::write(&path, text).unwrap();
    path
}

async fn ping(address: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(address).await.unwrap();
    stream.write_all(b"ping").await.unwrap();
    let mut reply = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut reply)).await.expect("echo within 10 s").unwrap();
    assert_eq!(&reply, b"ping");
    stream
}

#[tokio::test]
async fn listeners_on_port_0_and_a_connection_cut_by_the_drain_is_recorded() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    let _logging = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let backend = echo().await;
    let options = Options {
        config_path: config(dir.path(), backend, "300ms"),
        role: Role::Egress,
        admin_address: None,
        health_address: None,
        metrics_address: None,
        log: None,
    };
    let shutdown = CancellationToken::new();
    let handle = gateway::run(options, shutdown.clone()).await.expect("the gateway starts");

    // Both listeners asked for port 0; each got its own, and the handle says which.
    let (first, second) = (handle.listener("first").unwrap(), handle.listener("second").unwrap());
    assert_ne!(first.port(), 0);
    assert_ne!(first, second, "{:?}", handle.listeners());
    drop(ping(second).await);

    // A connection that stays open through the whole drain.
    let mut held = ping(first).await;
    let metrics = handle.metrics.clone();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), handle.stopped()).await.expect("the drain ends: 300 ms, then the cut");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), held.read_to_end(&mut rest)).await.expect("the cut connection is closed");
    assert!(read.is_ok(), "the client sees the end of the stream: {read:?}");

    let text = metrics.encode();
    let cut = r#"strait_tcp_connections_closed_total{listener="first",route="echo",direction="outbound",mtls="false",outcome="drained"} 1"#;
    assert!(text.contains(cut), "{text}");
    assert!(text.contains(r#"strait_tcp_received_bytes_total{listener="first",route="echo",direction="outbound",mtls="false"} 4"#), "{text}");
    let log = captured.text();
    let line = log.lines().find(|l| l.contains("strait::access") && l.contains("listener=first")).unwrap_or_else(|| panic!("no access line:\n{log}"));
    assert!(line.contains("outcome=drained") && line.contains("reason=cut by the drain"), "{line}");
    assert!(line.contains("connection{listener=first"), "the connection's span is on its lines: {line}");
    assert!(log.contains("listener=second") && log.contains("outcome=closed"), "{log}");
}
