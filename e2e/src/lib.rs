//! Fixtures for the end-to-end tests: certificates, the real binaries, real servers.
//!
//! Every server a test needs is started here, on loopback, and stopped when its guard
//! drops. A missing server binary is a test failure with the install command in the
//! message, never a skip.

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strait::certs::{Authority, KeyType, Leaf, ReferenceOptions, Usage};

pub use config::{Config, Listener, Route};

pub use tempfile::TempDir;

/// The `$SERVICE_URL` of the tests: the ingress's name, SNI on the cross-cluster hop.
pub const SERVICE_HOST: &str = "db.strait.test";

/// A loopback port nobody is listening on right now. Racy (another process may take it
/// before the test binds it): gateways bind port 0 ([`config`]) and say which port they
/// got ([`Gateway::port`]). What is left needs the number before anything binds: the
/// servers started here (mariadbd, postgres, redis-server, dnsmasq take a port on their
/// command line and cannot report one they chose), a port nothing must listen on, and
/// a config file another command reads (`diagnose --config`) or a reload rewrites.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until something accepts on `port`, or panics after `limit`.
pub fn wait_for_port(port: u16, limit: Duration) {
    let deadline = Instant::now() + limit;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on 127.0.0.1:{port} after {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Fails the test loudly when a server or client program is missing.
pub fn require(program: &str) {
    let found = Command::new("sh").args(["-c", &format!("command -v {program}")]).output().is_ok_and(|o| o.status.success());
    assert!(found, "`{program}` is not installed: run e2e/install-deps.sh (apt-get install mariadb-server redis-server ...)");
}

/// A child process killed when the guard drops.
pub struct Proc {
    child: Child,
    /// Where its stdout and stderr go.
    pub log: PathBuf,
}

impl Proc {
    /// Starts `command` with output in `log`.
    pub fn spawn(mut command: Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).unwrap();
        command.stdout(out.try_clone().unwrap()).stderr(out).stdin(Stdio::null());
        let child = command.spawn().unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
        Proc { child, log }
    }

    /// Everything the process has written so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGKILL and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Exit status, if it has exited.
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The reference PKI (see `strait certs`) plus room for extra, test-made credentials.
pub struct Pki {
    /// Holds everything; removed on drop.
    pub dir: TempDir,
}

impl Pki {
    /// Writes the reference certificates for [`SERVICE_HOST`].
    pub fn reference() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let options = ReferenceOptions { host: SERVICE_HOST.into(), trust_domain: "cluster.local".into(), days: 30, key_type: KeyType::EcdsaP256 };
        strait::certs::write_reference(dir.path(), &options).unwrap();
        Pki { dir }
    }

    /// Path of a file or Secret directory inside the PKI (`"ingress"`, `"mesh/client"`).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Issues a leaf from a brand-new CA nobody trusts, written as Secret `name`.
    pub fn foreign(&self, name: &str, leaf: &Leaf) -> PathBuf {
        let ca = Authority::root("Foreign CA", KeyType::EcdsaP256, 30).unwrap();
        let dir = self.path(name);
        strait::certs::write_secret(&dir, &ca.issue(leaf).unwrap(), &ca.bundle_pem()).unwrap();
        dir
    }

    /// Issues a server certificate for `host` from a fresh CA, as Secret `name`
    /// (its `ca.crt` is the fresh CA, for the client that must trust it).
    pub fn server_secret(&self, name: &str, host: &str) -> PathBuf {
        let mut leaf = Leaf::new(host, Usage::Server, 30);
        leaf.dns.push(host.into());
        self.foreign(name, &leaf)
    }

    /// A rustls client as the egress is on the cross-cluster hop: it presents the
    /// reference client certificate (`egress`) and trusts the ingress's CA. The good
    /// client a refusal test proves is still served afterwards.
    pub fn egress_client(&self) -> Arc<rustls::ClientConfig> {
        client_config(Some(&self.path("egress")), &self.path("ingress/ca.crt"))
    }
}

fn binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("STRAIT_BIN_DIR").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug"));
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: build first (cargo build --workspace), or set STRAIT_BIN_DIR", path.display());
    path
}

/// Which gateway binary to run.
#[derive(Clone, Copy, Debug)]
pub enum Role {
    /// `strait-egress`.
    Egress,
    /// `strait-ingress`.
    Ingress,
}

