//! Fixtures for the database-aware TLS tests: a MariaDB that speaks only TLS and wants
//! client certificates, PostgreSQL with TLS and certificate authentication or plain,
//! the real clients (`mariadb`, `psql`) bounded in time, a CA that issues a server
//! certificate for `localhost` (the name a native client verifies when it connects to a
//! loopback gateway), and small fake servers for hostile-peer tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::process::{Child, ChildStdin};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strait::certs::{Authority, KeyType, Leaf, Usage};

use crate::{free_port, require, serve_each, start_mariadbd, Pki, Proc, TempDir};

/// What a real client did: exit status, its output, and how long it ran.
#[derive(Debug)]
pub struct ClientRun {
    /// Exit status 0.
    pub success: bool,
    /// Killed by the time bound instead of ending by itself.
    pub timed_out: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Wall-clock time from start to exit.
    pub took: Duration,
}

impl ClientRun {
    /// Stdout, panicking with everything the client said if it failed.
    pub fn expect_ok(&self, what: &str) -> &str {
        assert!(self.success, "{what} failed after {:?}:\nstdout: {}\nstderr: {}", self.took, self.stdout, self.stderr);
        &self.stdout
    }

    /// Stderr, panicking if the client succeeded or had to be killed: a refusal must
    /// be an error the client reports, and reports by itself.
    pub fn expect_refused(&self, what: &str) -> &str {
        assert!(!self.timed_out, "{what}: the client hung until killed after {:?}:\n{}", self.took, self.stderr);
        assert!(!self.success, "{what} was served although it must be refused:\n{}", self.stdout);
        &self.stderr
    }
}

/// Longest any client run may take before `timeout` kills it.
const CLIENT_LIMIT_SECS: u64 = 30;

/// Runs `command` under `timeout`, so a hung handshake fails the test instead of
/// hanging it.
pub fn run_bounded(command: &Command) -> ClientRun {
    let mut bounded = Command::new("timeout");
    bounded.args(["--kill-after=5", &CLIENT_LIMIT_SECS.to_string()]).arg(command.get_program()).args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(v) => bounded.env(key, v),
            None => bounded.env_remove(key),
        };
    }
    let start = Instant::now();
    let out = bounded.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    ClientRun {
        success: out.status.success(),
        timed_out: matches!(out.status.code(), Some(124) | Some(137)),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: start.elapsed(),
    }
}

/// The real `mariadb` client with `args` (no option files read), bounded in time.
pub fn mariadb(args: &[&str]) -> ClientRun {
    require("mariadb");
    let mut command = Command::new("mariadb");
    command.arg("--no-defaults").arg("--connect-timeout=10").args(args);
    run_bounded(&command)
}

/// `mariadb --skip-ssl` as `user`/`password` to `127.0.0.1:port`, running `sql`
/// (batch mode, no column names).
pub fn mariadb_plain(port: u16, user: &str, password: &str, sql: &str) -> ClientRun {
    mariadb(&["-h", "127.0.0.1", "-P", &port.to_string(), "-u", user, &format!("-p{password}"), "--skip-ssl", "-N", "-B", "-e", sql])
}

/// The real `psql` with connection string `conninfo` running `sql` (unaligned,
/// tuples only, no psqlrc), bounded in time.
pub fn psql(conninfo: &str, sql: &str) -> ClientRun {
    run_bounded(&psql_command(conninfo, sql))
}

/// The `psql` command [`psql`] runs, for a test that must signal it while it runs.
pub fn psql_command(conninfo: &str, sql: &str) -> Command {
    require("psql");
    let mut command = Command::new("psql");
    command.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", sql]);
    command.env("PGCONNECT_TIMEOUT", "10");
    // No ~/.postgresql client certificate may sneak into a "no certificate" test.
    command.env("HOME", "/nonexistent");
    command
}

