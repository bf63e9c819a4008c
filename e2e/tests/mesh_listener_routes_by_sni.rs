//! The tutorial's SQL through the egress's mesh listener: an in-mesh workload opens
//! mutual TLS with its SPIFFE certificate and SNI `db.strait.test`, the egress routes
//! the stream by that SNI, originates mTLS to the ingress, and MariaDB answers.
//!
//! The `mariadb` CLI cannot present a client certificate with SNI the way a sidecar
//! does, so `openssl s_client` is the TLS client: once on its own (the server greeting
//! must come back through it), and once as the sidecar in front of the real `mariadb`
//! client, which then runs the tutorial's SQL. The rustls client reads the greeting too.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use strait_e2e::databases::mysql_greeting_version;
use strait_e2e::*;

const WORKLOAD_ID: &str = "spiffe://cluster.local/ns/default/sa/client";

/// `openssl s_client` as the mesh workload: its SPIFFE certificate (Secret
/// `workload`), SNI [`SERVICE_HOST`], the mesh CA to verify the egress, and raw bytes
/// on stdin/stdout.
fn s_client(workload: &Path, mesh_ca: &Path, mesh_port: u16) -> Command {
    require("openssl");
    let mut command = Command::new("openssl");
    command
        .args(["s_client", "-connect", &format!("127.0.0.1:{mesh_port}"), "-servername", SERVICE_HOST])
        .arg("-cert")
        .arg(workload.join("tls.crt"))
        .arg("-key")
        .arg(workload.join("tls.key"))
        .arg("-CAfile")
        .arg(mesh_ca)
        .args(["-verify_hostname", SERVICE_HOST, "-verify_return_error", "-quiet", "-nocommands"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    command
}

/// Reads `source` until a whole greeting has arrived, for at most ten seconds (a
/// thread reads, since s_client's stdout has no read timeout); returns its version.
fn read_greeting(mut source: impl Read + Send + 'static) -> String {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        while let Ok(n @ 1..) = source.read(&mut chunk) {
            if tx.send(chunk[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut bytes = Vec::new();
    loop {
        if let Some(version) = mysql_greeting_version(&bytes) {
            assert_eq!(bytes[3], 0, "the greeting is the first packet of the stream: {bytes:02x?}");
            return version;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => bytes.extend(chunk),
            Err(e) => panic!("no whole MariaDB greeting within 10s ({e}); got {bytes:02x?}"),
        }
    }
}

/// A local plain port in front of `openssl s_client`, one s_client per connection:
/// the sidecar that lets the real `mariadb` client reach the mesh listener.
struct Sidecar {
    port: u16,
    children: Arc<Mutex<Vec<Child>>>,
}

impl Sidecar {
    fn start(pki: &Pki, mesh_port: u16) -> Sidecar {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let children = Arc::new(Mutex::new(Vec::new()));
        let (workload, mesh_ca) = (pki.path("mesh/client"), pki.path("mesh/egress/ca.crt"));
        let spawned = children.clone();
        std::thread::spawn(move || {
            for tcp in listener.incoming().flatten() {
                let mut child = s_client(&workload, &mesh_ca, mesh_port).spawn().expect("start openssl s_client");
                let stdin = child.stdin.take().unwrap();
                let stdout = child.stdout.take().unwrap();
                spawned.lock().unwrap().push(child);
                std::thread::spawn(move || pump(tcp, stdin, stdout));
            }
        });
        Sidecar { port, children }
    }
}

/// Copies the client's bytes into s_client and s_client's output to the client. s_client's
/// stdin is held open until the server side ends, so s_client waits for the server's
/// close instead of reacting to an EOF on stdin.
fn pump(tcp: TcpStream, mut stdin: std::process::ChildStdin, mut stdout: ChildStdout) {
    let mut from_client = tcp.try_clone().unwrap();
    let up = std::thread::spawn(move || {
        copy(&mut from_client, &mut stdin);
        stdin
    });
    let mut to_client = tcp;
    copy(&mut stdout, &mut to_client);
    let _ = to_client.shutdown(std::net::Shutdown::Both);
    drop(up.join());
}

/// Copies until EOF or an error, a buffer at a time. Not `std::io::copy`: between a pipe
/// and a socket it uses splice(2), which can leave a small reply (MariaDB's 11-byte OK
/// packet) corked in the socket, and the client then times out waiting for it.
fn copy(from: &mut impl Read, to: &mut impl Write) {
    let mut buffer = [0u8; 16 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buffer) {
        if to.write_all(&buffer[..n]).and_then(|()| to.flush()).is_err() {
            return;
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        for child in self.children.lock().unwrap().iter_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn mesh_workload_reaches_mariadb_through_the_mesh_listener() {
    let pki = Pki::reference();
    let db = MariaDb::start();
    let pair = Pair::start(&pki, db.port);
    let server_version = db.root_sql("SELECT VERSION()").trim().to_owned();

    // openssl s_client as the workload: MariaDB's greeting arrives through both hops.
    let mut openssl = s_client(&pki.path("mesh/client"), &pki.path("mesh/egress/ca.crt"), pair.mesh_port).spawn().expect("start openssl s_client");
    let stdin = openssl.stdin.take().unwrap();
    let version = read_greeting(openssl.stdout.take().unwrap());
    let _ = openssl.kill();
    let _ = openssl.wait();
    drop(stdin);
    assert!(version.contains("MariaDB"), "greeting through s_client: {version:?}");
    assert!(version.ends_with(&server_version), "greeting {version:?} is not from our MariaDB ({server_version:?})");

    // The rustls client as the workload: it verifies the mesh listener's certificate
    // for SERVICE_HOST against the mesh CA, then reads the same greeting.
    let workload = client_config(Some(&pki.path("mesh/client")), &pki.path("mesh/egress/ca.crt"));
    let stream = tls_connect(pair.mesh_port, SERVICE_HOST, workload).expect("mesh handshake with the workload certificate");
    let version = read_greeting(stream);
    assert!(version.ends_with(&server_version), "greeting through rustls: {version:?}");

    // The real mariadb client behind an s_client sidecar runs the tutorial's SQL.
    let sidecar = Sidecar::start(&pki, pair.mesh_port);
    mariadb_sql(sidecar.port, TUTORIAL_SQL).expect("the tutorial's SQL through the mesh listener");
    let through_mesh = mariadb_sql(sidecar.port, "SELECT content FROM test_encrypted_connection.message WHERE id = 1").unwrap();
    assert_eq!(through_mesh.trim(), "Crypto Hi");
    assert_eq!(db.root_sql("SELECT id, content FROM test_encrypted_connection.message").trim(), "1\tCrypto Hi");

    // The egress logged the workload's identity and SNI at the mesh listener, and the
    // ingress saw the egress's own client certificate on the cross-cluster hop.
    let egress_line = pair.egress.wait_for_access_line(&["listener=mesh", "route=to-ingress", "outcome=closed"]);
    assert!(egress_line.contains(&format!("identity={WORKLOAD_ID} ")), "{egress_line}");
    assert!(egress_line.contains(&format!("sni={SERVICE_HOST} ")), "{egress_line}");
    assert!(egress_line.contains(&format!("upstream=127.0.0.1:{} ", pair.ingress_port)), "{egress_line}");
    assert!(!egress_line.contains("bytes_sent=0 "), "{egress_line}");
    let ingress_line = pair.ingress.wait_for_access_line(&["route=mysql", "outcome=closed"]);
    assert!(ingress_line.contains(&format!("identity=client.{SERVICE_HOST} ")), "{ingress_line}");
    assert!(ingress_line.contains(&format!("sni={SERVICE_HOST} ")), "{ingress_line}");
    // Nothing reached MariaDB by the plain listener.
    assert!(pair.egress.access_log().iter().all(|l| !l.contains("listener=mysql-plain")), "{:#?}", pair.egress.access_log());
}
