//! The whole certificate rotation, done the kubelet's way while 50 MySQL clients
//! connect, query and disconnect in a loop through the pair: first both sides trust the
//! old and the new CA, then the ingress's server certificate and the egress's client
//! certificate move to the new CA, then the old CA is dropped. Not one connection may
//! fail; new handshakes present the new certificate; a connection opened before the
//! rotation still works while its CA is trusted, and is closed (`outcome=revoked`) when
//! the old CA is dropped, since its certificates no longer verify
//! (`recheck_on_trust_change`, on by default).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strait::certs::{Authority, KeyType, Leaf, Usage};
use strait_e2e::hostile::tls_refused;
use strait_e2e::kube_secret::*;
use strait_e2e::*;

/// Concurrent clients, as in the issue.
const CLIENTS: usize = 50;
/// How long the load runs.
const LOAD: Duration = Duration::from_secs(20);
/// Upper bound on connections per client, so the loop is bounded in count as well.
const MAX_PER_CLIENT: usize = 5_000;
/// Time the load runs in each state between rotation steps.
const DWELL: Duration = Duration::from_secs(2);
/// Longest acceptable wait for a gateway to log a reload after a Secret update.
const RELOAD_LIMIT: Duration = Duration::from_secs(10);

#[test]
fn rotating_server_client_and_ca_under_load_fails_no_connection() {
    require("mariadb");
    let pki = Pki::reference();
    let db = MariaDb::start();

    // Old credentials: the reference PKI, mounted as kubelet Secrets.
    let old_chain = std::fs::read_to_string(pki.path("ca-chain.cert.pem")).unwrap();
    let mut ingress_secret = KubeSecret::copy_of(&pki.path("k8s/ingress-tls"), &pki.path("ingress"));
    let mut egress_secret = KubeSecret::copy_of(&pki.path("k8s/egress-client"), &pki.path("egress"));
    let old_server_leaf = leaf_der(&ingress_secret.path("tls.crt"));

    // New credentials: a new root and intermediate, and leaves with the same names.
    let new_root = Authority::root("Strait Root CA (next)", KeyType::EcdsaP256, 300).unwrap();
    let new_ca = new_root.intermediate("Strait Intermediate CA (next)", 300).unwrap();
    let new_chain = new_ca.bundle_pem();
    let mut server = Leaf::new(SERVICE_HOST, Usage::Server, 90);
    server.dns.push(SERVICE_HOST.into());
    let new_server = new_ca.issue(&server).unwrap();
    let client_name = format!("client.{SERVICE_HOST}");
    let mut client = Leaf::new(&client_name, Usage::Client, 90);
    client.dns.push(client_name.clone());
    let new_client = new_ca.issue(&client).unwrap();
    let overlap = format!("{old_chain}{new_chain}");
    std::fs::write(pki.path("new-ca.crt"), &new_chain).unwrap();

    let ingress = Gateway::start(Role::Ingress, pki.dir.path(), &ingress_config_with(ingress_listener(&ingress_secret.dir), db.port).toml());
    let ingress_port = ingress.port("mtls");
    let egress_toml = Config::new()
        .listener(Listener::plain("mysql-plain", "to-ingress"))
        .route(Route::to("to-ingress", ingress_port).mutual_origination(&egress_secret.dir, SERVICE_HOST));
    let egress = Gateway::start(Role::Egress, pki.dir.path(), &egress_toml.toml());
    let plain_port = egress.port("mysql-plain");
    mariadb_sql(plain_port, "SELECT 1").expect("the pair carries MySQL before the rotation");

    // A connection opened before the rotation, kept open across it.
    let mut session = SqlSession::open(plain_port);
    let connection_id = session.query("SELECT CONNECTION_ID();");

    let made = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let stop_at = start + LOAD;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let made = made.clone();
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                for _ in 0..MAX_PER_CLIENT {
                    if Instant::now() >= stop_at {
                        break;
                    }
                    let at = start.elapsed();
                    match mariadb_sql(plain_port, "SELECT 1") {
                        Ok(out) if out.trim() == "1" => {}
                        Ok(out) => failures.push(format!("at {at:?}: unexpected reply {out:?}")),
                        Err(e) => failures.push(format!("at {at:?}: {}", e.trim())),
                    }
                    made.fetch_add(1, Ordering::Relaxed);
                }
                failures
            })
        })
        .collect();

    std::thread::sleep(Duration::from_secs(3));
    let mut latencies = Vec::new();
    let mut made_at_step = vec![made.load(Ordering::Relaxed)];
    let steps = [
        ("trust old+new CA", Update::Files(vec![("ca.crt", overlap.clone())]), Update::Files(vec![("ca.crt", overlap.clone())])),
        ("leaves from new CA", Update::Leaf(&new_server), Update::Leaf(&new_client)),
        ("drop old CA", Update::Files(vec![("ca.crt", new_chain.clone())]), Update::Files(vec![("ca.crt", new_chain.clone())])),
    ];
    for (name, ingress_update, egress_update) in &steps {
        let mut tails = [LogTail::from_now(&ingress), LogTail::from_now(&egress)];
        let ingress_changed = Instant::now();
        ingress_update.apply(&mut ingress_secret);
        let egress_changed = Instant::now();
        egress_update.apply(&mut egress_secret);
        let mut took = [None, None];
        while took.iter().any(Option::is_none) {
            for (i, (gateway, changed)) in [(&ingress, ingress_changed), (&egress, egress_changed)].into_iter().enumerate() {
                if took[i].is_some() {
                    continue;
                }
                if let Some(line) = tails[i].next_with_any(&[RELOADED, REFUSED]) {
                    assert!(line.contains(RELOADED), "after {name:?}: {line}");
                    took[i] = Some(changed.elapsed());
                }
                assert!(changed.elapsed() < RELOAD_LIMIT, "no reload after {name:?} within {RELOAD_LIMIT:?}:\n{}", gateway.proc.output());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        latencies.push((*name, took[0].unwrap(), took[1].unwrap()));
        // Let the load run a while in each intermediate state.
        std::thread::sleep(DWELL);
        made_at_step.push(made.load(Ordering::Relaxed));
        if *name != "drop old CA" {
            // The connection opened before the rotation is the same MySQL session,
            // still working while its old certificates are trusted.
            assert_eq!(session.query("SELECT CONNECTION_ID();"), connection_id, "same connection, not a reconnect, after {name:?}");
        }
    }
    assert!(Instant::now() + Duration::from_secs(2) < stop_at, "the rotation must finish while the load still runs");

    // New handshakes present the new server certificate, and the ingress no longer
    // accepts a client certificate from the old CA.
    let new_trust = pki.path("new-ca.crt");
    let mut fresh = tls_connect(ingress_port, SERVICE_HOST, client_config(Some(&egress_secret.dir), &new_trust)).unwrap();
    let presented = fresh.conn.peer_certificates().unwrap()[0].clone().into_owned();
    let mut greeting = [0u8; 64];
    assert!(fresh.read(&mut greeting).unwrap() > 0, "the new client certificate is accepted: MariaDB greets through the ingress");
    assert_eq!(presented, leaf_der(&ingress_secret.path("tls.crt")), "the ingress presents the new server certificate");
    assert_ne!(presented, old_server_leaf);
    assert!(
        tls_refused(tls_connect(ingress_port, SERVICE_HOST, client_config(Some(&pki.path("egress")), &new_trust))),
        "a client certificate from the dropped CA must be refused"
    );
    let (server_serial, client_serial) = (serial(&ingress_secret.dir), serial(&egress_secret.dir));
    assert!(ingress.log_lines(&format!("serial={server_serial}")).iter().any(|l| l.contains("certificate loaded")));
    assert!(egress.log_lines(&format!("serial={client_serial}")).iter().any(|l| l.contains("certificate loaded")));

    // Dropping the old CA closed the connection opened under it: its certificates (the
    // old server and client leaves) no longer verify.
    let revoked = |g: &Gateway| g.access_log().into_iter().find(|l| l.contains("outcome=revoked"));
    let deadline = Instant::now() + Duration::from_secs(5);
    let line = loop {
        if let Some(line) = revoked(&ingress).or_else(|| revoked(&egress)) {
            break line;
        }
        assert!(Instant::now() < deadline, "the session under the old CA was not closed when the CA was dropped");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(line.contains("no longer chains to a trusted CA after the reload"), "{line}");
    assert!(session.query_fails("SELECT 'still here';"), "the session opened under the dropped CA still answers");

    let mut failures = Vec::new();
    for client in clients {
        failures.extend(client.join().expect("a client thread panicked"));
    }
    let total = made.load(Ordering::Relaxed);
    made_at_step.push(total);

    println!("rotation under load: {total} connections made, {} failed, {CLIENTS} clients for {LOAD:?}", failures.len());
    println!("connections completed by: start of step 1 / {DWELL:?} after each step / end = {made_at_step:?}");
    for (name, ingress_latency, egress_latency) in &latencies {
        println!("reload after {name:?}: ingress {ingress_latency:?}, egress {egress_latency:?} (file change -> \"reloaded\" log line)");
    }
    assert!(
        failures.is_empty(),
        "{} of {total} connections failed, first ones:\n{}",
        failures.len(),
        failures.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
    );
    // The load really ran through every step.
    assert!(made_at_step.windows(2).all(|w| w[1] > w[0]), "connections completed during every phase: {made_at_step:?}");
    for gateway in [&ingress, &egress] {
        assert!(gateway.log_lines(REFUSED).is_empty(), "no reload may be refused:\n{}", gateway.proc.output());
    }
}

/// One Secret update of a rotation step.
enum Update<'a> {
    /// Replace these keys (the rest of the Secret stays).
    Files(Vec<(&'static str, String)>),
    /// Replace `tls.crt` and `tls.key` with this credential.
    Leaf(&'a strait::certs::Issued),
}

impl Update<'_> {
    fn apply(&self, secret: &mut KubeSecret) {
        match self {
            Update::Files(files) => secret.update(&files.iter().map(|(n, c)| (*n, c.as_str())).collect::<Vec<_>>()),
            Update::Leaf(issued) => secret.rotate(issued, None),
        }
    }
}

/// One long-lived `mariadb` client process, fed SQL on stdin, one result line per query.
struct SqlSession {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl SqlSession {
    fn open(port: u16) -> SqlSession {
        let mut child = Command::new("mariadb")
            .args(["-h", "127.0.0.1", "-P", &port.to_string(), "-uapp", "-papp", "--skip-ssl", "--connect-timeout=10"])
            .args(["-N", "-B", "--unbuffered", "--skip-reconnect"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        SqlSession { child, stdin, lines }
    }

    /// Sends one statement that yields one row of one column; returns it.
    fn query(&mut self, sql: &str) -> String {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{sql}").unwrap();
        stdin.flush().unwrap();
        self.lines.recv_timeout(Duration::from_secs(10)).unwrap_or_else(|e| panic!("no answer to {sql:?} on the long-lived connection: {e}"))
    }

    /// Sends one statement and whether it gets no answer: the client's connection is
    /// gone (it does not reconnect) and it exits, closing its output.
    fn query_fails(&mut self, sql: &str) -> bool {
        let stdin = self.stdin.as_mut().unwrap();
        if writeln!(stdin, "{sql}").and_then(|()| stdin.flush()).is_err() {
            return true;
        }
        matches!(self.lines.recv_timeout(Duration::from_secs(10)), Err(mpsc::RecvTimeoutError::Disconnected))
    }
}

impl Drop for SqlSession {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
