//! TLS policy at the ingress: `openssl s_client` offering only TLS 1.0 or TLS 1.1 is
//! refused with a fatal alert; TLS 1.2 is served by default and refused where the
//! listener says `min_version = "1.3"`; a TLS 1.2 renegotiation attempt never
//! renegotiates (no byte after it reaches the backend, and the connection ends within
//! the route's idle timeout). A good client is served after every refusal.

use std::sync::Arc;
use std::time::Duration;

use strait_e2e::config::{inline, quoted, quoted_path};
use strait_e2e::hostile::*;
use strait_e2e::*;

fn config(pki: &Pki, backend: u16) -> Config {
    let secret = pki.path("ingress");
    let tls13 = inline(&[("mode", quoted("mutual")), ("dir", quoted_path(&secret)), ("min_version", quoted("1.3"))]);
    Config::new()
        .listener(Listener::mutual("mtls", &secret))
        .listener(Listener::with_tls("tls13", tls13))
        .route(Route::to("echo", backend).hosts(&[SERVICE_HOST]).set("idle_timeout", quoted("3s")))
}

/// A rustls client that offers TLS 1.2 only, with the reference client certificate.
fn tls12_only(pki: &Pki) -> Arc<rustls::ClientConfig> {
    let secret = pki.path("egress");
    let config = rustls::ClientConfig::builder_with_provider(strait::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(strait::tls::load_roots(&pki.path("ingress/ca.crt")).unwrap())
        .with_client_auth_cert(strait::tls::load_certs(&secret.join("tls.crt")).unwrap(), strait::tls::load_key(&secret.join("tls.key")).unwrap())
        .unwrap();
    Arc::new(config)
}

/// The s_client arguments every case shares, after `flags`: SNI, trust, the good
/// client certificate.
fn base_args(pki: &Pki, flags: &[&str]) -> Vec<String> {
    s_client_args(flags, SERVICE_HOST, &pki.path("ingress/ca.crt"), &pki.path("egress"))
}

/// Sends a line through s_client and waits for the echo backend's copy.
fn echoed_through_openssl(pki: &Pki, name: &str, port: u16, version: &str) {
    let args = base_args(pki, &[version, "-quiet", "-no_ign_eof"]);
    let mut s_client = Interactive::s_client(pki.dir.path(), name, port, &args);
    s_client.send(&format!("{name} through openssl\n"));
    assert!(s_client.wait_for(&format!("{name} through openssl"), Duration::from_secs(10)), "{name}:\n{}", s_client.output());
    s_client.close_stdin();
    assert!(s_client.wait_exit(Duration::from_secs(10)).is_some(), "{name}: s_client did not exit:\n{}", s_client.output());
}

/// Refusals of old or unwanted versions at `listener` so far.
fn version_refusals(ingress: &Gateway, listener: &str) -> f64 {
    ["protocol_version", "incompatible"]
        .iter()
        .map(|reason| metric(ingress, "strait_handshake_failures_total", &[("listener", listener), ("reason", reason)]))
        .sum()
}

#[test]
fn old_versions_are_refused_and_renegotiation_never_happens() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let mut ingress = Gateway::start(Role::Ingress, pki.dir.path(), &config(&pki, echo.port).toml());
    let (port, tls13_port) = (ingress.port("mtls"), ingress.port("tls13"));
    let good = || pki.egress_client();
    served(port, SERVICE_HOST, good(), "start");

    // TLS 1.0 and 1.1 offers, with every cipher openssl has (security level 0), so the
    // client really offers them; -msg shows the ClientHello's version.
    for (i, (flag, shown)) in [("-tls1", "TLS 1.0"), ("-tls1_1", "TLS 1.1")].into_iter().enumerate() {
        let args = base_args(&pki, &[flag, "-cipher", "DEFAULT:@SECLEVEL=0", "-msg"]);
        let (ok, out) = s_client(pki.dir.path(), flag, port, &args);
        assert!(out.contains(&format!(">>> {shown}, Handshake")) && out.contains("ClientHello"), "{flag}: openssl did not offer {shown}:\n{out}");
        assert!(!ok, "{flag}: s_client succeeded:\n{out}");
        assert!(out.contains("alert handshake failure") || out.contains("alert protocol version"), "{flag}: no fatal alert from the gateway:\n{out}");
        assert!(!out.contains("Cipher is") || out.contains("Cipher is (NONE)"), "{flag}: a cipher was negotiated:\n{out}");
        let lines = wait_for_lines(&ingress, &["listener=mtls ", "outcome=refused"], i + 1);
        assert!(lines.iter().all(|l| l.contains("route=- ") && l.contains("bytes_received=0 ")), "{lines:#?}");
        assert_eq!(version_refusals(&ingress, "mtls"), i as f64 + 1.0, "{flag}: refusal not counted");
        served(port, SERVICE_HOST, good(), &format!("a {shown} offer"));
    }

    // TLS 1.2 is the default minimum: served.
    echoed_through_openssl(&pki, "tls1_2-default", port, "-tls1_2");

    // min_version = "1.3": TLS 1.2 is refused, from openssl and from rustls.
    let args = base_args(&pki, &["-tls1_2"]);
    let (ok, out) = s_client(pki.dir.path(), "tls1_2-on-tls13", tls13_port, &args);
    assert!(!ok && out.contains("alert protocol version"), "TLS 1.2 on a 1.3-only listener:\n{out}");
    let how = refused(tls13_port, SERVICE_HOST, tls12_only(&pki));
    assert!(how.contains("ProtocolVersion"), "rustls TLS 1.2 on a 1.3-only listener: {how}");
    let lines = wait_for_lines(&ingress, &["listener=tls13 ", "outcome=refused"], 2);
    assert!(lines.iter().all(|l| l.contains(&format!("sni={SERVICE_HOST} ")) && l.contains("route=- ")), "{lines:#?}");
    assert_eq!(metric(&ingress, "strait_handshake_failures_total", &[("listener", "tls13"), ("reason", "protocol_version")]), 2.0);
    served(tls13_port, SERVICE_HOST, good(), "TLS 1.2 offers on a 1.3-only listener");
    echoed_through_openssl(&pki, "tls1_3-on-tls13", tls13_port, "-tls1_3");

    // Renegotiation: s_client's "R" command asks for a new handshake inside the TLS 1.2
    // session. It must not happen: nothing typed after it reaches the backend, and the
    // connection ends at once: the gateway answers with its no_renegotiation alert
    // (sent even though no application data follows), well before the 3 s idle timeout.
    let args = base_args(&pki, &["-tls1_2"]);
    let mut s_client = Interactive::s_client(pki.dir.path(), "renegotiation", port, &args);
    assert!(s_client.wait_for("Verify return code: 0 (ok)", Duration::from_secs(10)), "{}", s_client.output());
    s_client.send("before\n");
    assert!(s_client.wait_for("\nbefore\n", Duration::from_secs(10)), "no echo before renegotiation:\n{}", s_client.output());
    s_client.send("R\n");
    assert!(s_client.wait_for("RENEGOTIATING", Duration::from_secs(5)), "{}", s_client.output());
    // The session may already be over (the alert arrived first): then nothing can flow.
    s_client.try_send("after\n");
    let exited = s_client.wait_exit(Duration::from_secs(2));
    let out = s_client.output();
    assert!(exited.is_some(), "the connection was still open 2s after a renegotiation request:\n{out}");
    assert!(out.contains("no renegotiation"), "the client never got the no_renegotiation alert:\n{out}");
    assert!(!out.contains("\nafter\n"), "data flowed after a renegotiation request:\n{out}");
    let line = ingress.wait_for_access_line(&["listener=mtls ", "route=echo ", "bytes_received=7 "]);
    assert!(line.contains("bytes_sent=7 ") && line.contains("outcome=relay_failed"), "{line}");
    served(port, SERVICE_HOST, good(), "a renegotiation attempt");

    assert_alive(&mut ingress);
}