impl Role {
    fn binary(self) -> &'static str {
        match self {
            Role::Egress => "strait-egress",
            Role::Ingress => "strait-ingress",
        }
    }
}

/// A running `strait-egress` or `strait-ingress`.
pub struct Gateway {
    /// The process; its log holds the access-log lines.
    pub proc: Proc,
    /// The config file it runs with.
    pub config: PathBuf,
    /// Its admin HTTP port on 127.0.0.1 (a free port picked at start).
    pub admin_port: u16,
}

impl Gateway {
    /// Writes `config` to `dir` and starts the binary; returns once it is ready, which
    /// it says by writing its admin address to `--admin-address-path` (no log scraping).
    pub fn start(role: Role, dir: &Path, config: &str) -> Gateway {
        Gateway::start_under(&[], role, dir, config)
    }

    /// [`Gateway::start`] with the binary run by `wrapper` (a program and its arguments
    /// that then execs it, such as `prlimit --nofile=1024:4096`), so its pid stays the
    /// gateway's.
    pub fn start_under(wrapper: &[&str], role: Role, dir: &Path, config: &str) -> Gateway {
        let name = role.binary();
        let config_path = tempfile::Builder::new().prefix(&format!("{name}-")).suffix(".toml").tempfile_in(dir).unwrap().into_temp_path();
        let config_path = config_path.keep().unwrap();
        std::fs::write(&config_path, config).unwrap();
        let ready_file = config_path.with_extension("admin");
        let mut command = match wrapper.split_first() {
            None => Command::new(binary(name)),
            Some((program, args)) => {
                require(program);
                let mut command = Command::new(program);
                command.args(args).arg(binary(name));
                command
            }
        };
        command.arg("--config").arg(&config_path).arg("--log-level").arg("info,strait=debug");
        command.args(["--admin-address", "127.0.0.1:0", "--health-address", "127.0.0.1:0", "--metrics-address", "127.0.0.1:0"]);
        command.arg("--admin-address-path").arg(&ready_file);
        let mut proc = Proc::spawn(command, config_path.with_extension("log"));
        let deadline = Instant::now() + Duration::from_secs(20);
        let admin = loop {
            if let Ok(address) = std::fs::read_to_string(&ready_file) {
                break address;
            }
            if let Some(status) = proc.try_wait() {
                panic!("{name} exited ({status}) before it was ready:\n{}", proc.output());
            }
            assert!(Instant::now() < deadline, "{name} not ready after 20s:\n{}", proc.output());
            std::thread::sleep(Duration::from_millis(10));
        };
        let admin_port = admin.trim().parse::<SocketAddr>().unwrap_or_else(|e| panic!("{name} wrote {admin:?} as its admin address: {e}")).port();
        Gateway { proc, config: config_path, admin_port }
    }

    /// The port listener `name` is bound to, from `/config_dump` (so a config can say
    /// port 0).
    pub fn port(&self, name: &str) -> u16 {
        let (status, body) = self.admin("GET", "/config_dump");
        assert_eq!(status, 200, "{body}");
        let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
        let address = dump["listeners"][name].as_str().unwrap_or_else(|| panic!("no listener {name:?} in {}", dump["listeners"]));
        address.parse::<SocketAddr>().unwrap().port()
    }

    /// The reference ingress ([`ingress_config`], port 0) in front of
    /// `127.0.0.1:backend_port`; returns it and the port its mutual-TLS listener got.
    pub fn reference_ingress(pki: &Pki, backend_port: u16) -> (Gateway, u16) {
        let gateway = Gateway::start(Role::Ingress, pki.dir.path(), &ingress_config(pki, backend_port).toml());
        let port = gateway.port("mtls");
        (gateway, port)
    }

    /// The process id, for signals.
    pub fn pid(&self) -> u32 {
        self.proc.pid()
    }

    /// `GET` (or `POST`) on the admin port; returns (status code, body).
    pub fn admin(&self, method: &str, path: &str) -> (u16, String) {
        http(self.admin_port, method, path)
    }

    /// The access-log lines written so far.
    pub fn access_log(&self) -> Vec<String> {
        self.proc.output().lines().filter(|l| l.contains("strait::access")).map(str::to_owned).collect()
    }

