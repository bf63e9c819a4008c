//! The ingress refuses what it must — an SNI no route claims, a client without SNI
//! (no `default_route`), a client without a certificate, a certificate from a CA it
//! does not trust — with a TLS alert and an `outcome=refused` access-log line, and
//! keeps serving: after every refusal a good client still gets through.
//!
//! Each refusal is made twice, by the rustls client and by `openssl s_client` (which
//! names the alert it received). In TLS 1.3 the client's certificate is judged after
//! the client has finished its side of the handshake, so a refused certificate shows as
//! "no data, an alert or a close at the first read", not necessarily a handshake error.

use strait::certs::{Leaf, Usage};
use strait_e2e::hostile::{cert_args, refused, s_client, s_client_args, served, wait_for_lines};
use strait_e2e::*;

const UNKNOWN_HOST: &str = "unknown.strait.test";

#[test]
fn refused_clients_are_logged_and_good_clients_still_served() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let (mut ingress, port) = Gateway::reference_ingress(&pki, echo.port);
    let ingress_ca = pki.path("ingress/ca.crt");
    let good = pki.egress_client();
    let mut client_leaf = Leaf::new(&format!("client.{SERVICE_HOST}"), Usage::Client, 30);
    client_leaf.dns.push(format!("client.{SERVICE_HOST}"));
    let foreign = pki.foreign("foreign-client", &client_leaf);
    let ca_arg = ingress_ca.display().to_string();

    served(port, SERVICE_HOST, pki.egress_client(), "start");

    // An SNI no route claims: an alert during the handshake, whatever the certificate.
    let how = refused(port, UNKNOWN_HOST, good.clone());
    assert!(how.starts_with("handshake failed") && how.contains("alert"), "unknown SNI: {how}");
    served(port, SERVICE_HOST, pki.egress_client(), "an unknown SNI (rustls)");
    let args = s_client_args(&["-quiet"], UNKNOWN_HOST, &ingress_ca, &pki.path("egress"));
    let (ok, out) = s_client(pki.dir.path(), "unknown-sni", port, &args);
    assert!(!ok && out.contains(" alert "), "s_client with an unknown SNI:\n{out}");
    served(port, SERVICE_HOST, pki.egress_client(), "an unknown SNI (openssl)");
    let lines = wait_for_lines(&ingress, &["outcome=refused", &format!("sni={UNKNOWN_HOST} ")], 2);
    for line in &lines {
        assert!(line.contains(&format!("reason=unknown SNI \"{UNKNOWN_HOST}\"")), "{line}");
        assert!(line.contains("route=- ") && line.contains("upstream=- "), "{line}");
    }

    // No SNI at all, and the listener has no default_route.
    let mut args = vec!["-quiet".to_owned(), "-noservername".into(), "-CAfile".into(), ca_arg.clone()];
    args.extend(cert_args(&pki.path("egress")));
    let (ok, out) = s_client(pki.dir.path(), "no-sni", port, &args);
    assert!(!ok && out.contains(" alert "), "s_client without SNI:\n{out}");
    served(port, SERVICE_HOST, pki.egress_client(), "a client without SNI");
    let line = ingress.wait_for_access_line(&["outcome=refused", "sni=- "]);
    assert!(line.contains("no SNI and the listener has no default_route"), "{line}");

    // No client certificate: mutual TLS demands one.
    let anonymous = client_config(None, &ingress_ca);
    let how = refused(port, SERVICE_HOST, anonymous);
    assert!(how.contains("alert") && how.contains("CertificateRequired"), "no client certificate: {how}");
    served(port, SERVICE_HOST, pki.egress_client(), "a client without a certificate (rustls)");
    let (ok, out) = s_client(pki.dir.path(), "no-cert", port, &["-quiet", "-servername", SERVICE_HOST, "-CAfile", &ca_arg]);
    assert!(!ok && out.contains("alert certificate required"), "s_client without a certificate:\n{out}");
    served(port, SERVICE_HOST, pki.egress_client(), "a client without a certificate (openssl)");
    let lines = wait_for_lines(&ingress, &["outcome=refused", "peer sent no certificates"], 2);
    for line in &lines {
        assert!(line.contains(&format!("sni={SERVICE_HOST} ")) && line.contains("identity=- "), "{line}");
        assert!(line.contains("route=- ") && line.contains("bytes_received=0 "), "{line}");
    }

    // The same names as the good client's certificate, issued by a CA the ingress does
    // not trust.
    let outsider = client_config(Some(&foreign), &ingress_ca);
    let how = refused(port, SERVICE_HOST, outsider);
    assert!(how.contains("alert") && how.contains("UnknownCA"), "foreign client certificate: {how}");
    served(port, SERVICE_HOST, pki.egress_client(), "a foreign client certificate (rustls)");
    let args = s_client_args(&["-quiet"], SERVICE_HOST, &ingress_ca, &foreign);
    let (ok, out) = s_client(pki.dir.path(), "foreign-cert", port, &args);
    assert!(!ok && out.contains("alert unknown ca"), "s_client with a foreign certificate:\n{out}");
    served(port, SERVICE_HOST, pki.egress_client(), "a foreign client certificate (openssl)");
    let lines = wait_for_lines(&ingress, &["outcome=refused", "UnknownIssuer"], 2);
    for line in &lines {
        assert!(line.contains(&format!("sni={SERVICE_HOST} ")) && line.contains("identity=- "), "{line}");
        assert!(line.contains("route=- ") && line.contains("bytes_received=0 "), "{line}");
    }

    // Still alive, every refusal logged once, every good client served and logged.
    assert!(ingress.proc.try_wait().is_none(), "the ingress exited:\n{}", ingress.proc.output());
    let refused = wait_for_lines(&ingress, &["outcome=refused"], 7);
    assert_eq!(refused.len(), 7, "{refused:#?}");
    let served = wait_for_lines(&ingress, &["route=mysql ", "outcome=closed", &format!("identity=client.{SERVICE_HOST} ")], 8);
    assert_eq!(served.len(), 8, "{served:#?}");
    assert!(ingress.access_log().iter().all(|l| l.contains("outcome=refused") || l.contains("outcome=closed")), "{:#?}", ingress.access_log());
}