/// A CA the test owns, a server certificate for `localhost` and a client certificate:
/// what a native client needs to verify a loopback gateway (`verify-full`,
/// `--ssl-verify-server-cert`) and to present itself.
pub struct LocalhostPki {
    /// Secret with the server certificate (DNS SAN `localhost`); `ca.crt` is the CA,
    /// which also verifies client certificates at the gateway.
    pub server: PathBuf,
    /// Secret with the client certificate (CN and DNS SAN `db-client.strait.test`).
    pub client: PathBuf,
    /// Secret with another client certificate from the same CA (CN and DNS SAN
    /// `intruder.strait.test`): verified, but not on any allow list.
    pub intruder: PathBuf,
    /// The CA certificate a client trusts.
    pub ca: PathBuf,
}

/// Identity of [`LocalhostPki::client`], as the access log shows it.
pub const LOCALHOST_CLIENT: &str = "db-client.strait.test";

impl LocalhostPki {
    /// Issues both credentials from a fresh CA into `pki`'s directory, under `name/`.
    pub fn issue(pki: &Pki, name: &str) -> LocalhostPki {
        let ca = Authority::root("Strait database test CA", KeyType::EcdsaP256, 30).unwrap();
        let root = pki.path(name);
        let mut server = Leaf::new("localhost", Usage::Server, 30);
        server.dns.push("localhost".into());
        strait::certs::write_secret(&root.join("server"), &ca.issue(&server).unwrap(), &ca.bundle_pem()).unwrap();
        let mut client = Leaf::new(LOCALHOST_CLIENT, Usage::Client, 30);
        client.dns.push(LOCALHOST_CLIENT.into());
        strait::certs::write_secret(&root.join("client"), &ca.issue(&client).unwrap(), &ca.bundle_pem()).unwrap();
        let mut intruder = Leaf::new("intruder.strait.test", Usage::Client, 30);
        intruder.dns.push("intruder.strait.test".into());
        strait::certs::write_secret(&root.join("intruder"), &ca.issue(&intruder).unwrap(), &ca.bundle_pem()).unwrap();
        LocalhostPki { server: root.join("server"), client: root.join("client"), intruder: root.join("intruder"), ca: root.join("server/ca.crt") }
    }
}

/// A MariaDB on a loopback port that accepts only TLS (`require_secure_transport=ON`)
/// and can verify client certificates, for users created `REQUIRE X509`.
pub struct TlsMariaDb {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    socket: PathBuf,
    /// The server process; its log is MariaDB's error log.
    pub proc: Proc,
    _dir: TempDir,
}

impl TlsMariaDb {
    /// Starts MariaDB with the certificate in Secret `server` and `client_ca` to verify
    /// client certificates. No users beyond root (unix socket) exist yet.
    pub fn start(server: &Path, client_ca: &Path) -> TlsMariaDb {
        let dir = tempfile::tempdir().unwrap();
        let tls = [
            format!("--ssl-cert={}", server.join("tls.crt").display()),
            format!("--ssl-key={}", server.join("tls.key").display()),
            format!("--ssl-ca={}", client_ca.display()),
            "--require-secure-transport=ON".to_owned(),
        ];
        let (port, socket, proc) = start_mariadbd(dir.path(), &tls);
        let db = TlsMariaDb { port, socket, proc, _dir: dir };
        let ssl = db.root_sql("SELECT @@have_ssl");
        assert_eq!(ssl.trim(), "YES", "MariaDB did not enable TLS:\n{}", db.proc.output());
        db
    }

    /// Runs SQL as root over the unix socket (bypassing TLS and the gateway).
    pub fn root_sql(&self, sql: &str) -> String {
        let run = mariadb(&[&format!("--socket={}", self.socket.display()), "-uroot", "-N", "-B", "-e", sql]);
        run.expect_ok(&format!("root SQL {sql:?}")).to_owned()
    }
}

