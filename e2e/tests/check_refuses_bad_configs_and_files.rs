//! Bad configuration and bad files: each is refused by `check` and at start, with a
//! message that names the file or the field and says how to fix it.

use std::path::Path;

use strait::certs::{Authority, KeyType, Leaf, Usage};
use strait_e2e::*;

/// An ingress config whose listener credential files are `cert`, `key`, `ca`.
fn ingress_with(cert: &Path, key: &Path, ca: &Path, extra: &str) -> String {
    format!(
        r#"
[[listener]]
name = "mtls"
address = "127.0.0.1:{port}"
tls = {{ mode = "mutual", cert = "{cert}", key = "{key}", ca = "{ca}" }}

[[route]]
name = "mysql"
hosts = ["{SERVICE_HOST}"]
upstream = "127.0.0.1:9"
{extra}"#,
        port = free_port(),
        cert = cert.display(),
        key = key.display(),
        ca = ca.display(),
    )
}

/// Runs `check` and a real start on `config`; both must fail, and both messages must
/// contain every one of `needles`. Returns the config file's path.
fn refused(pki: &Pki, name: &str, config: &str, needles: &[&str]) -> String {
    let path = pki.path(&format!("{name}.toml"));
    std::fs::write(&path, config).unwrap();
    let path = path.to_str().unwrap();
    let (ok, check) = run_binary(Role::Ingress, &["check", "--config", path]);
    assert!(!ok, "{name}: check accepted it:\n{check}");
    let (ok, start) = run_binary(Role::Ingress, &["--config", path, "--admin-address", "127.0.0.1:0"]);
    assert!(!ok, "{name}: the gateway started with it:\n{start}");
    for needle in needles {
        assert!(check.contains(needle), "{name}: check's message lacks {needle:?}:\n{check}");
        assert!(start.contains(needle), "{name}: the start's message lacks {needle:?}:\n{start}");
    }
    path.to_owned()
}

#[test]
fn every_bad_input_is_refused_with_its_file_or_field_and_a_fix() {
    let pki = Pki::reference();
    let ingress = pki.path("ingress");
    let (cert, key, ca) = (ingress.join("tls.crt"), ingress.join("tls.key"), ingress.join("ca.crt"));

    // The good config passes, so every failure below is the one thing changed.
    let good = pki.path("good.toml");
    std::fs::write(&good, ingress_with(&cert, &key, &ca, "")).unwrap();
    let (ok, out) = run_binary(Role::Ingress, &["check", "--config", good.to_str().unwrap()]);
    assert!(ok && out.contains("OK"), "{out}");

    let missing = pki.path("nowhere/tls.crt");
    refused(&pki, "missing-file", &ingress_with(&missing, &key, &ca, ""), &[missing.to_str().unwrap(), "cannot read", "check the path"]);

    let not_pem = pki.path("not-pem.crt");
    std::fs::write(&not_pem, "this is not a certificate\n").unwrap();
    refused(&pki, "non-pem", &ingress_with(&not_pem, &key, &ca, ""), &[not_pem.to_str().unwrap(), "holds no PEM certificate", "BEGIN CERTIFICATE"]);

    let other_key = pki.path("egress/tls.key");
    refused(
        &pki,
        "key-mismatch",
        &ingress_with(&cert, &other_key, &ca, ""),
        &[other_key.to_str().unwrap(), "does not belong to the certificate", "same Secret"],
    );

    let root = Authority::root("Expiry Test CA", KeyType::EcdsaP256, 30).unwrap();
    let mut expired = Leaf::new(SERVICE_HOST, Usage::Server, 1);
    expired.dns.push(SERVICE_HOST.into());
    expired.valid_from = time::Duration::days(-10);
    expired.valid_until = time::Duration::days(-3);
    let issued = root.issue(&expired).unwrap();
    let expired_dir = pki.path("expired");
    strait::certs::write_secret(&expired_dir, &issued, &root.bundle_pem()).unwrap();
    let expired_cert = expired_dir.join("tls.crt");
    refused(&pki, "expired", &ingress_with(&expired_cert, &expired_dir.join("tls.key"), &ca, ""), &[expired_cert.to_str().unwrap(), "expired at", "renew it"]);

    let empty_ca = pki.path("empty-ca.crt");
    std::fs::write(&empty_ca, "").unwrap();
    refused(&pki, "empty-ca", &ingress_with(&cert, &key, &empty_ca, ""), &[empty_ca.to_str().unwrap(), "holds no PEM certificate"]);

    let wrong_listener = ingress_with(&cert, &key, &ca, "listeners = [\"nope\"]\n");
    refused(&pki, "route-to-missing-listener", &wrong_listener, &["route[0] (mysql).listeners", "no listener is named \"nope\"", "listeners: mtls"]);

    let duplicate = ingress_with(&cert, &key, &ca, &format!("\n[[route]]\nname = \"again\"\nhosts = [\"{SERVICE_HOST}\"]\nupstream = \"127.0.0.1:9\"\n"));
    refused(&pki, "duplicate-sni", &duplicate, &["route[1] (again).hosts", "already claimed by route \"mysql\"", "one route per listener"]);

    let unknown_field = ingress_with(&cert, &key, &ca, "upstrem = \"x:1\"\n");
    refused(&pki, "unknown-field", &unknown_field, &["unknown-field.toml:", "unknown field `upstrem`", "expected one of"]);
}

