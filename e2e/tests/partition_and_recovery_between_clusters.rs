//! The network between the clusters fails and comes back. With a long-lived mariadb
//! session (waiting on a query) and a bulk upload open through the pair, the link is
//! taken down — or, separately, every packet on it is dropped — and:
//! - each open client is told (its connection closed, not left hanging) within the
//!   configured keepalive bound (`tcp_keepalive` time + interval x probes) plus slack:
//!   the idle session by keepalive probes, the upload (unacknowledged data in flight)
//!   by the matching TCP_USER_TIMEOUT; the ingress closes its side (MariaDB's, the
//!   sink's) within the same bound;
//! - new connections fail fast (the route's short `connect_timeout`) with a clear
//!   access-log reason;
//! - after the network returns, new connections work without restarting anything.
//!
//! The three times are printed to stderr (`partition timings`, shown even when the test
//! passes) for the record; only the behaviour bounds are asserted.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use strait_e2e::netns::{egress_config, ingress_config, keepalive, MariadbSession, ServerServices, Sink, TwoClusters, INGRESS_PORT, MYSQL_PORT};
use strait_e2e::*;

/// Keepalive on both sides of the cross-cluster hop: first probe after 5 s idle, then
/// 3 probes 1 s apart; 8 s is the bound.
const KEEPALIVE: (u64, u64, u32) = (5, 1, 3);
/// The route's connect timeout: how fast a new connection may fail during the partition.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Scheduling slack on a shared 2-CPU machine; assertions are bound + this.
const SLACK: Duration = Duration::from_secs(8);
/// The bulk stream's port at the egress (client cluster) and the ingress (server cluster).
const BULK_PORT: u16 = 5001;
const INGRESS_BULK_PORT: u16 = 13307;
/// The sink behind the ingress, on the server cluster's loopback.
const SINK_PORT: u16 = 9000;

fn bound() -> Duration {
    let (time, interval, probes) = KEEPALIVE;
    Duration::from_secs(time + interval * u64::from(probes))
}

#[derive(Clone, Copy, Debug)]
enum Partition {
    /// `ip link set ... down` on the client cluster's end of the link.
    LinkDown,
    /// Every packet dropped on the link (`tc netem loss 100%`).
    PacketLoss,
}

impl Partition {
    fn start(self, clusters: &TwoClusters) -> &'static str {
        match self {
            Partition::LinkDown => {
                clusters.link_down();
                "ip link set down"
            }
            Partition::PacketLoss => clusters.drop_packets(),
        }
    }

    fn heal(self, clusters: &TwoClusters) {
        match self {
            Partition::LinkDown => clusters.link_up(),
            Partition::PacketLoss => clusters.stop_dropping(),
        }
    }

    /// What the egress's access log may say about a new connection during the
    /// partition. Link down: the cached DNS answer is used and the connect fails at once.
    /// Silent loss: the resolver re-asks the server cluster's DNS (its AAAA answer is
    /// NODATA without an SOA, which is not cached), so the lookup is what times out —
    /// bounded by the same connect_timeout; or the connect itself times out.
    fn connect_failures(self) -> Vec<String> {
        match self {
            Partition::LinkDown => vec![format!("{INGRESS_PORT}: Network is unreachable")],
            Partition::PacketLoss => vec![
                format!("no DNS answer for {SERVICE_HOST}: no answer within connect_timeout ({CONNECT_TIMEOUT:?})"),
                format!("{INGRESS_PORT}: timed out after {CONNECT_TIMEOUT:?}"),
            ],
        }
    }
}