    /// Waits until the access log holds a line containing every one of `needles`.
    pub fn wait_for_access_line(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(line) = self.access_log().into_iter().find(|l| needles.iter().all(|n| l.contains(n))) {
                return line;
            }
            assert!(Instant::now() < deadline, "no access-log line with {needles:?} in:\n{}", self.proc.output());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its log lines (access log or not) containing `needle`, from the start: which
    /// certificate it loaded, whether a reload was refused.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.proc.output().lines().filter(|l| l.contains(needle)).map(str::to_owned).collect()
    }

    /// Sends `signal` (`"HUP"`, `"TERM"`) with `kill`, as an operator or the kubelet does.
    pub fn signal(&self, signal: &str) {
        let pid = self.pid();
        let status = Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status().unwrap();
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// Waits for the process to exit by itself (after a SIGTERM, say); panics with its
    /// log if it is still running after `limit`.
    pub fn wait_for_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.proc.try_wait() {
                return status;
            }
            assert!(Instant::now() < deadline, "still running {limit:?} later:\n{}", self.proc.output());
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// A minimal HTTP/1.1 request to 127.0.0.1:port (the admin port needs no more).
pub fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").unwrap();
    let response = read_all(&mut stream);
    let status = response.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (status, body)
}

/// Runs a gateway binary to completion with `args`; returns (success, stdout+stderr).
pub fn run_binary(role: Role, args: &[&str]) -> (bool, String) {
    let out = Command::new(binary(role.binary())).args(args).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// A throwaway MariaDB on a loopback port, with user `app`/`app` allowed from anywhere.
pub struct MariaDb {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    socket: PathBuf,
    _proc: Proc,
    _dir: TempDir,
}

impl MariaDb {
    /// Initialises a data directory and starts `mariadbd` on it.
    pub fn start() -> MariaDb {
        let dir = tempfile::tempdir().unwrap();
        let (port, socket, proc) = start_mariadbd(dir.path(), &[]);
        let db = MariaDb { port, socket, _proc: proc, _dir: dir };
        db.root_sql("CREATE USER app@'%' IDENTIFIED BY 'app'; GRANT ALL ON *.* TO app@'%';");
        db
    }

    /// Runs SQL as root over the unix socket: "read it back directly from MariaDB".
    pub fn root_sql(&self, sql: &str) -> String {
        let out = Command::new("mariadb").arg(format!("--socket={}", self.socket.display())).args(["-uroot", "-N", "-B", "-e", sql]).output().unwrap();
        assert!(out.status.success(), "root SQL {sql:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Initialises a MariaDB data directory in `dir` and starts `mariadbd` on it, on a free
/// loopback port and the unix socket `dir/mysqld.sock`, with `extra` arguments (TLS
/// settings, say); returns (port, socket, process) once the port accepts. [`MariaDb`]
/// and [`databases::TlsMariaDb`] differ only in `extra`.
pub(crate) fn start_mariadbd(dir: &Path, extra: &[String]) -> (u16, PathBuf, Proc) {
    // mariadbd takes its port on the command line (`--port=0` means its default, 3306).
    let port = free_port();
    let (mut command, socket) = mariadbd_command(Command::new("mariadbd"), dir, port);
    command.args(extra);
    let proc = Proc::spawn(command, dir.join("mariadbd.log"));
    wait_for_port(port, Duration::from_secs(30));
    (port, socket, proc)
}

/// Initialises a MariaDB data directory in `dir` (with its own tmpdir: parallel installs
/// must not share /tmp's temp tables) and returns `mariadbd` (`program`, so a caller can
/// run it inside a network namespace) set up on it: user root, loopback, `port`, the
/// unix socket `dir/mysqld.sock` (also returned), no binary log, a small buffer pool.
pub(crate) fn mariadbd_command(mut program: Command, dir: &Path, port: u16) -> (Command, PathBuf) {
    require("mariadbd");
    require("mariadb-install-db");
    let (data, tmp) = (dir.join("data"), dir.join("tmp"));
    std::fs::create_dir_all(&tmp).unwrap();
    let install = Command::new("mariadb-install-db")
        .args(["--no-defaults", "--auth-root-authentication-method=socket", "--skip-test-db", "--user=root"])
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--tmpdir={}", tmp.display()))
        .output()
        .unwrap();
    assert!(install.status.success(), "mariadb-install-db failed: {}", String::from_utf8_lossy(&install.stderr));
    let socket = dir.join("mysqld.sock");
    program
        .arg("--no-defaults")
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--tmpdir={}", tmp.display()))
        .arg(format!("--socket={}", socket.display()))
        .arg(format!("--pid-file={}", dir.join("pid").display()))
        .arg(format!("--port={port}"))
        .args(["--bind-address=127.0.0.1", "--user=root", "--skip-log-bin", "--skip-name-resolve", "--innodb-buffer-pool-size=16M"]);
    (program, socket)
}

/// Runs SQL with the real `mariadb` client over plain TCP (no TLS: the gateway pair
/// provides it) to `127.0.0.1:port`.
pub fn mariadb_sql(port: u16, sql: &str) -> Result<String, String> {
    require("mariadb");
    let out = Command::new("mariadb")
        .args(["-h", "127.0.0.1", "-P", &port.to_string(), "-uapp", "-papp", "--skip-ssl", "--connect-timeout=10", "-N", "-B", "-e", sql])
        .output()
        .unwrap();
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The tutorial's SQL, through whatever plain port leads to MariaDB.
pub const TUTORIAL_SQL: &str = "CREATE DATABASE IF NOT EXISTS test_encrypted_connection; \
    CREATE TABLE IF NOT EXISTS test_encrypted_connection.message (id INT, content VARCHAR(255)); \
    INSERT INTO test_encrypted_connection.message VALUES (1, 'Crypto Hi');";

/// A TCP echo server on a loopback port (a thread per connection; echoes until EOF,
/// then closes its write side).
pub struct EchoServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl EchoServer {
    /// Starts it; it lives until the test process ends.
    pub fn start() -> EchoServer {
        let port = serve_each(|stream| {
            let mut reader = stream.try_clone().unwrap();
            let mut writer = stream;
            let _ = std::io::copy(&mut reader, &mut writer);
            let _ = writer.shutdown(std::net::Shutdown::Write);
        });
        EchoServer { port }
    }
}

/// Accepts on a fresh loopback port and hands every connection to `handle` on a thread
/// of its own; returns the port. The loop every in-process test server (echo, digest,
/// fake database, OTLP receiver) runs; it lives until the test process ends.
pub fn serve_each(handle: impl Fn(TcpStream) + Send + Sync + 'static) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let handle = handle.clone();
            std::thread::spawn(move || handle(stream));
        }
    });
    port
}

/// Reads all of `stream` into a string (for small replies).
pub fn read_all(mut stream: impl Read) -> String {
    let mut out = String::new();
    let _ = BufReader::new(&mut stream).read_to_string(&mut out);
    out
}

/// Reads lines from a child's output until one contains `needle` (for s_client).
pub fn first_line_with(reader: impl Read, needle: &str) -> Option<String> {
    BufReader::new(reader).lines().map_while(Result::ok).find(|l| l.contains(needle))
}

/// A plain TCP connection to `127.0.0.1:port` whose reads give up after 10 s: for a
/// test that holds a connection open across a reload or a drain.
pub fn open_connection(port: u16) -> TcpStream {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream
}

/// Writes `line` on an open connection to an echo backend and asserts the same bytes
/// come back: the connection still carries data both ways.
pub fn echo_line(stream: &mut TcpStream, line: &[u8]) {
    stream.write_all(line).unwrap();
    let mut echoed = vec![0u8; line.len()];
    stream.read_exact(&mut echoed).unwrap();
    assert_eq!(echoed, line);
}

/// Whether new connections to `127.0.0.1:port` are refused, waiting up to 2 s for a
/// listener that was just told to stop (by a reload or a SIGTERM) to close its socket.
pub fn refuses(port: u16) -> bool {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return true,
            _ if Instant::now() > deadline => return false,
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Sends `message` over plain TCP to `127.0.0.1:port`, half-closes, and returns all that
/// came back before the far end closed; every read and write gives up after `limit`.
pub fn exchange_within(port: u16, message: &[u8], limit: Duration) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(limit))?;
    stream.set_write_timeout(Some(limit))?;
    stream.write_all(message)?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply)?;
    Ok(reply)
}

/// [`exchange_within`] 10 s: one plaintext client of an egress plain port or a
/// permissive port, through to an echo backend and back.
pub fn plain_exchange(port: u16, message: &[u8]) -> std::io::Result<Vec<u8>> {
    exchange_within(port, message, Duration::from_secs(10))
}

/// A rustls client config presenting the Secret at `secret` and trusting `ca`.
pub fn client_config(secret: Option<&Path>, ca: &Path) -> Arc<rustls::ClientConfig> {
    let roots = strait::tls::load_roots(ca).unwrap();
    let builder =
        rustls::ClientConfig::builder_with_provider(strait::tls::provider()).with_safe_default_protocol_versions().unwrap().with_root_certificates(roots);
    let config = match secret {
        Some(dir) => {
            let chain = strait::tls::load_certs(&dir.join("tls.crt")).unwrap();
            let key = strait::tls::load_key(&dir.join("tls.key")).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// Connects with TLS to `127.0.0.1:port` sending `sni`; the handshake's result.
pub fn tls_connect(port: u16, sni: &str, config: Arc<rustls::ClientConfig>) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let tcp = TcpStream::connect(SocketAddr::from(([127, 0, 0, 1], port)))?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let name = rustls_pki_types::ServerName::try_from(sni.to_owned()).map_err(std::io::Error::other)?;
    let connection = rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
    let mut stream = rustls::StreamOwned::new(connection, tcp);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock)?;
    }
    // In TLS 1.3 a refused client certificate shows up on the first read; make it show now.
    stream.conn.complete_io(&mut stream.sock).ok();
    Ok(stream)
}

/// The reference pair on loopback: egress (plain port + mesh port) -> mTLS -> ingress
/// -> `backend_port`, with the reference PKI.
pub struct Pair {
    /// The egress process.
    pub egress: Gateway,
    /// The ingress process.
    pub ingress: Gateway,
    /// Egress plain listener (the app's `egress:3306`).
    pub plain_port: u16,
    /// Egress mesh listener (15443 in production).
    pub mesh_port: u16,
    /// Ingress TLS listener (13306 in production).
    pub ingress_port: u16,
}

/// The reference ingress's listener: `mtls`, mutual TLS with the Secret `secret` (the
/// server credential, whose `ca.crt` verifies clients), on port 0.
pub fn ingress_listener(secret: &Path) -> Listener {
    Listener::mutual("mtls", secret)
}

/// Ingress config: one mutual-TLS listener (`mtls`, port 0) with the reference server
/// credential, routing [`SERVICE_HOST`] (route `mysql`) to `127.0.0.1:backend_port`.
pub fn ingress_config(pki: &Pki, backend_port: u16) -> Config {
    ingress_config_with(ingress_listener(&pki.path("ingress")), backend_port)
}

/// [`ingress_config`] with another listener: the reference one on another Secret (a
/// test that rotates or breaks the credential) or another address.
pub fn ingress_config_with(listener: Listener, backend_port: u16) -> Config {
    Config::new().listener(listener).route(Route::to("mysql", backend_port).hosts(&[SERVICE_HOST]))
}

/// Egress config: a plain listener (`mysql-plain`) and a mesh listener (`mesh`), both on
/// port 0 and both to route `to-ingress`, which originates mTLS to `upstream` with SNI
/// [`SERVICE_HOST`]. Add a `[resolver]` or `[telemetry]` table with [`Config::raw`].
pub fn egress_config(pki: &Pki, upstream: &str) -> Config {
    Config::new()
        .listener(Listener::plain("mysql-plain", "to-ingress"))
        .listener(Listener::mutual("mesh", &pki.path("mesh/egress")))
        .route(Route::new("to-ingress", upstream).hosts(&[SERVICE_HOST]).mutual_origination(&pki.path("egress"), SERVICE_HOST))
}

impl Pair {
    /// Starts ingress then egress in front of `backend_port`.
    pub fn start(pki: &Pki, backend_port: u16) -> Pair {
        let (ingress, ingress_port) = Gateway::reference_ingress(pki, backend_port);
        let upstream = format!("127.0.0.1:{ingress_port}");
        let egress = Gateway::start(Role::Egress, pki.dir.path(), &egress_config(pki, &upstream).toml());
        let (plain_port, mesh_port) = (egress.port("mysql-plain"), egress.port("mesh"));
        Pair { egress, ingress, plain_port, mesh_port, ingress_port }
    }
}

pub mod config;
pub mod databases;
pub mod digest;
pub mod dns;
pub mod envoy;
pub mod haproxy;
pub mod hbone;
pub mod hostile;
pub mod http_ports;
pub mod kube_secret;
pub mod netns;
pub mod otlp;
pub mod prometheus;
pub mod redis;
