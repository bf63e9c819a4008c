//! A credential update the ingress cannot use — a key that does not belong to the
//! certificate, a certificate that is not PEM, a file caught half-written — is refused
//! with the file named, and the ingress keeps presenting its last good certificate to
//! new clients. The next good update is picked up. Both ways credentials change on
//! disk are covered: the kubelet's atomic Secret swap, and files overwritten in place
//! one at a time (an operator, or a tool writing `tls.crt` before `tls.key`).

use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use strait::certs::{Authority, KeyType, Leaf, Usage};
use strait_e2e::kube_secret::*;
use strait_e2e::*;

const RELOAD_LIMIT: Duration = Duration::from_secs(10);

#[test]
fn broken_secret_updates_are_refused_and_the_next_good_one_is_taken() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let mut secret = KubeSecret::copy_of(&pki.path("k8s/ingress-tls"), &pki.path("ingress"));
    let ingress = Gateway::start(Role::Ingress, pki.dir.path(), &ingress_config_with(ingress_listener(&secret.dir), echo.port).toml());
    let port = ingress.port("mtls");
    let (next, client) = next_credential(&pki);

    let old_leaf = leaf_der(&secret.path("tls.crt"));
    let old_serial = serial(&secret.dir);
    assert_eq!(served_leaf(port, client.clone()), old_leaf);

    // 1. Key and certificate out of step: the Secret's new key belongs to another cert.
    let mut tail = LogTail::from_now(&ingress);
    secret.update(&[("tls.key", &next.key_pem)]);
    let line = refused(&mut tail, &ingress);
    assert!(line.contains(&secret.path("tls.key").display().to_string()) && line.contains("does not belong"), "{line}");
    assert_eq!(served_leaf(port, client.clone()), old_leaf, "after a mismatched key, the old certificate is still served");

    // 2. A certificate that is not PEM at all (bad base64 between the markers).
    let garbage = "-----BEGIN CERTIFICATE-----\nthis is not base64 !!!\n-----END CERTIFICATE-----\n";
    secret.update(&[("tls.crt", garbage), ("tls.key", &next.key_pem)]);
    let line = refused(&mut tail, &ingress);
    assert!(line.contains(&secret.path("tls.crt").display().to_string()), "{line}");
    assert_eq!(served_leaf(port, client.clone()), old_leaf, "after unparsable PEM, the old certificate is still served");

    // 3. Overwritten in place inside the mount (through the `..data` link) and caught
    //    half-written. The file really lives in the timestamped directory, so SIGHUP is
    //    what makes the ingress look at it.
    secret.overwrite_in_place("tls.crt", &next.chain_pem[..next.chain_pem.len() / 2]);
    ingress.signal("HUP");
    let (line, _) = tail.wait_for(&ingress, "trigger=\"SIGHUP\"", RELOAD_LIMIT);
    assert!(line.contains(REFUSED) && line.contains(&secret.path("tls.crt").display().to_string()), "{line}");
    assert_eq!(served_leaf(port, client.clone()), old_leaf, "after a half-written file, the old certificate is still served");

    // 4. The next good update is taken: new handshakes get the new certificate.
    secret.rotate(&next, None);
    let (line, _) = tail.wait_for_reload(&ingress, RELOAD_LIMIT);
    assert!(line.contains(RELOADED), "{line}");
    let new_leaf = served_leaf(port, client.clone());
    assert_eq!(new_leaf, leaf_der(&secret.path("tls.crt")));
    assert_ne!(new_leaf, old_leaf);
    let new_serial = serial(&secret.dir);
    assert_ne!(new_serial, old_serial);
    // The log tells which certificate is live: the old serial at start, the new one now.
    assert!(!ingress.log_lines(&format!("serial={old_serial}")).is_empty());
    let loaded = ingress.log_lines(&format!("serial={new_serial}"));
    assert!(loaded.len() == 1 && loaded[0].contains("certificate loaded"), "{loaded:#?}");
}

