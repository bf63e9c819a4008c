//! Fixtures for the zero-trust and hostile-input tests: a CA the test controls (so it
//! can issue expired, not-yet-valid, wrong-purpose and odd-identity certificates that
//! the gateway trusts), clients that present whatever they are given, raw bytes on a TLS
//! port, `openssl s_client`, and the gateway's own metrics.

use std::ffi::OsStr;
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use strait::certs::{Authority, KeyType, Leaf, Usage};

use crate::{read_all, require, tls_connect, Gateway, Pki, Proc};

/// A certificate authority whose certificates the test gateway trusts, written into a
/// [`Pki`]'s directory: every Secret it issues has this CA as its `ca.crt`.
pub struct TestCa {
    authority: Authority,
    /// This CA's certificate (the `ca.crt` of every Secret it issues).
    pub ca_file: PathBuf,
    root: PathBuf,
}

impl TestCa {
    /// A fresh root CA called `name`, its certificate at `<pki>/<name>/ca.crt`.
    pub fn new(pki: &Pki, name: &str) -> TestCa {
        let authority = Authority::root(name, KeyType::EcdsaP256, 30).unwrap();
        let root = pki.path(name);
        std::fs::create_dir_all(&root).unwrap();
        let ca_file = root.join("ca.crt");
        std::fs::write(&ca_file, authority.bundle_pem()).unwrap();
        TestCa { authority, ca_file, root }
    }

    /// Issues `leaf` as Secret `<pki>/<ca name>/<name>` (`tls.crt`, `tls.key`, `ca.crt`).
    pub fn issue(&self, name: &str, leaf: &Leaf) -> PathBuf {
        let dir = self.root.join(name);
        strait::certs::write_secret(&dir, &self.authority.issue(leaf).unwrap(), &self.authority.bundle_pem()).unwrap();
        dir
    }

    /// A server certificate with DNS SAN `host`.
    pub fn server(&self, name: &str, host: &str) -> PathBuf {
        self.issue(name, &leaf(host, Usage::Server, &[host], &[]))
    }
}

/// A leaf valid for 30 days from an hour ago, with these SANs.
pub fn leaf(common_name: &str, usage: Usage, dns: &[&str], uris: &[&str]) -> Leaf {
    let mut leaf = Leaf::new(common_name, usage, 30);
    leaf.dns = dns.iter().map(|d| d.to_string()).collect();
    leaf.uris = uris.iter().map(|u| u.to_string()).collect();
    leaf
}

/// A rustls client that trusts `ca` and presents Secret `secret` exactly as it is on
/// disk: unlike [`crate::client_config`] it does not check the certificate's dates, so
/// a test can present an expired or not-yet-valid one.
pub fn presenting(secret: &Path, ca: &Path) -> Arc<rustls::ClientConfig> {
    let chain = CertificateDer::pem_file_iter(secret.join("tls.crt")).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(secret.join("tls.key")).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(strait::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(strait::tls::load_roots(ca).unwrap())
        .with_client_auth_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

/// Proves a client is served: its bytes come back from the echo backend through
/// `127.0.0.1:port` with SNI `sni`, and it closes cleanly. `after` names what came
/// before, for the failure message.
pub fn served(port: u16, sni: &str, config: Arc<rustls::ClientConfig>, after: &str) {
    let mut stream = tls_connect(port, sni, config).unwrap_or_else(|e| panic!("a good client was refused after {after}: {e}"));
    let message = format!("still serving after {after}\n");
    stream.write_all(message.as_bytes()).unwrap();
    stream.flush().unwrap();
    let mut echoed = vec![0u8; message.len()];
    stream.read_exact(&mut echoed).unwrap_or_else(|e| panic!("no echo for a good client after {after}: {e}"));
    assert_eq!(String::from_utf8_lossy(&echoed), message);
    stream.conn.send_close_notify();
    stream.flush().unwrap();
    let rest = read_all(&mut stream);
    assert!(rest.is_empty(), "{rest:?}");
}

/// Connects with rustls and proves the stream is refused: the handshake fails, or the
/// first read after it yields an error or EOF, never data. Returns how it was refused.
pub fn refused(port: u16, sni: &str, config: Arc<rustls::ClientConfig>) -> String {
    let mut stream = match tls_connect(port, sni, config) {
        Err(e) => return format!("handshake failed: {e}"),
        Ok(stream) => stream,
    };
    let _ = stream.write_all(b"must not reach the backend\n");
    let _ = stream.flush();
    let mut buffer = [0u8; 256];
    match stream.read(&mut buffer) {
        Ok(0) => "closed at the first read".into(),
        Ok(n) => panic!("a refused client (SNI {sni}) received data: {:?}", String::from_utf8_lossy(&buffer[..n])),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
            panic!("the gateway neither served nor refused the client (SNI {sni}) within 10s")
        }
        Err(e) => format!("first read failed: {e}"),
    }
}

/// Whether a TLS connection attempt (a [`tls_connect`] result) ended refused: the
/// handshake failed, or (TLS 1.3, the client certificate rejected after the client
/// finished) nothing but an error or EOF comes back to a write. Unlike [`refused`] it
/// only answers, for a test that asserts with its own message.
pub fn tls_refused<S: Read + Write>(attempt: std::io::Result<S>) -> bool {
    match attempt {
        Err(_) => true,
        Ok(mut stream) => {
            let _ = stream.write_all(b"ping");
            let mut buf = [0u8; 16];
            !matches!(stream.read(&mut buf), Ok(n) if n > 0)
        }
    }
}

/// How the gateway ended a raw connection.
#[derive(Debug)]
pub struct Closed {
    /// Whatever it sent first (a TLS alert, say).
    pub received: Vec<u8>,
    /// Time from the call until EOF or reset.
    pub after: Duration,
}

/// Connects to `127.0.0.1:port`, writes `bytes` from a thread (the gateway may stop
/// reading and reset the connection long before they are all through) and waits, at
/// most `limit`, for the gateway to close the connection.
pub fn send_and_expect_close(port: u16, bytes: Vec<u8>, limit: Duration) -> Closed {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sending = std::thread::spawn(move || {
        let _ = writer.write_all(&bytes);
    });
    let closed = closed_by_gateway(&mut stream, limit);
    drop(stream);
    sending.join().unwrap();
    closed
}

/// Reads `stream` until the gateway closes it (EOF or reset); panics if it is still
/// open after `limit`.
pub fn closed_by_gateway(stream: &mut TcpStream, limit: Duration) -> Closed {
    let start = Instant::now();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let left = limit.checked_sub(start.elapsed()).unwrap_or_default().max(Duration::from_millis(1));
        stream.set_read_timeout(Some(left)).unwrap();
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                panic!("the gateway kept the connection open for {limit:?} (received {received:02x?})")
            }
            Err(_) => break,
        }
    }
    Closed { received, after: start.elapsed() }
}

