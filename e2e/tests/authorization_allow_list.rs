//! Authorization per route, as Istio's AuthorizationPolicy `principals`: a client
//! certificate from the trusted CA passes only if one of its names is on the route's
//! allow list (a SPIFFE glob, a DNS SAN, a subject CN). Everyone else — even with a
//! perfectly valid certificate — is refused after the handshake with `outcome=denied`
//! naming the identity, and counted as `denied_identity`; a good client is served after
//! each. A certificate with an allowed name from a CA the listener does not trust is a
//! handshake refusal, not a denial: the allow list narrows trust, it never extends it.

use strait::certs::Usage;
use strait_e2e::config::list;
use strait_e2e::hostile::*;
use strait_e2e::*;

const SPIFFE_ALLOWED: &str = "spiffe://cluster.local/ns/default/sa/client";

/// A client certificate from the trusted CA whose names are all off the list, and the
/// identity the access log shows for it.
struct Outsider {
    name: &'static str,
    cn: &'static str,
    dns: &'static [&'static str],
    uris: &'static [&'static str],
    shown: &'static str,
}

fn config(server: &std::path::Path, backend: u16) -> Config {
    let allow = list(&["spiffe://cluster.local/ns/default/sa/*", &format!("dns:client.{SERVICE_HOST}"), "cn:ops-console"]);
    Config::new().listener(Listener::mutual("mtls", server)).route(Route::to("payments-db", backend).hosts(&[SERVICE_HOST]).set("allow", allow))
}

