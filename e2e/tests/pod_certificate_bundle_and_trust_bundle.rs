//! Certificates in the newest Kubernetes layouts: the listener's credential is one PEM
//! file holding the key and the chain (a pod certificate's `credentialBundlePath`,
//! csi-driver-spiffe), its client CA comes from a trust-manager `Bundle` ConfigMap mount,
//! both in the kubelet's `..data` layout; a rotation of the bundle is picked up by new
//! handshakes, and a bundle without a key is refused with the file named.

use std::io::{Read, Write};
use std::time::Duration;

use strait_e2e::config::{inline, quoted, quoted_path, Config, Listener, Route};
use strait_e2e::kube_secret::*;
use strait_e2e::*;

fn bundle_of(secret: &std::path::Path) -> String {
    let read = |name: &str| std::fs::read_to_string(secret.join(name)).unwrap();
    // The pod certificate layout: the private key first, then the chain.
    read("tls.key") + &read("tls.crt")
}

#[test]
fn one_file_credential_and_trust_manager_bundle_serve_and_rotate() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let mut credential = KubeSecret::create(&pki.path("podcert"), &[("credential.pem", &bundle_of(&pki.path("ingress")))]);
    let trust_pem = std::fs::read_to_string(pki.path("ingress/ca.crt")).unwrap();
    let trust = KubeSecret::create(&pki.path("trust"), &[("trust-bundle.pem", &trust_pem)]);
    let tls = inline(&[
        ("mode", quoted("mutual")),
        ("bundle", quoted_path(&credential.path("credential.pem"))),
        ("ca", quoted_path(&trust.path("trust-bundle.pem"))),
    ]);
    let config = Config::new().listener(Listener::with_tls("mtls", tls)).route(Route::to("echo", echo.port).hosts(&[SERVICE_HOST]));
    let ingress = Gateway::start(Role::Ingress, pki.dir.path(), &config.toml());
    let port = ingress.port("mtls");

    // Served from the bundle; the client is verified against the trust bundle.
    let mut tls = tls_connect(port, SERVICE_HOST, pki.egress_client()).expect("a client of the trust bundle's CA is served");
    tls.write_all(b"ping\n").unwrap();
    let mut echoed = [0u8; 5];
    tls.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"ping\n");
    let presented = tls.conn.peer_certificates().unwrap()[0].clone();
    assert_eq!(presented, leaf_der(&pki.path("ingress/tls.crt")), "the bundle's leaf is presented");

    // A rotation rewrites the one file (kubelet swap): new handshakes get the new leaf.
    let rotated = pki.server_secret("rotated", SERVICE_HOST);
    let mut tail = LogTail::from_now(&ingress);
    credential.update(&[("credential.pem", &bundle_of(&rotated))]);
    tail.wait_for_reload(&ingress, Duration::from_secs(10));
    let trusts_new = client_config(Some(&pki.path("egress")), &rotated.join("ca.crt"));
    let tls = tls_connect(port, SERVICE_HOST, trusts_new).expect("after the rotation the new certificate is served");
    assert_eq!(tls.conn.peer_certificates().unwrap()[0], leaf_der(&rotated.join("tls.crt")));
    assert!(tls_connect(port, SERVICE_HOST, pki.egress_client()).is_err(), "the old certificate is no longer served");
}

#[test]
fn a_bundle_without_a_key_is_refused_naming_the_file() {
    let pki = Pki::reference();
    let only_chain = pki.path("only-chain.pem");
    std::fs::copy(pki.path("ingress/tls.crt"), &only_chain).unwrap();
    let tls = inline(&[("mode", quoted("mutual")), ("bundle", quoted_path(&only_chain)), ("ca", quoted_path(&pki.path("ingress/ca.crt")))]);
    let config = Config::new().listener(Listener::with_tls("mtls", tls)).route(Route::to("echo", 7).hosts(&[SERVICE_HOST]));
    let path = pki.path("ingress-bundle.toml");
    std::fs::write(&path, config.toml()).unwrap();
    let (ok, out) = run_binary(Role::Ingress, &["check", "--config", path.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(out.contains(&format!("{}: holds no usable PEM private key", only_chain.display())), "{out}");

    let both = config.toml().replace("bundle = ", "cert = \"/x.crt\", bundle = ");
    std::fs::write(&path, both).unwrap();
    let (ok, out) = run_binary(Role::Ingress, &["check", "--config", path.to_str().unwrap()]);
    assert!(!ok && out.contains("tls.bundle: a bundle already holds the key and the chain"), "{out}");
}