/// The bytes of a TLS alert record (`15 03 0x 00 02 level description`), if `bytes`
/// starts with one: (level, description).
pub fn alert(bytes: &[u8]) -> Option<(u8, u8)> {
    match bytes {
        [0x15, 0x03, _, 0x00, 0x02, level, description, ..] => Some((*level, *description)),
        _ => None,
    }
}

/// The first flight of a real rustls client for `sni`: the ClientHello record.
pub fn client_hello(sni: &str) -> Vec<u8> {
    let config = rustls::ClientConfig::builder_with_provider(strait::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = ServerName::try_from(sni.to_owned()).unwrap();
    let mut connection = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    while connection.wants_write() {
        connection.write_tls(&mut out).unwrap();
    }
    assert_eq!(out.first(), Some(&0x16), "a ClientHello record starts with 0x16");
    out
}

/// A structurally valid ClientHello far over the 64 KiB a handshake message may have:
/// `suites` cipher suites and `extensions` distinct unknown extensions of `extension_len`
/// bytes each, fragmented into 16 KiB records as a real client would send it.
pub fn oversized_client_hello(sni: &str, suites: u16, extensions: u16, extension_len: u16) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend([0x5a; 32]); // random
    body.push(32);
    body.extend([0xa5; 32]); // legacy session id
    assert!(suites <= 0x7fff, "the cipher-suite list has a 16-bit length");
    body.extend((suites * 2).to_be_bytes());
    for i in 0..suites {
        let suite = if i == 0 { 0x1301 } else { 0x0a0a_u16.wrapping_add(i) };
        body.extend(suite.to_be_bytes());
    }
    body.extend([1, 0]); // compression: null
    let mut ext = Vec::new();
    let host = sni.as_bytes();
    let sni_list_len = host.len() as u16 + 3;
    ext.extend([0x00, 0x00]);
    ext.extend((sni_list_len + 2).to_be_bytes());
    ext.extend(sni_list_len.to_be_bytes());
    ext.push(0);
    ext.extend((host.len() as u16).to_be_bytes());
    ext.extend(host);
    for i in 0..extensions {
        ext.extend((0x4000 + i).to_be_bytes()); // unassigned extension types
        ext.extend(extension_len.to_be_bytes());
        ext.extend(std::iter::repeat_n(0xee, extension_len as usize));
    }
    assert!(ext.len() <= 0xffff, "the extensions block has a 16-bit length");
    body.extend((ext.len() as u16).to_be_bytes());
    body.extend(ext);
    let mut handshake = vec![0x01];
    handshake.extend(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend(body);
    let mut records = Vec::new();
    for fragment in handshake.chunks(16 * 1024) {
        records.extend([0x16, 0x03, 0x01]);
        records.extend((fragment.len() as u16).to_be_bytes());
        records.extend(fragment);
    }
    records
}

/// `len` bytes from a fixed-seed xorshift generator: "random", but the same every run.
pub fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend(seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Runs `openssl s_client -connect 127.0.0.1:port ARGS` to completion (at most 20 s)
/// with no input, so it handshakes and waits for the server; returns (success, output).
pub fn s_client(dir: &Path, name: &str, port: u16, args: &[impl AsRef<OsStr>]) -> (bool, String) {
    require("openssl");
    let mut command = Command::new("openssl");
    command.args(["s_client", "-connect", &format!("127.0.0.1:{port}")]).args(args);
    let mut proc = Proc::spawn(command, dir.join(format!("s_client-{name}.log")));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = proc.try_wait() {
            return (status.success(), proc.output());
        }
        assert!(Instant::now() < deadline, "openssl s_client ({name}) still connected after 20s:\n{}", proc.output());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `-cert` and `-key` arguments of `openssl s_client` for Secret `dir`.
pub fn cert_args(dir: &Path) -> Vec<String> {
    vec!["-cert".into(), dir.join("tls.crt").display().to_string(), "-key".into(), dir.join("tls.key").display().to_string()]
}

/// `openssl s_client` arguments of a client that verifies the server and presents a
/// certificate: `flags` (`-quiet`, `-tls1_2`, ...), SNI `sni`, `-CAfile ca`, and the
/// certificate and key of Secret `secret`.
pub fn s_client_args(flags: &[&str], sni: &str, ca: &Path, secret: &Path) -> Vec<String> {
    let mut args: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    args.extend(["-servername".into(), sni.into(), "-CAfile".into(), ca.display().to_string()]);
    args.extend(cert_args(secret));
    args
}

/// The value of metric `name` whose labels include every `labels` pair, from the
/// gateway's `/metrics`; 0 when no such series exists yet.
pub fn metric(gateway: &Gateway, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (status, body) = gateway.admin("GET", "/metrics");
    assert_eq!(status, 200, "GET /metrics: {body}");
    body.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

/// Waits (at most 10 s) until [`metric`] reaches `at_least`; returns its value.
pub fn wait_for_metric(gateway: &Gateway, name: &str, labels: &[(&str, &str)], at_least: f64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let value = metric(gateway, name, labels);
        if value >= at_least {
            return value;
        }
        assert!(Instant::now() < deadline, "{name}{labels:?} is {value}, expected at least {at_least}:\n{}", gateway.admin("GET", "/metrics").1);
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits (at most 15 s) until the access log holds `count` lines containing every one
/// of `needles`; returns them.
pub fn wait_for_lines(gateway: &Gateway, needles: &[&str], count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let lines: Vec<String> = gateway.access_log().into_iter().filter(|l| needles.iter().all(|n| l.contains(n))).collect();
        if lines.len() >= count {
            return lines;
        }
        assert!(Instant::now() < deadline, "expected {count} access-log lines with {needles:?}, found {}:\n{}", lines.len(), gateway.proc.output());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Panics with the gateway's output if it has exited.
pub fn assert_alive(gateway: &mut Gateway) {
    if let Some(status) = gateway.proc.try_wait() {
        panic!("the gateway exited ({status}):\n{}", gateway.proc.output());
    }
}

/// `openssl s_client` driven line by line: stdin is a pipe the test writes to, output
/// goes to a log the test polls. Killed when dropped, so a hung peer cannot hang a test.
pub struct Interactive {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    log: PathBuf,
}

impl Interactive {
    /// Starts `openssl s_client -connect 127.0.0.1:port ARGS`, output in `<dir>/s_client-<name>.log`.
    pub fn s_client(dir: &Path, name: &str, port: u16, args: &[String]) -> Interactive {
        require("openssl");
        let log = dir.join(format!("s_client-{name}.log"));
        let out = std::fs::File::create(&log).unwrap();
        let mut child = Command::new("openssl")
            .args(["s_client", "-connect", &format!("127.0.0.1:{port}")])
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        Interactive { child, stdin, log }
    }

    /// Everything it has printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Types `text` on its stdin.
    pub fn send(&mut self, text: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(text.as_bytes()).unwrap();
        stdin.flush().unwrap();
    }

    /// Types `text` if it is still running; false when it has already closed its stdin
    /// (exited), which is what a refused session does.
    pub fn try_send(&mut self, text: &str) -> bool {
        let Some(stdin) = self.stdin.as_mut() else { return false };
        stdin.write_all(text.as_bytes()).and_then(|()| stdin.flush()).is_ok()
    }

    /// Closes its stdin (with `-no_ign_eof`, that ends the session).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits until its output contains `needle`; false if it does not within `limit`
    /// (or it exits first).
    pub fn wait_for(&mut self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let exited = self.child.try_wait().unwrap().is_some();
            if self.output().contains(needle) {
                return true;
            }
            if exited || Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for it to exit; `None` if it is still running after `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Interactive {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
