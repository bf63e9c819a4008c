//! Client certificates the ingress must refuse in the mutual-TLS handshake, each
//! presented by the rustls client and by `openssl s_client`: expired, not yet valid,
//! without the clientAuth extended key usage (a server certificate), issued by a CA the
//! listener does not trust, and revoked by the listener's `ca_crl` (a CRL made with
//! `openssl ca -gencrl`). Each is logged `outcome=refused` and counted as
//! `bad_certificate` or `unknown_ca`; a good client is served after every one.

use std::path::{Path, PathBuf};
use std::process::Command;

use strait::certs::Usage;
use strait_e2e::config::{inline, quoted, quoted_path};
use strait_e2e::hostile::*;
use strait_e2e::*;
use time::Duration;

/// A CA made with the openssl command line, because revoking needs its key: its
/// certificate, a good and a revoked client certificate (as Secret directories), and
/// the CRL listing the revoked one.
struct OpensslCa {
    ca: PathBuf,
    good: PathBuf,
    revoked: PathBuf,
    crl: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl").current_dir(dir).args(args).output().unwrap();
    assert!(out.status.success(), "openssl {args:?} failed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

impl OpensslCa {
    fn new(dir: &Path) -> OpensslCa {
        require("openssl");
        std::fs::create_dir_all(dir).unwrap();
        let ec = ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out"];
        openssl(dir, &[&ec[..], &["ca.key"]].concat());
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-subj",
                "/CN=Strait CRL Test CA",
                "-days",
                "30",
                "-out",
                "ca.crt",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        for (name, serial) in [("good", "0x1001"), ("revoked", "0x1002")] {
            let secret = dir.join(name);
            std::fs::create_dir_all(&secret).unwrap();
            let ext = format!(
                "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\nsubjectAltName=DNS:{name}.client.{SERVICE_HOST}\n"
            );
            std::fs::write(dir.join(format!("{name}.ext")), ext).unwrap();
            openssl(dir, &[&ec[..], &[&format!("{name}/tls.key")]].concat());
            openssl(dir, &["req", "-new", "-key", &format!("{name}/tls.key"), "-subj", &format!("/CN={name}.client"), "-out", &format!("{name}.csr")]);
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{name}.csr"),
                    "-CA",
                    "ca.crt",
                    "-CAkey",
                    "ca.key",
                    "-set_serial",
                    serial,
                    "-days",
                    "30",
                    "-extfile",
                    &format!("{name}.ext"),
                    "-out",
                    &format!("{name}/tls.crt"),
                ],
            );
        }
        std::fs::write(dir.join("index.txt"), "").unwrap();
        std::fs::write(dir.join("crlnumber"), "1000\n").unwrap();
        std::fs::write(
            dir.join("ca.cnf"),
            "[ca]\ndefault_ca = test_ca\n[test_ca]\ndatabase = index.txt\ncrlnumber = crlnumber\ndefault_md = sha256\n\
             default_crl_days = 30\ncertificate = ca.crt\nprivate_key = ca.key\n",
        )
        .unwrap();
        openssl(dir, &["ca", "-config", "ca.cnf", "-revoke", "revoked/tls.crt"]);
        openssl(dir, &["ca", "-config", "ca.cnf", "-gencrl", "-out", "ca.crl"]);
        OpensslCa { ca: dir.join("ca.crt"), good: dir.join("good"), revoked: dir.join("revoked"), crl: dir.join("ca.crl") }
    }
}

fn config(server: &Path, crl_ca: &OpensslCa, backend: u16) -> Config {
    let crl_tls = inline(&[
        ("mode", quoted("mutual")),
        ("cert", quoted_path(&server.join("tls.crt"))),
        ("key", quoted_path(&server.join("tls.key"))),
        ("ca", quoted_path(&crl_ca.ca)),
        ("ca_crl", quoted_path(&crl_ca.crl)),
    ]);
    Config::new()
        .listener(Listener::mutual("mtls", server))
        .listener(Listener::with_tls("crl", crl_tls))
        .route(Route::to("echo", backend).hosts(&[SERVICE_HOST]))
}

/// One bad certificate: its Secret, what the rustls client and s_client must report,
/// what the access log must say, and the refusal label.
struct Case {
    name: &'static str,
    secret: PathBuf,
    rustls_error: &'static str,
    openssl_alert: &'static str,
    log_reason: &'static str,
    label: &'static str,
}

