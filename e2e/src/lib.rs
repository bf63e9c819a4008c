//! Fixtures for the end-to-end tests: certificates, the real binaries, real servers.
//!
//! Every server a test needs is started here, on loopback, and stopped when its guard
//! drops. A missing server binary is a test failure with the install command in the
//! message, never a skip.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strait::certs::{Authority, KeyType, Leaf, ReferenceOptions, Usage};

pub use tempfile::TempDir;

/// The `$SERVICE_URL` of the tests: the ingress's name, SNI on the cross-cluster hop.
pub const SERVICE_HOST: &str = "db.strait.test";

/// A loopback port nobody is listening on right now.
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
        let options = ReferenceOptions {
            host: SERVICE_HOST.into(),
            trust_domain: "cluster.local".into(),
            days: 30,
            key_type: KeyType::EcdsaP256,
        };
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
}

fn binary(name: &str) -> PathBuf {
    let dir = std::env::var_os("STRAIT_BIN_DIR").map(PathBuf::from).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug")
    });
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
    /// Writes `config` to `dir` and starts the binary; returns once it logs `ready`.
    pub fn start(role: Role, dir: &Path, config: &str) -> Gateway {
        let name = role.binary();
        let config_path = dir.join(format!("{name}-{}.toml", free_port()));
        std::fs::write(&config_path, config).unwrap();
        let mut command = Command::new(binary(name));
        command.arg("--config").arg(&config_path).arg("--log-level").arg("info,strait=debug");
        command.args(["--admin-address", "127.0.0.1:0"]);
        let mut proc = Proc::spawn(command, config_path.with_extension("log"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while !proc.output().contains(" ready") {
            if let Some(status) = proc.try_wait() {
                panic!("{name} exited ({status}) before it was ready:\n{}", proc.output());
            }
            assert!(Instant::now() < deadline, "{name} not ready after 20s:\n{}", proc.output());
            std::thread::sleep(Duration::from_millis(20));
        }
        let output = proc.output();
        let admin_port = output
            .lines()
            .find(|l| l.contains("admin listening"))
            .and_then(|l| l.split("address=").nth(1))
            .and_then(|a| a.split_whitespace().next())
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{name} logged no admin address:\n{output}"));
        Gateway { proc, config: config_path, admin_port }
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
}

/// A minimal HTTP/1.1 request to 127.0.0.1:port (the admin port needs no more).
pub fn http(port: u16, method: &str, path: &str) -> (u16, String) {
    use std::io::Write;
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
        require("mariadbd");
        require("mariadb-install-db");
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let install = Command::new("mariadb-install-db")
            .args(["--no-defaults", "--auth-root-authentication-method=socket", "--skip-test-db", "--user=root"])
            .arg(format!("--datadir={}", data.display()))
            .output()
            .unwrap();
        assert!(install.status.success(), "mariadb-install-db failed: {}", String::from_utf8_lossy(&install.stderr));
        let port = free_port();
        let socket = dir.path().join("mysqld.sock");
        let mut command = Command::new("mariadbd");
        command
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .arg(format!("--port={port}"))
            .args(["--bind-address=127.0.0.1", "--user=root", "--skip-log-bin", "--skip-name-resolve", "--innodb-buffer-pool-size=16M"]);
        let proc = Proc::spawn(command, dir.path().join("mariadbd.log"));
        wait_for_port(port, Duration::from_secs(30));
        let db = MariaDb { port, socket, _proc: proc, _dir: dir };
        db.root_sql("CREATE USER app@'%' IDENTIFIED BY 'app'; GRANT ALL ON *.* TO app@'%';");
        db
    }

    /// Runs SQL as root over the unix socket: "read it back directly from MariaDB".
    pub fn root_sql(&self, sql: &str) -> String {
        let out = Command::new("mariadb")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-uroot", "-N", "-B", "-e", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "root SQL {sql:?} failed: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
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
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut reader = stream.try_clone().unwrap();
                    let mut writer = stream;
                    let _ = std::io::copy(&mut reader, &mut writer);
                    let _ = writer.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        EchoServer { port }
    }
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

/// A rustls client config presenting the Secret at `secret` and trusting `ca`.
pub fn client_config(secret: Option<&Path>, ca: &Path) -> Arc<rustls::ClientConfig> {
    let roots = strait::tls::load_roots(ca).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(strait::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
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
pub fn tls_connect(
    port: u16,
    sni: &str,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
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

/// Ingress config: one mutual-TLS listener on `port` routing [`SERVICE_HOST`] to
/// `127.0.0.1:backend_port`.
pub fn ingress_config(pki: &Pki, port: u16, backend_port: u16) -> String {
    format!(
        r#"
[[listener]]
name = "mtls"
address = "127.0.0.1:{port}"
tls = {{ mode = "mutual", dir = "{secret}" }}

[[route]]
name = "mysql"
hosts = ["{SERVICE_HOST}"]
upstream = "127.0.0.1:{backend_port}"
"#,
        secret = pki.path("ingress").display()
    )
}

/// Egress config: a plain listener and a mesh listener, both to the route that
/// originates mTLS to `upstream` with SNI [`SERVICE_HOST`]. `extra` is appended
/// (a `[resolver]` table, say).
pub fn egress_config(pki: &Pki, plain_port: u16, mesh_port: u16, upstream: &str, extra: &str) -> String {
    format!(
        r#"
[[listener]]
name = "mysql-plain"
address = "127.0.0.1:{plain_port}"
route = "to-ingress"

[[listener]]
name = "mesh"
address = "127.0.0.1:{mesh_port}"
tls = {{ mode = "mutual", dir = "{mesh}" }}

[[route]]
name = "to-ingress"
hosts = ["{SERVICE_HOST}"]
upstream = "{upstream}"
upstream_tls = {{ mode = "mutual", dir = "{client}", sni = "{SERVICE_HOST}" }}
{extra}
"#,
        mesh = pki.path("mesh/egress").display(),
        client = pki.path("egress").display(),
    )
}

impl Pair {
    /// Starts ingress then egress in front of `backend_port`.
    pub fn start(pki: &Pki, backend_port: u16) -> Pair {
        let (plain_port, mesh_port, ingress_port) = (free_port(), free_port(), free_port());
        let ingress = Gateway::start(Role::Ingress, pki.dir.path(), &ingress_config(pki, ingress_port, backend_port));
        let upstream = format!("127.0.0.1:{ingress_port}");
        let egress = Gateway::start(Role::Egress, pki.dir.path(), &egress_config(pki, plain_port, mesh_port, &upstream, ""));
        Pair { egress, ingress, plain_port, mesh_port, ingress_port }
    }
}

pub mod digest;
pub mod dns;
pub mod redis;
pub mod kube_secret;
pub mod hostile;
pub mod otlp;
pub mod databases;
