//! Revocation and CA removal reach connections already open: long-lived `mariadb`
//! sessions run through the pair, each egress route presenting its own client
//! certificate to the ingress. A CRL update revoking one certificate closes that
//! session within a second of the reload (`outcome=revoked`, the reason in the access
//! log, counted), while a session with another certificate stays open and keeps
//! working; removing a CA from the ingress's bundle closes the session of the
//! certificate it signed the same way. A listener with `recheck_on_trust_change =
//! false` keeps its revoked session (and says so at start).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use strait::certs::{Authority, Issued, KeyType, Leaf, Usage};
use strait_e2e::config::{inline, quoted, quoted_path};
use strait_e2e::databases::MariaDbSession;
use strait_e2e::hostile::{metric, tls_refused};
use strait_e2e::kube_secret::{LogTail, RELOADED};
use strait_e2e::*;

/// The trust of the cross-cluster hop: the ingress's CA bundle and CRL file, from two
/// roots whose keys the test holds.
struct Trust {
    dir: PathBuf,
    main: Authority,
    other: Authority,
}

impl Trust {
    fn bundle(&self) -> PathBuf {
        self.dir.join("clients-ca.crt")
    }

    fn crl(&self) -> PathBuf {
        self.dir.join("clients.crl")
    }

    /// Writes the bundle (with or without the other root) and the CRLs of both roots.
    fn write(&self, with_other: bool, revoked: &[&Issued], number: u64) {
        let bundle = if with_other { self.main.bundle_pem() + &self.other.bundle_pem() } else { self.main.bundle_pem() };
        let crls = self.main.revocation_list(revoked, number).unwrap() + &self.other.revocation_list(&[], number).unwrap();
        // The CRL first: the reload the bundle's write triggers then sees both.
        std::fs::write(self.crl(), crls).unwrap();
        std::fs::write(self.bundle(), bundle).unwrap();
    }

    /// The main root alone: what a test client trusts for the ingress's server certificate.
    fn main_bundle(&self) -> PathBuf {
        let file = self.dir.join("main-ca.crt");
        std::fs::write(&file, self.main.bundle_pem()).unwrap();
        file
    }

    fn client(&self, ca: &Authority, name: &str) -> (Issued, PathBuf) {
        let mut leaf = Leaf::new(name, Usage::Client, 30);
        leaf.dns.push(format!("{name}.{SERVICE_HOST}"));
        let issued = ca.issue(&leaf).unwrap();
        let dir = self.dir.join(name);
        // ca.crt verifies the ingress's server certificate (issued by the main root).
        strait::certs::write_secret(&dir, &issued, &self.main.bundle_pem()).unwrap();
        (issued, dir)
    }
}

fn ingress_listener(name: &str, server: &Path, trust: &Trust) -> Listener {
    let tls = inline(&[
        ("mode", quoted("mutual")),
        ("cert", quoted_path(&server.join("tls.crt"))),
        ("key", quoted_path(&server.join("tls.key"))),
        ("ca", quoted_path(&trust.bundle())),
        ("ca_crl", quoted_path(&trust.crl())),
    ]);
    Listener::with_tls(name, tls)
}

