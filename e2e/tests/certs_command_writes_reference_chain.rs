//! `strait-ingress certs` writes the reference PKI in Secret layout, and an independent
//! verifier (openssl) agrees: root CA -> intermediate CA -> a server certificate for the
//! host and a client certificate, plus a separate mesh CA whose workload certificates
//! carry SPIFFE IDs. Key type and validity follow the options.

use std::path::{Path, PathBuf};
use std::process::Command;

use strait_e2e::*;

#[test]
fn certs_writes_a_chain_openssl_verifies() {
    require("openssl");
    let tmp = TempDir::new().unwrap();
    let out = tmp.path().join("pki");
    let out_arg = out.display().to_string();
    let (ok, text) = run_binary(Role::Ingress, &["certs", "--out", &out_arg, "--host", "h.example", "--key-type", "rsa2048", "--days", "10"]);
    assert!(ok, "certs failed: {text}");

    // Secret layout, keys readable by the owner only.
    for secret in ["ingress", "egress", "mesh/egress", "mesh/client"] {
        for file in ["tls.crt", "tls.key", "ca.crt"] {
            assert!(out.join(secret).join(file).is_file(), "{secret}/{file} missing");
        }
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(out.join(secret).join("tls.key")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{secret}/tls.key mode {mode:o}");
    }

    // ca-chain.cert.pem is intermediate then root; ingress/ca.crt is the same chain.
    let chain = pem_certs(&out.join("ca-chain.cert.pem"));
    assert_eq!(chain.len(), 2, "intermediate + root");
    assert_eq!(pem_certs(&out.join("ingress/ca.crt")), chain);
    let root = write_pem(tmp.path(), "root.pem", &chain[1..]);
    let intermediate = write_pem(tmp.path(), "intermediate.pem", &chain[..1]);
    assert!(openssl(&["x509", "-noout", "-subject", "-in", &root]).1.contains("Strait Root CA"));
    assert!(openssl(&["x509", "-noout", "-subject", "-in", &intermediate]).1.contains("Strait Intermediate CA"));

    // The server chain as served (leaf + intermediate) verifies to the root alone.
    let (server_leaf, served_intermediates) = split_chain(tmp.path(), &out.join("ingress/tls.crt"), "server");
    verify(&root, &served_intermediates, &server_leaf, "sslserver");
    let san = openssl(&["x509", "-noout", "-ext", "subjectAltName", "-in", &server_leaf]).1;
    assert!(san.contains("DNS:h.example"), "server SAN: {san}");

    // The client certificate the egress presents, from the same chain.
    let (client_leaf, client_intermediates) = split_chain(tmp.path(), &out.join("egress/tls.crt"), "client");
    verify(&root, &client_intermediates, &client_leaf, "sslclient");

    // --key-type rsa2048 and --days 10.
    for leaf in [&server_leaf, &client_leaf] {
        let text = openssl(&["x509", "-noout", "-text", "-in", leaf]).1;
        assert!(text.contains("rsaEncryption") && text.contains("(2048 bit)"), "{leaf} is not RSA 2048:\n{text}");
        assert!(openssl(&["x509", "-noout", "-checkend", &(9 * 86_400).to_string(), "-in", leaf]).0, "{leaf} must be valid 9 days from now");
        assert!(!openssl(&["x509", "-noout", "-checkend", &(11 * 86_400).to_string(), "-in", leaf]).0, "{leaf} must expire within 11 days");
    }

    // The mesh: its own CA, workload certificates with SPIFFE URI SANs, good for both ends.
    let mesh_root = out.join("mesh/client/ca.crt").display().to_string();
    let (workload, workload_intermediates) = split_chain(tmp.path(), &out.join("mesh/client/tls.crt"), "workload");
    verify(&mesh_root, &workload_intermediates, &workload, "sslclient");
    verify(&mesh_root, &workload_intermediates, &workload, "sslserver");
    let san = openssl(&["x509", "-noout", "-ext", "subjectAltName", "-in", &workload]).1;
    assert!(san.contains("URI:spiffe://cluster.local/ns/default/sa/client"), "workload SAN: {san}");
    let (gateway, _) = split_chain(tmp.path(), &out.join("mesh/egress/tls.crt"), "mesh-gateway");
    let san = openssl(&["x509", "-noout", "-ext", "subjectAltName", "-in", &gateway]).1;
    assert!(san.contains("URI:spiffe://cluster.local/ns/istio-system/sa/egress-gateway") && san.contains("DNS:h.example"), "mesh gateway SAN: {san}");
    let (cross, _) = run(Command::new("openssl").args(["verify", "-CAfile", &root, &workload]));
    assert!(!cross, "a mesh workload must not verify against the cross-cluster root");

    // And the gateway itself accepts what the tool wrote.
    let config = tmp.path().join("ingress.toml");
    let toml = Config::new().listener(Listener::mutual("mtls", &out.join("ingress"))).route(Route::to("db", 3306).hosts(&["h.example"])).toml();
    std::fs::write(&config, toml).unwrap();
    let (ok, text) = run_binary(Role::Ingress, &["--config", &config.display().to_string(), "check"]);
    assert!(ok, "check refused the certs output: {text}");
}

/// Every certificate block of a PEM file, in order, as PEM text.
fn pem_certs(file: &Path) -> Vec<String> {
    const END: &str = "-----END CERTIFICATE-----";
    let text = std::fs::read_to_string(file).unwrap();
    text.split_inclusive(END).filter(|b| b.contains("-----BEGIN CERTIFICATE-----")).map(|b| format!("{}\n", b.trim_start())).collect()
}

fn write_pem(dir: &Path, name: &str, certs: &[String]) -> String {
    let path: PathBuf = dir.join(name);
    std::fs::write(&path, certs.concat()).unwrap();
    path.display().to_string()
}

/// Splits a `tls.crt` into its leaf and the intermediates served with it (files).
fn split_chain(dir: &Path, chain: &Path, name: &str) -> (String, String) {
    let certs = pem_certs(chain);
    assert!(!certs.is_empty(), "{} holds no certificate", chain.display());
    let leaf = write_pem(dir, &format!("{name}-leaf.pem"), &certs[..1]);
    let rest = write_pem(dir, &format!("{name}-intermediates.pem"), &certs[1..]);
    (leaf, rest)
}

/// `openssl verify` of `leaf` for `purpose`, trusting `root` and building the path
/// through `untrusted` (which may be empty).
fn verify(root: &str, untrusted: &str, leaf: &str, purpose: &str) {
    let mut command = Command::new("openssl");
    command.args(["verify", "-purpose", purpose, "-CAfile", root]);
    if std::fs::metadata(untrusted).is_ok_and(|m| m.len() > 0) {
        command.args(["-untrusted", untrusted]);
    }
    command.arg(leaf);
    let (ok, text) = run(&mut command);
    assert!(ok && text.contains(&format!("{leaf}: OK")), "openssl verify ({purpose}) failed:\n{text}");
}

fn openssl(args: &[&str]) -> (bool, String) {
    run(Command::new("openssl").args(args))
}

fn run(command: &mut Command) -> (bool, String) {
    let out = command.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}