/// `check` (and a start) report every problem of a file at once, one line each with its
/// file, line, field and fix, and `check` counts them.
#[test]
fn every_problem_in_a_file_is_reported_at_once() {
    let pki = Pki::reference();
    let ingress = pki.path("ingress");
    let (cert, key, ca) = (ingress.join("tls.crt"), ingress.join("tls.key"), ingress.join("ca.crt"));

    // Three mistakes in the meaning of one route.
    let several = ingress_with(&cert, &key, &ca, "connect_timeout = \"0s\"\nallow = [\"client\"]\nlisteners = [\"mtl\"]\n");
    let file = refused(
        &pki,
        "several",
        &several,
        &[
            "several.toml:7:1: route[0] (mysql).connect_timeout: must be more than 0",
            "several.toml:7:1: route[0] (mysql).allow: \"client\" is not an identity pattern: use *, a URI",
            "several.toml:7:1: route[0] (mysql).listeners: no listener is named \"mtl\": did you mean \"mtls\"? (listeners: mtls)",
        ],
    );
    let (_, check) = run_binary(Role::Ingress, &["check", "--config", &file]);
    assert!(check.contains(&format!("{file}: 3 problems; fix them all")), "{check}");
    assert_eq!(check.lines().filter(|l| l.starts_with(&format!("error: {file}:7:1: route[0]"))).count(), 3, "one line per problem:\n{check}");

    // Every misspelt field, each with the field it most likely meant.
    let misspelt = ingress_with(&cert, &key, &ca, "upstrem_tls = { mode = \"disable\" }\nidle_timout = \"1h\"\n");
    refused(
        &pki,
        "misspelt",
        &misspelt,
        &[
            "misspelt.toml:11:1: route[0] (mysql).upstrem_tls: unknown field `upstrem_tls`: did you mean `upstream_tls`?",
            "misspelt.toml:12:1: route[0] (mysql).idle_timout: unknown field `idle_timout`: did you mean `idle_timeout`?",
        ],
    );

    // Every value of the wrong type, in every entry.
    let types = ingress_with(&cert, &key, &ca, "connect_timeout = 5\nprotocol = \"mysq\"\n").replace("address = ", "max_connections = \"many\"\naddress = ");
    refused(
        &pki,
        "types",
        &types,
        &[
            "types.toml:4:19: listener[0] (mtls).max_connections: invalid type: string \"many\"",
            "types.toml:12:19: route[0] (mysql).connect_timeout: invalid type: integer `5`, expected a duration",
            "types.toml:13:12: route[0] (mysql).protocol: unknown variant `mysq`, expected one of `tcp`, `mysql`, `postgres`: did you mean `mysql`?",
        ],
    );

    // Every unusable credential file, at the entry that names it.
    let missing = pki.path("nowhere/tls.crt");
    let other_key = pki.path("egress/tls.key");
    let downstream = format!("downstream_tls = {{ cert = \"{}\", key = \"{}\" }}\n", cert.display(), other_key.display());
    refused(
        &pki,
        "credentials",
        &ingress_with(&missing, &key, &ca, &downstream),
        &[
            &format!("credentials.toml:2:1: listener[0] (mtls).tls: {}: cannot read", missing.display()),
            &format!("credentials.toml:7:1: route[0] (mysql).downstream_tls: {}: does not belong to the certificate", other_key.display()),
        ],
    );
}
