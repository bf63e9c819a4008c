//! The ingress is killed mid-run (its pool connection dies under the egress) and
//! started again on the same port: the streams that come next succeed, on a fresh pool
//! connection, with no failed client after the restart.

use std::time::{Duration, Instant};

use strait_e2e::digest::{digest_reply, DigestServer};
use strait_e2e::hbone::{hbone_listener, pool_connections_opened, HbonePair};
use strait_e2e::*;

fn exchange(port: u16, round: usize) -> Result<(), String> {
    let message = format!("round {round}").repeat(100).into_bytes();
    match exchange_within(port, &message, Duration::from_secs(10)) {
        Ok(reply) if reply == digest_reply(&message) => Ok(()),
        Ok(reply) => Err(format!("wrong reply of {} bytes", reply.len())),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn after_an_ingress_restart_new_streams_succeed_on_a_new_pool_connection() {
    let pki = Pki::reference();
    let backend = DigestServer::start();
    let port = free_port();
    let config = || Config::new().listener(hbone_listener(&pki).port(port)).route(Route::to("mysql", backend.port).hosts(&[SERVICE_HOST]));
    let mut pair = HbonePair::start_with_ingress(&pki, &config().toml(), |r| r);
    for round in 0..5 {
        exchange(pair.plain_port, round).unwrap_or_else(|e| panic!("round {round} before the restart: {e}"));
    }
    assert_eq!(pool_connections_opened(&pair.egress), 1, "{}", pair.egress.proc.output());

    // A stream open across the kill is cut; that is the kill, not the pool.
    let held = open_connection(pair.plain_port);
    pair.ingress.proc.kill();
    pair.ingress = Gateway::start(Role::Ingress, pki.dir.path(), &config().toml());
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(10);
    for round in 5..15 {
        exchange(pair.plain_port, round).unwrap_or_else(|e| panic!("round {round} after the restart: {e}\n{}", pair.egress.proc.output()));
        assert!(Instant::now() < deadline, "rounds took over 10 s");
    }
    assert_eq!(pool_connections_opened(&pair.egress), 2, "one fresh pool connection after the restart:\n{}", pair.egress.proc.output());
    assert!(!pair.egress.log_lines("HBONE pool connection closed").is_empty(), "{}", pair.egress.proc.output());
}
