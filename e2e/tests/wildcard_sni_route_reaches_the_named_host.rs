//! One wildcard route at an ingress TLS listener, `hosts = ["*.db.strait.test"]` with
//! `upstream = "{sni}:PORT"`: `a.db.strait.test` and `b.db.strait.test` (dnsmasq answers
//! them with two loopback addresses) reach two different backends through it, while a
//! name outside the pattern (`c.other.example`) and the bare suffix's neighbour are
//! refused with an alert and counted as `unknown_sni`. The exact host of the reference
//! route keeps its own route.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};

use strait_e2e::config::{inline, quoted, quoted_path, Route};
use strait_e2e::dns::Dnsmasq;
use strait_e2e::*;

const A: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 6);
const B: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 7);

/// A backend on `address` that answers every connection with `name` and closes.
fn named_backend(address: SocketAddr, name: &'static str) -> u16 {
    let listener = TcpListener::bind(address).unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten().take(64) {
            let _ = stream.write_all(name.as_bytes());
        }
    });
    port
}

#[test]
fn a_and_b_reach_their_own_backends_and_other_names_are_refused() {
    let pki = Pki::reference();
    let port = named_backend(SocketAddr::from((A, 0)), "backend a");
    named_backend(SocketAddr::from((B, port)), "backend b");
    let dns = Dnsmasq::start(&[("a.db.strait.test", A), ("b.db.strait.test", B)]);
    let echo = EchoServer::start();
    // The family's certificate: a wildcard SAN from its own CA.
    let wild = pki.server_secret("wild", "*.db.strait.test");
    let family = Route::new("family", &format!("{{sni}}:{port}"))
        .hosts(&["*.db.strait.test"])
        .set("downstream_tls", inline(&[("cert", quoted_path(&wild.join("tls.crt"))), ("key", quoted_path(&wild.join("tls.key")))]))
        .set("connect_timeout", quoted("2s"));
    let config = ingress_config(&pki, echo.port).route(family).raw(&dns.resolver_table());
    let ingress = Gateway::start(Role::Ingress, pki.dir.path(), &config.toml());
    let tls_port = ingress.port("mtls");
    let client = client_config(Some(&pki.path("egress")), &wild.join("ca.crt"));

    for (sni, expected) in [("a.db.strait.test", "backend a"), ("b.db.strait.test", "backend b"), ("A.DB.strait.test", "backend a")] {
        let mut stream = tls_connect(tls_port, sni, client.clone()).unwrap_or_else(|e| panic!("{sni}: {e}\n{}", ingress.proc.output()));
        let mut reply = String::new();
        let _ = stream.read_to_string(&mut reply);
        assert_eq!(reply, expected, "{sni}: {}", ingress.proc.output());
    }
    let line = ingress.wait_for_access_line(&["route=family", "sni=b.db.strait.test", "outcome=closed"]);
    assert!(line.contains(&format!("upstream={B}:{port}")), "{line}");

    // The exact reference host is not the wildcard's: it keeps its route.
    let mut stream = tls_connect(tls_port, SERVICE_HOST, pki.egress_client()).unwrap();
    stream.write_all(b"exact").unwrap();
    stream.conn.send_close_notify();
    let _ = stream.conn.complete_io(&mut stream.sock);
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    assert_eq!(reply, b"exact", "{}", ingress.proc.output());
    ingress.wait_for_access_line(&["route=mysql", &format!("sni={SERVICE_HOST}"), "outcome=closed"]);

    // Outside the pattern: refused at the handshake, logged and counted.
    for outside in ["c.other.example", "adb.strait.test"] {
        let refused = tls_connect(tls_port, outside, client.clone()).and_then(|mut s| s.read(&mut [0u8; 16]));
        assert!(matches!(refused, Err(_) | Ok(0)), "{outside} was served: {refused:?}");
        ingress.wait_for_access_line(&[&format!("sni={outside}"), "outcome=refused", "unknown SNI"]);
    }
    let metrics = ingress.admin("GET", "/metrics").1;
    assert!(metrics.contains("strait_handshake_failures_total{listener=\"mtls\",reason=\"unknown_sni\"} 2"), "{metrics}");
    let (_, dump) = ingress.admin("GET", "/config_dump");
    assert!(dump.contains("\"upstream\":\"{sni}:") && dump.contains("*.db.strait.test"), "{dump}");
}
