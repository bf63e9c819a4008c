//! A real HAProxy (Debian's `haproxy`) as a PROXY-protocol peer: in TCP mode, in the
//! foreground, logging one line per connection (`option tcplog`) to stdout, where the
//! client address it shows is the PROXY header's when a frontend has `accept-proxy`.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::{free_port, require, wait_for_port, Proc, TempDir};

/// A running haproxy with one frontend, stopped when dropped.
pub struct HaProxy {
    /// The frontend's port on 127.0.0.1.
    pub port: u16,
    /// The process; its log holds one `tcplog` line per finished connection.
    pub proc: Proc,
    _dir: TempDir,
}

impl HaProxy {
    /// Starts haproxy with a frontend on a free loopback port (`bind_options` after the
    /// address, e.g. `accept-proxy`) forwarding to `server` (`server_options` after it,
    /// e.g. `send-proxy-v2`).
    pub fn start(bind_options: &str, server: SocketAddr, server_options: &str) -> HaProxy {
        require("haproxy");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = format!(
            "global\n  log stdout format raw local0\n\
             defaults\n  mode tcp\n  log global\n  option tcplog\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
             frontend front\n  bind 127.0.0.1:{port} {bind_options}\n  default_backend back\n\
             backend back\n  server upstream {server} {server_options}\n"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let mut command = Command::new("haproxy");
        command.arg("-db").arg("-f").arg(&path);
        let proc = Proc::spawn(command, dir.path().join("haproxy.log"));
        wait_for_port(port, Duration::from_secs(10));
        HaProxy { port, proc, _dir: dir }
    }

    /// Waits until its log holds a line containing `needle`; returns it.
    pub fn wait_for_line(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.proc.output().lines().find(|l| l.contains(needle)) {
                return line.to_owned();
            }
            assert!(Instant::now() < deadline, "no haproxy log line with {needle:?} in:\n{}", self.proc.output());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A TCP connection to `127.0.0.1:port` from the loopback address `source` (any port),
/// so a test can tell its clients apart by address.
pub fn connect_from(source: std::net::Ipv4Addr, port: u16) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::from((source, 0)).into())?;
    socket.connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)).into(), Duration::from_secs(5))?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    Ok(stream)
}
