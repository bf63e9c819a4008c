//! The PROXY protocol both ways with a real HAProxy.
//! - HAProxy in front of the egress (`send-proxy-v2`): the access log shows each
//!   client's own address, not HAProxy's, and the route's `source_ranges` judges that
//!   address (one client allowed, another denied, both arriving from HAProxy). A PROXY
//!   header from an address outside `trusted`, and a trusted peer without a header, are
//!   refused with their reasons and counted.
//! - The egress in front of HAProxy (`send_proxy_protocol = "v2"`, HAProxy
//!   `accept-proxy`): HAProxy's log shows the original client address and port.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};

use strait_e2e::config::{list, quoted, Config, Listener, Route};
use strait_e2e::haproxy::{connect_from, HaProxy};
use strait_e2e::*;

const ALLOWED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 8);
const DENIED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 9);
const UNTRUSTED: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 10);

/// Sends `message` on a connection from `source` to `port`, half-closes, and returns
/// what came back (empty when the far end closed without a reply).
fn exchange_from(source: Ipv4Addr, port: u16, message: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = connect_from(source, port).unwrap();
    let local = stream.local_addr().unwrap().port();
    let _ = stream.write_all(message);
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply);
    (local, reply)
}

#[test]
fn haproxy_in_front_the_access_log_and_source_ranges_see_the_original_client() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let listener = Listener::plain("from-lb", "echo").set("proxy_protocol", "{ trusted = [\"127.0.0.1/32\"] }");
    let route = Route::to("echo", echo.port).plaintext().set("source_ranges", list(&[&format!("{ALLOWED}/32")]));
    let egress = Gateway::start(Role::Egress, pki.dir.path(), &Config::new().listener(listener).route(route).toml());
    let egress_port = egress.port("from-lb");
    let haproxy = HaProxy::start("", SocketAddr::from(([127, 0, 0, 1], egress_port)), "send-proxy-v2");

    let (port, reply) = exchange_from(ALLOWED, haproxy.port, b"through haproxy");
    assert_eq!(reply, b"through haproxy", "{}\n{}", egress.proc.output(), haproxy.proc.output());
    let line = egress.wait_for_access_line(&[&format!("downstream={ALLOWED}:{port}"), "outcome=closed"]);
    assert!(line.contains("listener=from-lb") && line.contains("route=echo"), "{line}");

    // Also through HAProxy (so from 127.0.0.1 on the wire), but outside source_ranges.
    let (port, reply) = exchange_from(DENIED, haproxy.port, b"let me in");
    assert!(reply.is_empty(), "a client outside source_ranges got {reply:?}");
    let line = egress.wait_for_access_line(&[&format!("downstream={DENIED}:{port}"), "outcome=denied"]);
    assert!(line.contains(&format!("client address {DENIED} is outside route \"echo\"'s source_ranges")), "{line}");

    // A PROXY header from an address that is not trusted: refused, whatever it claims.
    let header = strait::proxy_protocol::header(
        strait::config::ProxyVersion::V2,
        SocketAddr::from((ALLOWED, 1234)),
        SocketAddr::from(([127, 0, 0, 1], egress_port)),
        None,
    )
    .unwrap();
    let (port, reply) = exchange_from(UNTRUSTED, egress_port, &[header.as_slice(), b"spoofed"].concat());
    assert!(reply.is_empty(), "{reply:?}");
    let line = egress.wait_for_access_line(&[&format!("downstream={UNTRUSTED}:{port}"), "outcome=refused"]);
    assert!(line.contains(&format!("{UNTRUSTED} is not a trusted PROXY protocol source")), "{line}");
    // A trusted peer that sends no header: refused too.
    let (port, _) = exchange_from(Ipv4Addr::LOCALHOST, egress_port, b"hello, no header");
    let line = egress.wait_for_access_line(&[&format!("downstream=127.0.0.1:{port}"), "outcome=refused"]);
    assert!(line.contains("no PROXY protocol header"), "{line}");

    let metrics = egress.admin("GET", "/metrics").1;
    assert!(metrics.contains("strait_handshake_failures_total{listener=\"from-lb\",reason=\"proxy_protocol\"} 2"), "{metrics}");
    assert!(metrics.contains("strait_handshake_failures_total{listener=\"from-lb\",reason=\"denied_source\"}"), "{metrics}");
    // And the allowed client is still served afterwards.
    let (_, reply) = exchange_from(ALLOWED, haproxy.port, b"again");
    assert_eq!(reply, b"again");
}

#[test]
fn strait_sends_v2_and_haproxy_logs_the_original_client() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let haproxy = HaProxy::start("accept-proxy", SocketAddr::from(([127, 0, 0, 1], echo.port)), "");
    let route = Route::to("to-lb", haproxy.port).plaintext().set("send_proxy_protocol", quoted("v2"));
    let egress = Gateway::start(Role::Egress, pki.dir.path(), &Config::new().listener(Listener::plain("app", "to-lb")).route(route).toml());
    let port = egress.port("app");

    let (client_port, reply) = exchange_from(ALLOWED, port, b"to haproxy with a header");
    assert_eq!(reply, b"to haproxy with a header", "{}\n{}", egress.proc.output(), haproxy.proc.output());
    let line = haproxy.wait_for_line(&format!("{ALLOWED}:{client_port} "));
    assert!(line.contains("front back/upstream"), "{line}");
    egress.wait_for_access_line(&[&format!("downstream={ALLOWED}:{client_port}"), "outcome=closed"]);
}
