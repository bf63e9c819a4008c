//! Two network namespaces (the clusters): the server cluster's DNS answers `$SERVICE_URL`
//! with two addresses, the ingress's and a second one on the server cluster whose packets
//! an nftables rule drops (a black hole: connects to it time out, nothing is refused).
//! Each connection that tries the black hole waits out `connect_timeout` and falls
//! through to the ingress; after `consecutive_failures` such timeouts the address is
//! ejected, and clients are served from the other address without waiting. The metric,
//! `/config_dump` and the log say so. The per-connection times before and after the
//! ejection are printed (`black hole timings`).

use std::net::Ipv4Addr;
use std::process::Command;
use std::time::{Duration, Instant};

use strait_e2e::netns::{egress_config, ingress_config, ClusterMariaDb, TwoClusters, MYSQL_PORT};
use strait_e2e::*;

/// Lives only inside the server cluster (TEST-NET-1), reached over the link.
const BLACK_HOLE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);

fn run(command: &mut Command) {
    let out = command.output().unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(out.status.success(), "{command:?} failed: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_black_holed_address_is_ejected_after_its_timeouts() {
    require("nft");
    let pki = Pki::reference();
    let dir = tempfile::tempdir().unwrap();
    let clusters = TwoClusters::new();
    let (client, server) = (&clusters.client, &clusters.server);
    // The black hole: an address of the server cluster, routed there from the client
    // cluster, whose every packet is dropped on arrival.
    run(Command::new("ip").args(["-n", &server.netns, "addr", "add", &format!("{BLACK_HOLE}/32"), "dev", &server.device]));
    run(Command::new("ip").args(["-n", &client.netns, "route", "add", &format!("{BLACK_HOLE}/32"), "via", &server.address.to_string()]));
    for rule in [
        "add table inet strait_black_hole".to_owned(),
        "add chain inet strait_black_hole input { type filter hook input priority 0 ; policy accept ; }".to_owned(),
        format!("add rule inet strait_black_hole input ip daddr {BLACK_HOLE} drop"),
    ] {
        run(server.command("nft").arg(rule));
    }
    let dns = server.dns(&[(SERVICE_HOST, server.address), (SERVICE_HOST, BLACK_HOLE)], dir.path());
    let _db = ClusterMariaDb::start(server);
    let ingress = server.gateway(Role::Ingress, dir.path(), &ingress_config(&pki, &clusters, "", ""));
    let route_extra = "connect_timeout = \"1s\"\noutlier_detection = { consecutive_failures = 2, base_ejection_time = \"60s\", max_ejection_percent = 50 }";
    let egress = client.gateway(Role::Egress, dir.path(), &egress_config(&pki, &clusters, route_extra, ""));
    let plain = client.at(MYSQL_PORT);
    let endpoint = format!("{SERVICE_HOST}:{}", strait_e2e::netns::INGRESS_PORT);
    let ejected_series = format!("strait_upstream_endpoint_ejected{{route=\"to-server-cluster\",endpoint=\"{endpoint}\"}} 1");

    let mut before = Vec::new();
    while !client.admin(&egress, "GET", "/metrics").1.contains(&ejected_series) {
        let run = client.mariadb_sql(plain, "SELECT 1");
        assert!(run.success, "a client failed before the ejection: {}\n{}", run.stderr, egress.proc.output());
        before.push(run.took);
        assert!(before.len() <= 8, "not ejected after {} connections:\n{}", before.len(), client.admin(&egress, "GET", "/metrics").1);
    }
    let slow = before.iter().filter(|t| **t >= Duration::from_secs(1)).count();
    assert!(slow >= 2, "two connections waited out the black hole's connect timeout: {before:?}");
    let metrics = client.admin(&egress, "GET", "/metrics").1;
    assert!(metrics.contains(&format!("strait_upstream_endpoint_ejections_total{{route=\"to-server-cluster\",endpoint=\"{endpoint}\"}} 1")), "{metrics}");
    let warned = egress.log_lines("address ejected");
    assert!(warned.len() == 1 && warned[0].contains(&format!("{BLACK_HOLE}:")), "{}", egress.proc.output());
    let (_, body) = client.admin(&egress, "GET", "/config_dump");
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    let addresses = dump["endpoints"]["to-server-cluster"][0]["addresses"].as_array().cloned().unwrap_or_default();
    let state = |ip: Ipv4Addr| addresses.iter().find(|a| a["address"].as_str().is_some_and(|s| s.starts_with(&format!("{ip}:")))).map(|a| a["state"].clone());
    assert_eq!(state(BLACK_HOLE), Some(serde_json::json!("ejected")), "{}", dump["endpoints"]);
    assert_eq!(state(server.address), Some(serde_json::json!("healthy")), "{}", dump["endpoints"]);

    // Ejected: the black hole is not tried, so no connection waits for it any more.
    let started = Instant::now();
    let mut after = Vec::new();
    for _ in 0..6 {
        let run = client.mariadb_sql(plain, "SELECT 1");
        assert!(run.success, "{}\n{}", run.stderr, egress.proc.output());
        after.push(run.took);
    }
    let line = egress.access_log().into_iter().rev().find(|l| l.contains("outcome=closed")).unwrap_or_default();
    assert!(line.contains(&format!("upstream={}:", server.address)), "{line}");
    assert_eq!(egress.access_log().iter().filter(|l| l.contains("outcome=upstream_failed")).count(), 0, "{}", egress.proc.output());
    assert!(dns.output().contains("query[A]"), "{}", dns.output());
    drop(ingress);
    eprintln!(
        "black hole timings (connect_timeout 1s, 2 failures): connections until ejected {before:?}; after ejection {after:?} ({:?} for 6)",
        started.elapsed()
    );
}
