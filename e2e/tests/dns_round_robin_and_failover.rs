//! The egress resolves its upstream through a real DNS server (dnsmasq): a name with two
//! A records spreads connections over both ingresses, a dead ingress is skipped for the
//! next address, and a name with no answer refuses the client with the DNS reason logged.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use strait_e2e::dns::Dnsmasq;
use strait_e2e::*;

const INGRESS_NAME: &str = "ingress.strait.test";
const FIRST: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
const SECOND: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 3);
/// Connections per phase; even, so a strict round robin gives each ingress half.
const N: usize = 10;

/// One echo round trip through the egress plain port; the echoed text, or why not.
fn echo_through(port: u16, message: &str) -> Result<String, String> {
    let reply = exchange_within(port, message.as_bytes(), Duration::from_secs(15)).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

/// Access-log lines of `gateway` containing every one of `needles`.
fn count_lines(gateway: &Gateway, needles: &[&str]) -> usize {
    gateway.access_log().iter().filter(|l| needles.iter().all(|n| l.contains(n))).count()
}

/// Waits until `gateway` has logged exactly `expected` lines with `needles`.
fn wait_for_count(gateway: &Gateway, needles: &[&str], expected: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while count_lines(gateway, needles) < expected {
        assert!(Instant::now() < deadline, "fewer than {expected} lines with {needles:?} in:\n{}", gateway.proc.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(count_lines(gateway, needles), expected, "{}", gateway.proc.output());
}

#[test]
fn two_a_records_share_the_load_and_a_dead_ingress_is_skipped() {
    let pki = Pki::reference();
    let backend = EchoServer::start();
    let dns = Dnsmasq::start(&[(INGRESS_NAME, FIRST), (INGRESS_NAME, SECOND)]);
    // One upstream name, one port: the first ingress takes any port on its address, the
    // second binds the same port on its own address.
    let ingress_at = |address: SocketAddr| {
        let listener = ingress_listener(&pki.path("ingress")).at(address);
        Gateway::start(Role::Ingress, pki.dir.path(), &ingress_config_with(listener, backend.port).toml())
    };
    let first = ingress_at(SocketAddr::from((FIRST, 0)));
    let ingress_port = first.port("mtls");
    let mut ingresses = vec![first, ingress_at(SocketAddr::from((SECOND, ingress_port)))];
    let upstream = format!("{INGRESS_NAME}:{ingress_port}");
    let egress = Gateway::start(Role::Egress, pki.dir.path(), &egress_config(&pki, &upstream).raw(&dns.resolver_table()).toml());
    let plain_port = egress.port("mysql-plain");

    // Round robin: consecutive connections alternate between the two addresses.
    for i in 0..N {
        let message = format!("round robin {i}");
        assert_eq!(echo_through(plain_port, &message).as_deref(), Ok(message.as_str()));
    }
    let first_upstream = format!("upstream={FIRST}:{ingress_port}");
    let second_upstream = format!("upstream={SECOND}:{ingress_port}");
    wait_for_count(&egress, &["outcome=closed"], N);
    let to_first = count_lines(&egress, &["outcome=closed", &first_upstream]);
    let to_second = count_lines(&egress, &["outcome=closed", &second_upstream]);
    assert_eq!((to_first, to_second), (N / 2, N / 2), "egress log:\n{}", egress.proc.output());
    // And each ingress really served its share (it logs the egress's client identity).
    for ingress in &ingresses {
        wait_for_count(ingress, &["route=mysql", "outcome=closed", &format!("identity=client.{SERVICE_HOST}")], N / 2);
    }
    assert!(dns.proc.output().contains(&format!("query[A] {INGRESS_NAME}")), "dnsmasq log:\n{}", dns.proc.output());

    // Kill the first ingress: the name still answers with its address, and every
    // connection must fall through to the second one.
    ingresses[0].proc.kill();
    assert!(TcpStream::connect((FIRST, ingress_port)).is_err(), "the first ingress still accepts after being killed");
    for i in 0..N {
        let message = format!("failover {i}");
        assert_eq!(
            echo_through(plain_port, &message).as_deref(),
            Ok(message.as_str()),
            "connection {i} after the first ingress died; egress log:\n{}",
            egress.proc.output()
        );
    }
    wait_for_count(&egress, &["outcome=closed"], 2 * N);
    assert_eq!(count_lines(&egress, &["outcome=closed", &second_upstream]), N / 2 + N, "{}", egress.proc.output());
    assert_eq!(count_lines(&egress, &["outcome=upstream_failed"]), 0, "{}", egress.proc.output());
    wait_for_count(&ingresses[1], &["route=mysql", "outcome=closed"], N / 2 + N);
}

#[test]
fn a_name_without_an_answer_is_refused_and_logged() {
    let pki = Pki::reference();
    let dns = Dnsmasq::start(&[(INGRESS_NAME, FIRST)]);
    // The name never resolves, so the port is never dialled.
    let upstream = "missing.strait.test:13306";
    let egress = Gateway::start(Role::Egress, pki.dir.path(), &egress_config(&pki, upstream).raw(&dns.resolver_table()).toml());
    let plain_port = egress.port("mysql-plain");

    // The client is accepted, then closed without a byte: nothing could be reached.
    let result = echo_through(plain_port, "anyone there?");
    assert!(matches!(result.as_deref(), Ok("") | Err(_)), "the client got a reply from nowhere: {result:?}");
    let line = egress.wait_for_access_line(&["listener=mysql-plain", "outcome=upstream_failed"]);
    assert!(line.contains("no DNS answer"), "{line}");
    assert!(line.contains("missing.strait.test"), "{line}");
    assert!(line.contains("upstream=-"), "{line}");
    assert!(dns.proc.output().contains("missing.strait.test is NXDOMAIN"), "dnsmasq log:\n{}", dns.proc.output());
}