/// The subject of the certificate in `cert` the way MariaDB compares `REQUIRE SUBJECT`
/// (OpenSSL's one-line form, e.g. `/CN=client.db.strait.test/O=Strait demo`).
pub fn openssl_subject(cert: &Path) -> String {
    require("openssl");
    let out = Command::new("openssl").args(["x509", "-noout", "-subject", "-nameopt", "compat", "-in"]).arg(cert).output().unwrap();
    assert!(out.status.success(), "openssl x509 failed: {}", String::from_utf8_lossy(&out.stderr));
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    line.strip_prefix("subject=").unwrap_or(&line).trim().to_owned()
}

/// How a [`Postgres`] speaks to TCP clients.
pub enum PgTls<'a> {
    /// `ssl=off`, and `host all all 127.0.0.1/32 trust`: plaintext only, any user.
    Off,
    /// `ssl=on` with Secret `server`'s certificate, and only
    /// `hostssl all all 127.0.0.1/32 cert clientcert=verify-full`: TLS with a client
    /// certificate chaining to `client_ca`, whose CN is the user name.
    ClientCertRequired {
        /// Secret (tls.crt, tls.key) the server presents.
        server: &'a Path,
        /// CA bundle that verifies client certificates.
        client_ca: &'a Path,
    },
}

/// A throwaway PostgreSQL on a loopback port, running as the `postgres` system user
/// (it refuses to run as root). Stopped (fast shutdown, then SIGKILL) when dropped.
pub struct Postgres {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    socket_dir: PathBuf,
    /// The server process; its log is PostgreSQL's log.
    pub proc: Proc,
    _dir: TempDir,
}

/// Directory of the PostgreSQL server binaries (Debian keeps them off PATH).
fn pg_bin(program: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> =
        std::fs::read_dir("/usr/lib/postgresql").map(|entries| entries.flatten().map(|e| e.path().join("bin")).collect()).unwrap_or_default();
    dirs.sort();
    let found = dirs.into_iter().rev().map(|d| d.join(program)).find(|p| p.exists());
    found.unwrap_or_else(|| panic!("PostgreSQL's `{program}` is not installed: run e2e/install-deps.sh (apt-get install postgresql)"))
}

/// uid and gid of the `postgres` system user.
fn postgres_user() -> (u32, u32) {
    let id = |flag: &str| {
        let out = Command::new("id").args([flag, "postgres"]).output().unwrap();
        assert!(out.status.success(), "no `postgres` system user: run e2e/install-deps.sh (apt-get install postgresql)");
        String::from_utf8_lossy(&out.stdout).trim().parse::<u32>().unwrap()
    };
    (id("-u"), id("-g"))
}