fn gateways(pki: &Pki, clusters: &TwoClusters) -> (Gateway, Gateway) {
    let (time, interval, probes) = KEEPALIVE;
    let keepalive = keepalive(time, interval, probes);
    let ingress_bulk = format!(
        r#"
[[listener]]
name = "bulk"
address = "{address}"
tls = {{ mode = "mutual", dir = "{secret}" }}
{keepalive}

[[route]]
name = "bulk"
hosts = ["{SERVICE_HOST}"]
listeners = ["bulk"]
upstream = "127.0.0.1:{SINK_PORT}"
"#,
        address = clusters.server.at(INGRESS_BULK_PORT),
        secret = pki.path("ingress").display(),
    );
    let ingress = clusters.server.gateway(Role::Ingress, pki.dir.path(), &ingress_config(pki, clusters, &keepalive, &ingress_bulk));
    let route_extra = format!("{keepalive}\nconnect_timeout = \"{}s\"", CONNECT_TIMEOUT.as_secs());
    let egress_bulk = format!(
        r#"
[[listener]]
name = "bulk-plain"
address = "{address}"
route = "bulk"

[[route]]
name = "bulk"
upstream = "{SERVICE_HOST}:{INGRESS_BULK_PORT}"
upstream_tls = {{ mode = "mutual", dir = "{client}", sni = "{SERVICE_HOST}" }}
{route_extra}
"#,
        address = clusters.client.at(BULK_PORT),
        client = pki.path("egress").display(),
    );
    let egress = clusters.client.gateway(Role::Egress, pki.dir.path(), &egress_config(pki, clusters, &route_extra, &egress_bulk));
    (egress, ingress)
}

/// Uploads to `to` from the client cluster until the connection fails; sends when and
/// how it failed. Each write gives up after `limit`, so a stream left hanging shows
/// up as a timeout, not as a hung test.
fn start_bulk_upload(clusters: &TwoClusters, to: SocketAddr, limit: Duration) -> mpsc::Receiver<(Instant, std::io::Error)> {
    let mut stream = clusters.client.connect(to, Duration::from_secs(5)).expect("bulk stream connects to the egress");
    stream.set_write_timeout(Some(limit)).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let chunk = vec![0x5au8; 64 * 1024];
        // Bounded: at most 64 GiB, far beyond what the test lets through before the partition.
        for _ in 0..1_000_000 {
            if let Err(e) = stream.write_all(&chunk) {
                let _ = tx.send((Instant::now(), e));
                return;
            }
        }
    });
    rx
}