#[test]
fn files_overwritten_in_place_are_taken_only_once_consistent() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    // A plain directory in Secret layout: tls.crt, tls.key, ca.crt are regular files.
    let dir = pki.path("ingress");
    let ingress = Gateway::start(Role::Ingress, pki.dir.path(), &ingress_config_with(ingress_listener(&dir), echo.port).toml());
    let port = ingress.port("mtls");
    let (next, client) = next_credential(&pki);
    let old_leaf = leaf_der(&dir.join("tls.crt"));
    assert_eq!(served_leaf(port, client.clone()), old_leaf);

    // 1. Caught half-written: the certificate file stops in the middle of the PEM.
    let mut tail = LogTail::from_now(&ingress);
    std::fs::write(dir.join("tls.crt"), &next.chain_pem[..next.chain_pem.len() / 2]).unwrap();
    let line = refused(&mut tail, &ingress);
    assert!(line.contains(&dir.join("tls.crt").display().to_string()), "{line}");
    assert_eq!(served_leaf(port, client.clone()), old_leaf, "after a half-written file, the old certificate is still served");

    // 2. The certificate is complete, but the key on disk is still the old one.
    std::fs::write(dir.join("tls.crt"), &next.chain_pem).unwrap();
    let line = refused(&mut tail, &ingress);
    assert!(line.contains(&dir.join("tls.key").display().to_string()) && line.contains("does not belong"), "{line}");
    assert_eq!(served_leaf(port, client.clone()), old_leaf, "with key and certificate out of step, the old certificate is still served");

    // 3. The key follows: now the pair is consistent and is taken.
    std::fs::write(dir.join("tls.key"), &next.key_pem).unwrap();
    let (line, _) = tail.wait_for_reload(&ingress, RELOAD_LIMIT);
    assert!(line.contains(RELOADED), "{line}");
    assert_eq!(served_leaf(port, client.clone()), leaf_der(&dir.join("tls.crt")));
    assert!(ingress.log_lines("certificate loaded").iter().any(|l| l.contains(&format!("serial={}", serial(&dir)))));
}

/// A server certificate for [`SERVICE_HOST`] from a CA the ingress has never seen, and
/// a test client (the reference client certificate) that trusts both the old and the
/// new CA, so it can report which certificate it was shown.
fn next_credential(pki: &Pki) -> (strait::certs::Issued, Arc<rustls::ClientConfig>) {
    let next_ca = Authority::root("Strait Root CA (next)", KeyType::EcdsaP256, 300).unwrap();
    let mut leaf = Leaf::new(SERVICE_HOST, Usage::Server, 90);
    leaf.dns.push(SERVICE_HOST.into());
    let next = next_ca.issue(&leaf).unwrap();
    let trust = pki.path("trust-both.crt");
    let old_chain = std::fs::read_to_string(pki.path("ca-chain.cert.pem")).unwrap();
    std::fs::write(&trust, format!("{old_chain}{}", next_ca.bundle_pem())).unwrap();
    (next, client_config(Some(&pki.path("egress")), &trust))
}

/// Waits for the next reload outcome, which must be a refusal; returns its line.
fn refused(tail: &mut LogTail, ingress: &Gateway) -> String {
    let (line, _) = tail.wait_for_reload(ingress, RELOAD_LIMIT);
    assert!(line.contains(REFUSED), "a broken update must be refused, got: {line}");
    line
}

/// Completes a handshake, checks the connection carries bytes to the backend and
/// back, and returns the certificate the ingress presented.
fn served_leaf(port: u16, config: Arc<rustls::ClientConfig>) -> CertificateDer<'static> {
    let mut stream = tls_connect(port, SERVICE_HOST, config).unwrap();
    let leaf = stream.conn.peer_certificates().unwrap()[0].clone().into_owned();
    stream.write_all(b"still serving\n").unwrap();
    let mut echoed = [0u8; 14];
    stream.read_exact(&mut echoed).unwrap();
    assert_eq!(&echoed, b"still serving\n");
    leaf
}