#[test]
fn bad_client_certificates_are_refused_and_good_clients_still_served() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let ca = TestCa::new(&pki, "client-ca");
    let server = ca.server("server", SERVICE_HOST);
    let crl_ca = OpensslCa::new(&pki.path("openssl-ca"));
    let mut ingress = Gateway::start(Role::Ingress, pki.dir.path(), &config(&server, &crl_ca, echo.port).toml());
    let (port, crl_port) = (ingress.port("mtls"), ingress.port("crl"));
    let client_dns = format!("client.{SERVICE_HOST}");
    let client_leaf = || leaf("client", Usage::Client, &[&client_dns], &[]);
    let good_secret = ca.issue("good", &client_leaf());
    let good = presenting(&good_secret, &ca.ca_file);
    let crl_good = presenting(&crl_ca.good, &ca.ca_file);
    served(port, SERVICE_HOST, good.clone(), "start");
    served(crl_port, SERVICE_HOST, crl_good.clone(), "start (CRL listener)");

    let mut expired = client_leaf();
    (expired.valid_from, expired.valid_until) = (Duration::days(-10), Duration::days(-1));
    let mut not_yet_valid = client_leaf();
    (not_yet_valid.valid_from, not_yet_valid.valid_until) = (Duration::days(1), Duration::days(30));
    let server_only = leaf("client", Usage::Server, &[&client_dns], &[]);
    let cases = [
        Case {
            name: "expired",
            secret: ca.issue("expired", &expired),
            rustls_error: "CertificateExpired",
            openssl_alert: "alert certificate expired",
            log_reason: "invalid peer certificate: certificate expired",
            label: "bad_certificate",
        },
        Case {
            name: "not-yet-valid",
            secret: ca.issue("not-yet-valid", &not_yet_valid),
            rustls_error: "CertificateExpired",
            openssl_alert: "alert certificate expired",
            log_reason: "invalid peer certificate: certificate not valid yet",
            label: "bad_certificate",
        },
        Case {
            name: "no-client-auth-eku",
            secret: ca.issue("server-only", &server_only),
            rustls_error: "UnsupportedCertificate",
            openssl_alert: "alert unsupported certificate",
            log_reason: "invalid peer certificate: certificate does not allow extended key usage for client authentication",
            label: "bad_certificate",
        },
        Case {
            name: "other-ca",
            secret: pki.foreign("foreign-client", &client_leaf()),
            rustls_error: "UnknownCA",
            openssl_alert: "alert unknown ca",
            log_reason: "invalid peer certificate: UnknownIssuer",
            label: "unknown_ca",
        },
    ];

    let mut counted: std::collections::BTreeMap<&str, f64> = Default::default();
    for case in &cases {
        let how = refused(port, SERVICE_HOST, presenting(&case.secret, &ca.ca_file));
        assert!(how.contains(case.rustls_error), "{} (rustls): {how}", case.name);
        served(port, SERVICE_HOST, good.clone(), &format!("a client certificate: {} (rustls)", case.name));

        let args = s_client_args(&["-quiet"], SERVICE_HOST, &ca.ca_file, &case.secret);
        let (ok, out) = s_client(pki.dir.path(), case.name, port, &args);
        assert!(!ok && out.contains(case.openssl_alert), "{} (openssl):\n{out}", case.name);
        served(port, SERVICE_HOST, good.clone(), &format!("a client certificate: {} (openssl)", case.name));

        let lines = wait_for_lines(&ingress, &["listener=mtls ", "outcome=refused", case.log_reason], 2);
        assert_eq!(lines.len(), 2, "{}: {lines:#?}", case.name);
        for line in &lines {
            assert!(line.contains("identity=- ") && line.contains("route=- ") && line.contains("bytes_received=0 "), "{line}");
            assert!(line.contains(&format!("sni={SERVICE_HOST} ")), "{line}");
        }
        *counted.entry(case.label).or_default() += 2.0;
        for (label, count) in &counted {
            let value = metric(&ingress, "strait_handshake_failures_total", &[("listener", "mtls"), ("reason", label)]);
            assert_eq!(value, *count, "after {}: strait_handshake_failures_total{{reason=\"{label}\"}}", case.name);
        }
    }
    assert_eq!(metric(&ingress, "strait_handshake_failures_total", &[("listener", "mtls"), ("reason", "bad_certificate")]), 6.0);
    assert_eq!(metric(&ingress, "strait_handshake_failures_total", &[("listener", "mtls"), ("reason", "unknown_ca")]), 2.0);

    // Revoked by the CRL; its sibling from the same CA, not on the CRL, is served.
    let how = refused(crl_port, SERVICE_HOST, presenting(&crl_ca.revoked, &ca.ca_file));
    assert!(how.contains("CertificateRevoked"), "revoked (rustls): {how}");
    served(crl_port, SERVICE_HOST, crl_good.clone(), "a revoked client certificate (rustls)");
    let args = s_client_args(&["-quiet"], SERVICE_HOST, &ca.ca_file, &crl_ca.revoked);
    let (ok, out) = s_client(pki.dir.path(), "revoked", crl_port, &args);
    assert!(!ok && out.contains("alert certificate revoked"), "revoked (openssl):\n{out}");
    served(crl_port, SERVICE_HOST, crl_good, "a revoked client certificate (openssl)");
    let lines = wait_for_lines(&ingress, &["listener=crl ", "outcome=refused", "Revoked"], 2);
    assert!(lines.iter().all(|l| l.contains("identity=- ") && l.contains("route=- ")), "{lines:#?}");
    assert_eq!(metric(&ingress, "strait_handshake_failures_total", &[("listener", "crl"), ("reason", "bad_certificate")]), 2.0);

    // Nothing refused reached the backend; every good client did.
    let served_lines = ingress.access_log().into_iter().filter(|l| l.contains("outcome=closed")).count();
    assert_eq!(served_lines, 2 + 2 * cases.len() + 2, "{:#?}", ingress.access_log());
    assert_eq!(ingress.access_log().iter().filter(|l| l.contains("outcome=refused")).count(), 2 * cases.len() + 2);
    assert_alive(&mut ingress);
}