/// Polls `condition` every 20 ms until it holds or `deadline` passes.
fn wait_until(deadline: Instant, mut condition: impl FnMut() -> bool) -> bool {
    loop {
        if condition() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn partition_and_recover(partition: Partition) {
    let clusters = TwoClusters::new();
    let pki = Pki::reference();
    let server = ServerServices::start(&clusters, pki.dir.path());
    let sink = Sink::start(&clusters.server, SocketAddr::from(([127, 0, 0, 1], SINK_PORT)));
    let (mut egress, mut ingress) = gateways(&pki, &clusters);
    let app = clusters.client.at(MYSQL_PORT);
    clusters.client.mariadb_sql(app, TUTORIAL_SQL).expect_ok("the tutorial's SQL before the partition");

    // A long-lived session, waiting on the server when the network fails.
    let mut session = MariadbSession::open(&clusters.client, app, pki.dir.path());
    session.send("SELECT SLEEP(120);");
    let sleeping = "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = 'SELECT SLEEP(120)'";
    let in_flight = wait_until(Instant::now() + Duration::from_secs(10), || server.db.root_sql(sleeping).trim() == "1");
    assert!(in_flight, "the session's query never reached MariaDB: {}", session.stderr());
    // A bulk upload, streaming across the link.
    let limit = bound() + SLACK;
    let bulk = start_bulk_upload(&clusters, clusters.client.at(BULK_PORT), limit);
    let streaming = wait_until(Instant::now() + Duration::from_secs(10), || sink.received.load(Ordering::Relaxed) > 4 << 20);
    assert!(streaming, "the bulk stream never crossed the link:\n{}", egress.proc.output());

    let cut = Instant::now();
    let how = partition.start(&clusters);

    // Each open client is told, within the keepalive bound.
    let session_told = session
        .wait_for_exit(cut, limit)
        .unwrap_or_else(|| panic!("the mariadb session was left hanging {limit:?} after the partition ({how}):\n{}", egress.proc.output()));
    assert!(session.stderr().contains("Lost connection"), "the session ended without saying why: {}", session.stderr());
    let (bulk_failed_at, bulk_error) = bulk
        .recv_timeout(limit.saturating_sub(cut.elapsed()))
        .unwrap_or_else(|_| panic!("the bulk stream was left hanging {limit:?} after the partition ({how}):\n{}", egress.proc.output()));
    let bulk_told = bulk_failed_at - cut;
    assert!(bulk_told <= limit, "bulk stream told after {bulk_told:?}: {bulk_error}");
    assert_ne!(bulk_error.kind(), std::io::ErrorKind::WouldBlock, "the bulk write timed out instead of being closed");
    let egress_session = egress.wait_for_access_line(&["route=to-server-cluster", "outcome=relay_failed"]);
    assert!(egress_session.contains("upstream"), "{egress_session}");
    egress.wait_for_access_line(&["route=bulk", "outcome=relay_failed"]);
    // The server cluster's side learns too: the ingress closes MariaDB's and the sink's
    // connections, so nothing is held open on a dead peer's behalf.
    let server_side = wait_until(cut + limit, || {
        let log = ingress.access_log();
        ["route=mysql", "route=bulk"].iter().all(|route| log.iter().any(|l| l.contains(route) && l.contains("outcome=relay_failed")))
    });
    assert!(server_side, "the ingress did not close its side within {limit:?}:\n{}", ingress.proc.output());

    // New connections fail fast, and the access log says why.
    let attempt = Instant::now();
    let refused = clusters.client.mariadb_sql(app, "SELECT 1");
    let failed_after = attempt.elapsed();
    refused.expect_refused("a new connection during the partition");
    assert!(failed_after <= CONNECT_TIMEOUT + SLACK, "a new connection took {failed_after:?} to fail");
    let line = egress.wait_for_access_line(&["route=to-server-cluster", "outcome=upstream_failed"]);
    let reason = line.split("reason=").nth(1).unwrap_or_default().to_owned();
    assert!(partition.connect_failures().iter().any(|r| reason.contains(r.as_str())), "unexpected reason for a new connection during {partition:?}: {line}");

    // The network returns: new connections work, nothing restarted.
    partition.heal(&clusters);
    let healed = Instant::now();
    let recovered = wait_until(healed + Duration::from_secs(20), || clusters.client.mariadb_sql(app, "SELECT 1").success);
    let first_success = healed.elapsed();
    assert!(recovered, "no new connection worked 20 s after the network returned:\n{}", egress.proc.output());
    assert!(egress.proc.try_wait().is_none() && ingress.proc.try_wait().is_none(), "a gateway exited");
    let insert = "INSERT INTO test_encrypted_connection.message VALUES (2, 'after the partition')";
    clusters.client.mariadb_sql(app, insert).expect_ok("writing after recovery");
    assert_eq!(server.db.root_sql("SELECT content FROM test_encrypted_connection.message WHERE id = 2").trim(), "after the partition");

    // Straight to stderr, past the test harness's capture: the times are for the record.
    let _ = writeln!(
        std::io::stderr(),
        "partition timings ({partition:?}, {how}; keepalive bound {:?}, connect_timeout {CONNECT_TIMEOUT:?}): \
         idle mariadb session told after {session_told:?}, bulk stream told after {bulk_told:?} ({bulk_error}), \
         new connection failed after {failed_after:?} (reason={reason}), first new connection succeeded {first_success:?} after recovery",
        bound()
    );
}

#[test]
fn link_down_between_clusters_closes_open_clients_and_recovers() {
    partition_and_recover(Partition::LinkDown);
}

#[test]
fn packet_loss_between_clusters_closes_open_clients_and_recovers() {
    partition_and_recover(Partition::PacketLoss);
}