impl Postgres {
    /// Initialises a cluster and starts it with `tls`; returns once it answers queries.
    pub fn start(tls: PgTls<'_>) -> Postgres {
        require("psql");
        let (uid, gid) = postgres_user();
        let dir = tempfile::tempdir().unwrap();
        let own = |path: &Path| std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
        own(dir.path());
        let data = dir.path().join("data");
        let initdb = Command::new(pg_bin("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync"])
            .current_dir(dir.path())
            .uid(uid)
            .gid(gid)
            .output()
            .unwrap();
        assert!(initdb.status.success(), "initdb failed: {}{}", String::from_utf8_lossy(&initdb.stdout), String::from_utf8_lossy(&initdb.stderr));

        // postgres takes its port on the command line and has no port 0.
        let port = free_port();
        let mut command = Command::new(pg_bin("postgres"));
        command
            .arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir.path())
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "shared_buffers=16MB", "-c", "max_connections=20"])
            .current_dir(dir.path())
            .uid(uid)
            .gid(gid);
        let hba = match tls {
            PgTls::Off => {
                command.args(["-c", "ssl=off"]);
                "local all all trust\nhost all all 127.0.0.1/32 trust\n"
            }
            PgTls::ClientCertRequired { server, client_ca } => {
                // The key must belong to the server's user and be private to it.
                let files = dir.path().join("tls");
                std::fs::create_dir(&files).unwrap();
                own(&files);
                for (from, to) in [(server.join("tls.crt"), "server.crt"), (server.join("tls.key"), "server.key"), (client_ca.to_owned(), "ca.crt")] {
                    let target = files.join(to);
                    std::fs::copy(&from, &target).unwrap();
                    own(&target);
                }
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(files.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
                command.args(["-c", "ssl=on"]);
                command.arg("-c").arg(format!("ssl_cert_file={}", files.join("server.crt").display()));
                command.arg("-c").arg(format!("ssl_key_file={}", files.join("server.key").display()));
                command.arg("-c").arg(format!("ssl_ca_file={}", files.join("ca.crt").display()));
                "local all all trust\nhostssl all all 127.0.0.1/32 cert clientcert=verify-full\n"
            }
        };
        let hba_file = data.join("pg_hba.conf");
        std::fs::write(&hba_file, hba).unwrap();
        own(&hba_file);

        let log = dir.path().join("postgres.log");
        let proc = Proc::spawn(command, log.clone());
        own(&log);
        let pg = Postgres { port, socket_dir: dir.path().to_owned(), proc, _dir: dir };
        pg.wait_ready();
        pg
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.try_sql("SELECT 1").is_ok() {
                return;
            }
            assert!(Instant::now() < deadline, "PostgreSQL not ready after 30s:\n{}", self.proc.output());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn try_sql(&self, sql: &str) -> Result<String, String> {
        let mut command = Command::new("psql");
        command.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-U", "postgres", "-d", "postgres", "-h"]).arg(&self.socket_dir).args([
            "-p",
            &self.port.to_string(),
            "-c",
            sql,
        ]);
        let run = run_bounded(&command);
        if run.success {
            Ok(run.stdout)
        } else {
            Err(run.stderr)
        }
    }

    /// Runs SQL as the superuser over the unix socket (bypassing TLS and the gateway).
    pub fn superuser_sql(&self, sql: &str) -> String {
        self.try_sql(sql).unwrap_or_else(|e| panic!("superuser SQL {sql:?} failed: {e}"))
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // Fast shutdown lets the server remove its shared memory and socket; SIGKILL
        // (the Proc's own drop) only if it does not stop in time.
        let _ = Command::new("kill").args(["-INT", &self.proc.pid().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.proc.try_wait().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// A fake database server on a loopback port: every accepted connection is handed to
/// `script` on its own thread. Lives until the test process ends.
pub struct FakeServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl FakeServer {
    /// Starts accepting; `script` plays the server's side of one connection.
    pub fn start(script: fn(TcpStream)) -> FakeServer {
        let port = serve_each(move |stream| {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
            script(stream)
        });
        FakeServer { port }
    }
}

/// Reads until the peer closes (or errors), discarding: a fake server that holds its
/// side open so that any close comes from the gateway.
pub fn drain(mut stream: TcpStream) {
    let mut buffer = [0u8; 4096];
    while matches!(stream.read(&mut buffer), Ok(n) if n > 0) {}
}

/// A PostgreSQL SSLRequest (length 8, code 80877103).
pub const PG_SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A MySQL SSL request packet (sequence id 1, 32-byte payload: 4.1 protocol, secure
/// connection, SSL).
pub fn mysql_ssl_request() -> Vec<u8> {
    let caps: u32 = 0x0000_0200 | 0x0000_0800 | 0x0000_8000 | 0x0008_0000;
    let mut payload = caps.to_le_bytes().to_vec();
    payload.extend_from_slice(&(16u32 << 20).to_le_bytes());
    payload.push(33);
    payload.extend_from_slice(&[0; 23]);
    let mut packet = vec![32, 0, 0, 1];
    packet.extend(payload);
    packet
}

/// Reads one MySQL packet (header and payload) from `stream`, within 10 s.
pub fn read_mysql_packet(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut header = [0u8; 4];
    stream.read_exact(&mut header)?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload)?;
    let mut packet = header.to_vec();
    packet.extend(payload);
    Ok(packet)
}

/// The server version in a MySQL protocol greeting (3-byte length, sequence id,
/// protocol version 10, NUL-terminated version string) at the start of `bytes`, once
/// the whole packet is there; `None` while part of it is still missing.
pub fn mysql_greeting_version(bytes: &[u8]) -> Option<String> {
    let header = bytes.get(..4)?;
    let length = usize::from(header[0]) | usize::from(header[1]) << 8 | usize::from(header[2]) << 16;
    let payload = bytes.get(4..4 + length)?;
    assert_eq!(payload[0], 0x0a, "protocol version 10 opens a MariaDB greeting: {bytes:02x?}");
    let end = payload[1..].iter().position(|&b| b == 0).expect("the version string is NUL-terminated");
    Some(String::from_utf8_lossy(&payload[1..1 + end]).into_owned())
}

/// Reads the first MySQL protocol packet from `stream` and returns the server version
/// in it (see [`mysql_greeting_version`]); the stream's read timeout bounds the wait.
pub fn read_mysql_greeting(stream: &mut impl Read) -> String {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(version) = mysql_greeting_version(&bytes) {
            return version;
        }
        let n = stream.read(&mut chunk).unwrap_or_else(|e| panic!("reading the greeting: {e}; got {bytes:02x?}"));
        assert!(n > 0, "the stream ended before a whole greeting: {bytes:02x?}");
        bytes.extend_from_slice(&chunk[..n]);
    }
}

/// Connects to `127.0.0.1:port` and sends `bytes` in one write.
pub fn connect_and_send(port: u16, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.write_all(bytes).unwrap();
    stream
}

/// A long-lived interactive `mariadb` session (user `app`) to `127.0.0.1:port`:
/// statements go to its stdin, its output is collected as it comes; it never
/// reconnects, so a cut connection shows. Killed on drop.
pub struct MariaDbSession {
    child: Child,
    stdin: Option<ChildStdin>,
    output: Arc<Mutex<String>>,
}

impl MariaDbSession {
    /// Starts `mariadb` with `extra` arguments (`--skip-ssl`, or TLS options).
    pub fn open(port: u16, extra: &[&str]) -> MariaDbSession {
        require("mariadb");
        let mut child = std::process::Command::new("mariadb")
            .args([
                "-h",
                "127.0.0.1",
                "--protocol=TCP",
                "-P",
                &port.to_string(),
                "-uapp",
                "-papp",
                "--skip-reconnect",
                "--connect-timeout=10",
                "-N",
                "-B",
                "-n",
            ])
            .args(extra)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let output = Arc::new(Mutex::new(String::new()));
        for pipe in [Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>, Box::new(child.stderr.take().unwrap())] {
            let output = output.clone();
            std::thread::spawn(move || {
                for line in std::io::BufRead::lines(std::io::BufReader::new(pipe)).map_while(Result::ok) {
                    output.lock().unwrap().push_str(&(line + "\n"));
                }
            });
        }
        MariaDbSession { stdin: child.stdin.take(), child, output }
    }

    /// Runs `SELECT '<tag>'` and waits (10 s at most) for the answer; the output so far
    /// when it fails.
    pub fn select(&mut self, tag: &str) -> Result<(), String> {
        let sent = self.stdin.as_mut().map(|s| writeln!(s, "SELECT '{tag}';").and_then(|()| s.flush()));
        if !matches!(sent, Some(Ok(()))) {
            return Err(format!("the client is gone: {}", self.output()));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = self.output();
            if out.lines().any(|l| l == tag) {
                return Ok(());
            }
            if out.contains("ERROR") || self.child.try_wait().unwrap().is_some() {
                return Err(out);
            }
            if Instant::now() > deadline {
                return Err(format!("no answer within 10 s: {out}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Everything it printed so far, stdout and stderr.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for MariaDbSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
