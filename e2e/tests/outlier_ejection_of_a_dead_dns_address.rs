//! One upstream name (dnsmasq) answers with two addresses, and nothing listens on the
//! first: its connects are refused, each falls through to the second address, and after
//! `consecutive_failures` in a row the dead address is ejected. Clients are served from
//! the other address all along; the ejection shows in the metrics, in `/config_dump`
//! and in the log, and the dead address is not tried again while ejected.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use strait_e2e::config::{inline, quoted};
use strait_e2e::dns::Dnsmasq;
use strait_e2e::*;

const INGRESS_NAME: &str = "ingress.strait.test";
const DEAD: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 4);
const LIVE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 5);
/// Connections after the ejection: none of them may try the dead address.
const N: usize = 10;

fn echo_through(port: u16, message: &str) -> Result<String, String> {
    let reply = exchange_within(port, message.as_bytes(), Duration::from_secs(15)).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

#[test]
fn a_refusing_address_is_ejected_and_clients_are_served_from_the_other() {
    let pki = Pki::reference();
    let backend = EchoServer::start();
    let dns = Dnsmasq::start(&[(INGRESS_NAME, DEAD), (INGRESS_NAME, LIVE)]);
    let listener = ingress_listener(&pki.path("ingress")).at(SocketAddr::from((LIVE, 0)));
    let ingress = Gateway::start(Role::Ingress, pki.dir.path(), &ingress_config_with(listener, backend.port).toml());
    let port = ingress.port("mtls");
    assert!(std::net::TcpStream::connect((DEAD, port)).is_err(), "something listens on {DEAD}:{port}");
    let endpoint = format!("{INGRESS_NAME}:{port}");
    let outlier = inline(&[("consecutive_failures", "2".into()), ("base_ejection_time", quoted("60s")), ("max_ejection_percent", "50".into())]);
    let config = egress_config(&pki, &endpoint).raw(&dns.resolver_table());
    let text = config.toml().replace("[[route]]\n", &format!("[[route]]\noutlier_detection = {outlier}\n"));
    let egress = Gateway::start(Role::Egress, pki.dir.path(), &text);
    let plain_port = egress.port("mysql-plain");

    // Round robin puts the dead address first every other connection: two of those
    // (each falling through to the live one) eject it.
    let mut served = 0;
    let labels = format!("{{route=\"to-ingress\",endpoint=\"{endpoint}\"}}");
    while !egress.admin("GET", "/metrics").1.contains(&format!("strait_upstream_endpoint_ejected{labels} 1")) {
        let message = format!("before ejection {served}");
        assert_eq!(echo_through(plain_port, &message).as_deref(), Ok(message.as_str()), "{}", egress.proc.output());
        served += 1;
        assert!(served <= 6, "not ejected after {served} connections:\n{}", egress.admin("GET", "/metrics").1);
    }
    let metrics = egress.admin("GET", "/metrics").1;
    assert!(metrics.contains(&format!("strait_upstream_endpoint_ejections_total{labels} 1")), "{metrics}");
    assert!(metrics.contains(&format!("strait_upstream_endpoint_healthy{labels} 1")), "one of two addresses takes traffic: {metrics}");
    let warned = egress.log_lines("address ejected");
    assert_eq!(warned.len(), 1, "{}", egress.proc.output());
    assert!(warned[0].contains(&format!("{DEAD}:{port}")), "{}", warned[0]);

    let (_, body) = egress.admin("GET", "/config_dump");
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    let addresses = dump["endpoints"]["to-ingress"][0]["addresses"].as_array().cloned().unwrap_or_default();
    let state = |ip: Ipv4Addr| addresses.iter().find(|a| a["address"] == format!("{ip}:{port}")).map(|a| a["state"].clone());
    assert_eq!(state(DEAD), Some(serde_json::json!("ejected")), "{}", dump["endpoints"]);
    assert_eq!(state(LIVE), Some(serde_json::json!("healthy")), "{}", dump["endpoints"]);

    // A reload that keeps the endpoint keeps its state: still ejected, not ejected again.
    egress.signal("HUP");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let dump = loop {
        let dump: serde_json::Value = serde_json::from_str(&egress.admin("GET", "/config_dump").1).unwrap();
        if dump["last_reload"]["succeeded"] == 1 {
            break dump;
        }
        assert!(std::time::Instant::now() < deadline, "no reload after SIGHUP: {}", egress.proc.output());
        std::thread::sleep(Duration::from_millis(20));
    };
    let kept = dump["endpoints"]["to-ingress"][0]["addresses"].as_array().and_then(|a| a.iter().find(|a| a["address"] == format!("{DEAD}:{port}")).cloned());
    assert_eq!(
        kept.map(|a| (a["state"].clone(), a["times_ejected"].clone())),
        Some((serde_json::json!("ejected"), serde_json::json!(1))),
        "{}",
        dump["endpoints"]
    );

    // While ejected the dead address is not tried: its failure count stays where the
    // ejection left it (0), and every client is served by the live address.
    for i in 0..N {
        let message = format!("after ejection {i}");
        assert_eq!(echo_through(plain_port, &message).as_deref(), Ok(message.as_str()), "{}", egress.proc.output());
    }
    let (_, body) = egress.admin("GET", "/config_dump");
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    let dead = dump["endpoints"]["to-ingress"][0]["addresses"].as_array().and_then(|a| a.iter().find(|a| a["address"] == format!("{DEAD}:{port}")).cloned());
    assert_eq!(dead.as_ref().map(|d| d["consecutive_failures"].clone()), Some(serde_json::json!(0)), "{}", dump["endpoints"]);
    let live = format!("upstream={LIVE}:{port}");
    let closed = || egress.access_log().iter().filter(|l| l.contains("outcome=closed") && l.contains(&live)).count();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while closed() < served + N {
        assert!(std::time::Instant::now() < deadline, "{}", egress.proc.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(closed(), served + N, "{}", egress.proc.output());
    assert_eq!(egress.access_log().iter().filter(|l| l.contains("outcome=upstream_failed")).count(), 0, "{}", egress.proc.output());
}