/// Waits (`limit`) for an access-log line with every needle, anywhere in the log.
fn access_line_within(gateway: &Gateway, needles: &[&str], limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(line) = gateway.access_log().into_iter().find(|l| needles.iter().all(|n| l.contains(n))) {
            return Some(line);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reloads by the file change `change` and returns how long after the reload line
/// the `outcome=revoked` record of `listener` (the `nth` so far) was seen.
fn revoked_after_reload(ingress: &Gateway, nth: usize, change: impl FnOnce()) -> (String, Duration) {
    let mut tail = LogTail::from_now(ingress);
    let written = Instant::now();
    change();
    let (reload, _) = tail.wait_for_reload(ingress, Duration::from_secs(10));
    assert!(reload.contains(RELOADED), "{reload}");
    let reloaded = Instant::now();
    let deadline = reloaded + Duration::from_secs(5);
    let line = loop {
        let revoked: Vec<String> = ingress.access_log().into_iter().filter(|l| l.contains("outcome=revoked")).collect();
        if revoked.len() >= nth {
            break revoked[nth - 1].clone();
        }
        assert!(Instant::now() < deadline, "no {nth}th outcome=revoked record 5 s after the reload:\n{}", ingress.proc.output());
        std::thread::sleep(Duration::from_millis(2));
    };
    let after = reloaded.elapsed();
    println!("closed {after:?} after the reload line, {:?} after the file write", written.elapsed());
    (line, after)
}

#[test]
fn revoked_or_untrusted_peers_are_closed_and_others_keep_working() {
    let db = MariaDb::start();
    let pki = Pki::reference();
    let trust = Trust {
        dir: pki.path("hop"),
        main: Authority::root("Cluster B root", KeyType::EcdsaP256, 30).unwrap(),
        other: Authority::root("Cluster C root", KeyType::EcdsaP256, 30).unwrap(),
    };
    std::fs::create_dir_all(&trust.dir).unwrap();
    let mut server_leaf = Leaf::new(SERVICE_HOST, Usage::Server, 30);
    server_leaf.dns.push(SERVICE_HOST.into());
    let server = trust.dir.join("server");
    strait::certs::write_secret(&server, &trust.main.issue(&server_leaf).unwrap(), &trust.main.bundle_pem()).unwrap();
    let (revoked, revoked_dir) = trust.client(&trust.main, "revoked");
    let (_, kept_dir) = trust.client(&trust.main, "kept");
    let (_, other_dir) = trust.client(&trust.other, "other");
    let (unchecked, unchecked_dir) = trust.client(&trust.main, "unchecked");
    trust.write(true, &[], 1);

    let ingress_config = Config::new()
        .listener(ingress_listener("mtls", &server, &trust))
        .listener(ingress_listener("mtls-unchecked", &server, &trust).set("recheck_on_trust_change", false))
        .route(Route::to("mysql", db.port).hosts(&[SERVICE_HOST]));
    let ingress = Gateway::start(Role::Ingress, pki.dir.path(), &ingress_config.toml());
    assert_eq!(ingress.log_lines("recheck_on_trust_change = false").len(), 1, "the setting is logged at start");
    let upstream = format!("127.0.0.1:{}", ingress.port("mtls"));
    let unchecked_upstream = format!("127.0.0.1:{}", ingress.port("mtls-unchecked"));
    let mut egress_config = Config::new();
    for (name, secret, to) in [
        ("revoked", &revoked_dir, &upstream),
        ("kept", &kept_dir, &upstream),
        ("other", &other_dir, &upstream),
        ("unchecked", &unchecked_dir, &unchecked_upstream),
    ] {
        egress_config = egress_config.listener(Listener::plain(name, name)).route(Route::new(name, to).mutual_origination(secret, SERVICE_HOST));
    }
    let egress = Gateway::start(Role::Egress, pki.dir.path(), &egress_config.toml());
    let mut sessions: Vec<(&str, MariaDbSession)> =
        ["revoked", "kept", "other", "unchecked"].into_iter().map(|n| (n, MariaDbSession::open(egress.port(n), &["--skip-ssl"]))).collect();
    for (name, session) in &mut sessions {
        session.select(&format!("{name}-start")).unwrap_or_else(|e| panic!("{name}: {e}"));
    }

    // 1. The CRL now lists "revoked" (and "unchecked", at the listener that does not re-check).
    let (line, after) = revoked_after_reload(&ingress, 1, || trust.write(true, &[&revoked, &unchecked], 2));
    assert!(line.contains("listener=mtls ") && line.contains("reason=client certificate revoked by the reloaded CRL"), "{line}");
    assert!(after < Duration::from_secs(1), "revoked session closed {after:?} after the reload");
    let egress_line = access_line_within(&egress, &["listener=revoked "], Duration::from_secs(5)).expect("the egress closes the client's side too");
    println!("egress: {egress_line}");
    let [(_, revoked_session), (_, kept), (_, other), (_, unchecked_session)] = &mut sessions[..] else { unreachable!() };
    let lost = revoked_session.select("revoked-after").unwrap_err();
    assert!(lost.contains("Lost connection") || lost.contains("gone away") || lost.contains("is gone"), "{lost}");
    kept.select("kept-after-crl").unwrap();
    other.select("other-after-crl").unwrap();
    unchecked_session.select("unchecked-after-crl").expect("recheck_on_trust_change = false keeps the session");
    assert!(
        tls_refused(tls_connect(ingress.port("mtls"), SERVICE_HOST, client_config(Some(&revoked_dir), &trust.main_bundle()))),
        "a new handshake with the revoked certificate"
    );

    // 2. The other root leaves the bundle: its session closes, the rest keep working.
    let (line, after) = revoked_after_reload(&ingress, 2, || trust.write(false, &[&revoked, &unchecked], 3));
    assert!(line.contains("reason=client certificate no longer chains to a trusted CA after the reload"), "{line}");
    assert!(after < Duration::from_secs(1), "untrusted session closed {after:?} after the reload");
    assert!(other.select("other-after-ca").is_err());
    kept.select("kept-after-ca").unwrap();
    unchecked_session.select("unchecked-after-ca").unwrap();
    assert_eq!(metric(&ingress, "strait_connections_closed_on_trust_change_total", &[("listener", "mtls")]), 2.0);
    assert_eq!(metric(&ingress, "strait_connections_closed_on_trust_change_total", &[("listener", "mtls-unchecked")]), 0.0);
    assert_eq!(metric(&ingress, "strait_tcp_connections_closed_total", &[("listener", "mtls"), ("outcome", "revoked")]), 2.0);
    // A fresh session with the kept certificate runs the tutorial's SQL.
    mariadb_sql(egress.port("kept"), TUTORIAL_SQL).unwrap();
}

/// A `mariadb` client doing MySQL's own TLS with a client certificate, terminated by
/// Strait inside the protocol (a plain listener, a `mysql` route with `downstream_tls`
/// in mutual mode and a CRL): revoking its certificate closes its session the same way,
/// while a session with another certificate keeps working.
#[test]
fn a_database_clients_in_protocol_tls_is_rechecked_too() {
    let db = MariaDb::start();
    let pki = Pki::reference();
    let dir = pki.path("native");
    let root = Authority::root("Native clients root", KeyType::EcdsaP256, 30).unwrap();
    let mut server_leaf = Leaf::new("localhost", Usage::Server, 30);
    server_leaf.dns.push("localhost".into());
    let server = dir.join("server");
    strait::certs::write_secret(&server, &root.issue(&server_leaf).unwrap(), &root.bundle_pem()).unwrap();
    let issue = |name: &str| {
        let issued = root.issue(&Leaf::new(name, Usage::Client, 30)).unwrap();
        strait::certs::write_secret(&dir.join(name), &issued, &root.bundle_pem()).unwrap();
        issued
    };
    let (revoked, _kept) = (issue("revoked"), issue("kept"));
    let (ca, crl) = (dir.join("ca.crt"), dir.join("clients.crl"));
    std::fs::write(&ca, root.bundle_pem()).unwrap();
    std::fs::write(&crl, root.revocation_list(&[], 1).unwrap()).unwrap();
    let downstream_tls = inline(&[
        ("mode", quoted("mutual")),
        ("cert", quoted_path(&server.join("tls.crt"))),
        ("key", quoted_path(&server.join("tls.key"))),
        ("ca", quoted_path(&ca)),
        ("ca_crl", quoted_path(&crl)),
    ]);
    let config = Config::new()
        .listener(Listener::plain("native", "mysql"))
        .route(Route::to("mysql", db.port).protocol("mysql").plaintext().set("downstream_ssl_mode", quoted("required")).set("downstream_tls", downstream_tls));
    let ingress = Gateway::start(Role::Ingress, pki.dir.path(), &config.toml());
    let port = ingress.port("native");
    let session = |name: &str| {
        let (cert, key) = (dir.join(name).join("tls.crt"), dir.join(name).join("tls.key"));
        let args = [
            "-h",
            "localhost",
            "--ssl",
            "--ssl-verify-server-cert",
            "--ssl-ca",
            &ca.display().to_string(),
            "--ssl-cert",
            &cert.display().to_string(),
            "--ssl-key",
            &key.display().to_string(),
        ]
        .map(str::to_owned);
        MariaDbSession::open(port, &args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (mut cut, mut kept) = (session("revoked"), session("kept"));
    cut.select("revoked-start").unwrap();
    kept.select("kept-start").unwrap();

    let (line, after) = revoked_after_reload(&ingress, 1, || std::fs::write(&crl, root.revocation_list(&[&revoked], 2).unwrap()).unwrap());
    assert!(line.contains("listener=native ") && line.contains("protocol=mysql") && line.contains("client certificate revoked by the reloaded CRL"), "{line}");
    assert!(after < Duration::from_secs(1), "closed {after:?} after the reload");
    assert!(cut.select("revoked-after").is_err());
    kept.select("kept-after").unwrap();
}
