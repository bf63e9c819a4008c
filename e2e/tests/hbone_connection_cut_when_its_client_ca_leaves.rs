//! Issue 17's live re-check at an HBONE listener: a `mariadb` session rides a CONNECT
//! stream on the egress's pooled HTTP/2 mTLS connection; the ingress's client CA bundle
//! is replaced (the kubelet's way) by a root that never signed the egress's certificate.
//! The reload verifies the pool connection's client chain again and cuts the whole
//! connection, every stream on it: the session is lost, the ingress logs
//! `outcome=revoked` with the reason and counts it.

use std::time::{Duration, Instant};

use strait::certs::{Authority, KeyType};
use strait_e2e::config::quoted;
use strait_e2e::databases::MariaDbSession;
use strait_e2e::hbone::HbonePair;
use strait_e2e::hostile::metric;
use strait_e2e::kube_secret::KubeSecret;
use strait_e2e::*;

#[test]
fn a_ca_leaving_the_bundle_cuts_the_hbone_connection_it_signed() {
    let db = MariaDb::start();
    let pki = Pki::reference();
    let mut secret = KubeSecret::copy_of(&pki.path("k8s/hbone-server"), &pki.path("ingress"));
    let ingress = Config::new()
        .listener(Listener::mutual("hbone", &secret.dir).set("transport", quoted("hbone")))
        .route(Route::to("mysql", db.port).hosts(&[SERVICE_HOST]));
    let pair = HbonePair::start_with_ingress(&pki, &ingress.toml(), |route| route);
    let mut session = MariaDbSession::open(pair.plain_port, &["--skip-ssl"]);
    session.select("before").expect("the session runs over HBONE");

    let stranger = Authority::root("A root that signed nobody here", KeyType::EcdsaP256, 30).unwrap();
    secret.update(&[("ca.crt", &stranger.bundle_pem())]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let line = loop {
        if let Some(line) = pair.ingress.access_log().into_iter().find(|l| l.contains("outcome=revoked")) {
            break line;
        }
        assert!(Instant::now() < deadline, "no outcome=revoked record 10 s after the CA left:\n{}", pair.ingress.proc.output());
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(line.contains("listener=hbone ") && line.contains("protocol=hbone"), "the pool connection's record: {line}");
    assert!(line.contains("no longer chains to a trusted CA after the reload"), "{line}");
    assert!(session.select("after").is_err(), "the stream went with its connection");
    assert_eq!(metric(&pair.ingress, "strait_connections_closed_on_trust_change_total", &[("listener", "hbone")]), 1.0);
}