#[test]
fn only_identities_on_the_allow_list_reach_the_backend() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let ca = TestCa::new(&pki, "authz-ca");
    let server = ca.server("server", SERVICE_HOST);
    let mut ingress = Gateway::start(Role::Ingress, pki.dir.path(), &config(&server, echo.port).toml());
    let port = ingress.port("mtls");
    let client = |name: &str, cn: &str, dns: &[&str], uris: &[&str]| {
        let secret = ca.issue(name, &leaf(cn, Usage::Client, dns, uris));
        (secret.clone(), presenting(&secret, &ca.ca_file))
    };
    let (spiffe_secret, spiffe) = client("spiffe-client", "client", &[], &[SPIFFE_ALLOWED]);
    let good_dns = format!("client.{SERVICE_HOST}");
    let (_, dns) = client("dns-client", "egress", &[&good_dns], &[]);
    let (_, cn) = client("cn-client", "ops-console", &[], &[]);

    // Each kind of allow-list entry admits its identity.
    served(port, SERVICE_HOST, spiffe.clone(), "start (SPIFFE glob)");
    ingress.wait_for_access_line(&["outcome=closed", &format!("identity={SPIFFE_ALLOWED} ")]);
    served(port, SERVICE_HOST, dns.clone(), "start (DNS SAN)");
    ingress.wait_for_access_line(&["outcome=closed", &format!("identity={good_dns} ")]);
    served(port, SERVICE_HOST, cn.clone(), "start (CN)");
    ingress.wait_for_access_line(&["outcome=closed", "identity=CN=ops-console "]);

    // Valid certificates from the trusted CA whose names are not on the list.
    let denied = [
        Outsider {
            name: "other-namespace",
            cn: "api",
            dns: &[],
            uris: &["spiffe://cluster.local/ns/payments/sa/api"],
            shown: "spiffe://cluster.local/ns/payments/sa/api",
        },
        Outsider {
            name: "other-trust-domain",
            cn: "client",
            dns: &[],
            uris: &["spiffe://evil.example/ns/default/sa/client"],
            shown: "spiffe://evil.example/ns/default/sa/client",
        },
        Outsider {
            name: "no-service-account",
            cn: "client",
            dns: &[],
            uris: &["spiffe://cluster.local/ns/default/sa"],
            shown: "spiffe://cluster.local/ns/default/sa",
        },
        Outsider { name: "other-dns", cn: "egress", dns: &["intruder.db.strait.test"], uris: &[], shown: "intruder.db.strait.test" },
        Outsider { name: "other-cn", cn: "ops-console-2", dns: &[], uris: &[], shown: "CN=ops-console-2" },
    ];
    for (i, Outsider { name, cn: cn_name, dns: dns_names, uris, shown }) in denied.iter().enumerate() {
        let (_, config) = client(name, cn_name, dns_names, uris);
        let how = refused(port, SERVICE_HOST, config);
        assert!(!how.starts_with("handshake failed"), "{name}: a valid certificate must pass the handshake and then be denied: {how}");
        let line = ingress.wait_for_access_line(&["outcome=denied", &format!("identity={shown} ")]);
        assert!(line.contains(&format!("reason=identity {shown} is not on route \"payments-db\"'s allow list")), "{line}");
        assert!(line.contains("route=payments-db ") && line.contains("upstream=- ") && line.contains("bytes_received=0 "), "{line}");
        assert_eq!(
            wait_for_metric(&ingress, "strait_handshake_failures_total", &[("listener", "mtls"), ("reason", "denied_identity")], i as f64 + 1.0),
            i as f64 + 1.0
        );
        served(port, SERVICE_HOST, spiffe.clone(), &format!("a denied identity ({name})"));
    }

    // The same denial seen by openssl s_client: the handshake completes, then the
    // gateway closes without a byte of data.
    let denied_secret = ca.issue("openssl-denied", &leaf("api", Usage::Client, &[], &["spiffe://cluster.local/ns/payments/sa/api"]));
    let args = s_client_args(&["-quiet"], SERVICE_HOST, &ca.ca_file, &denied_secret);
    let (_, out) = s_client(pki.dir.path(), "denied", port, &args);
    assert!(out.contains("verify return:1") && !out.contains("alert"), "the handshake itself must succeed:\n{out}");
    wait_for_lines(&ingress, &["outcome=denied", "identity=spiffe://cluster.local/ns/payments/sa/api "], 2);
    served(port, SERVICE_HOST, spiffe.clone(), "a denied identity (openssl)");
    // ... and an allowed one through openssl, to the backend and back.
    let args = s_client_args(&["-quiet", "-no_ign_eof"], SERVICE_HOST, &ca.ca_file, &spiffe_secret);
    let mut allowed = Interactive::s_client(pki.dir.path(), "allowed", port, &args);
    allowed.send("allowed through openssl\n");
    assert!(allowed.wait_for("allowed through openssl", std::time::Duration::from_secs(10)), "{}", allowed.output());
    drop(allowed);

    // An allowed SPIFFE ID from a CA the listener does not trust (the reference mesh CA):
    // refused in the handshake as unknown_ca, before authorization is even asked.
    let how = refused(port, SERVICE_HOST, client_config(Some(&pki.path("mesh/client")), &ca.ca_file));
    assert!(how.contains("UnknownCA"), "{how}");
    let line = ingress.wait_for_access_line(&["outcome=refused", "UnknownIssuer"]);
    assert!(line.contains("identity=- ") && line.contains("route=- "), "{line}");
    assert_eq!(metric(&ingress, "strait_handshake_failures_total", &[("listener", "mtls"), ("reason", "unknown_ca")]), 1.0);
    served(port, SERVICE_HOST, spiffe, "an allowed name from an untrusted CA");

    // Totals: six denials, each counted once, none reached the backend.
    assert_eq!(metric(&ingress, "strait_handshake_failures_total", &[("listener", "mtls"), ("reason", "denied_identity")]), 6.0);
    assert_eq!(metric(&ingress, "strait_tcp_connections_closed_total", &[("listener", "mtls"), ("outcome", "denied")]), 6.0);
    assert_eq!(metric(&ingress, "strait_tcp_connections_opened_total", &[("listener", "mtls")]), 11.0, "only allowed clients are opened");
    assert_alive(&mut ingress);
}
