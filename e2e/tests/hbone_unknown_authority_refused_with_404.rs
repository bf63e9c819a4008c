//! A `CONNECT` whose `:authority` names no route at the HBONE listener is answered
//! `404` and logged as refused with the authority; the egress logs the upstream failure
//! with that status and closes its client. The pool connection stays up: a stream to a
//! known authority on it is served right after.

use std::io::Read;
use std::time::Duration;

use strait_e2e::digest::{digest_reply, DigestServer};
use strait_e2e::hbone::{hbone_route, pool_connections_opened, wait_for_access_lines, HbonePair, AUTHORITY};
use strait_e2e::*;

#[test]
fn unknown_authority_gets_404_and_an_access_line_at_both_ends() {
    let pki = Pki::reference();
    let backend = DigestServer::start();
    let mut pair = HbonePair::start(&pki, backend.port, |r| r);
    // A second egress port whose route asks the same ingress for an authority it lacks.
    let upstream = format!("127.0.0.1:{}", pair.hbone_port);
    let config = strait_e2e::hbone::egress_config(&pki, &upstream, |r| r).listener(Listener::plain("lost-plain", "lost")).route(hbone_route(
        &pki,
        "lost",
        &upstream,
        "nowhere.strait.test:3306",
    ));
    pair.egress = Gateway::start(Role::Egress, pki.dir.path(), &config.toml());
    let lost_port = pair.egress.port("lost-plain");

    // The client is closed without a byte (and without waiting for a timeout).
    let mut client = open_connection(lost_port);
    let mut got = Vec::new();
    let read = client.read_to_end(&mut got);
    assert!(got.is_empty(), "bytes came back for an unknown authority: {got:?} ({read:?})");
    let refused = wait_for_access_lines(&pair.ingress, &["listener=hbone", "outcome=refused"], 1).remove(0);
    assert!(refused.contains("authority=nowhere.strait.test:3306"), "{refused}");
    assert!(refused.contains("unknown HBONE authority"), "{refused}");
    assert!(refused.contains(&format!("identity=client.{SERVICE_HOST}")), "{refused}");
    let failed = wait_for_access_lines(&pair.egress, &["route=lost", "outcome=upstream_failed"], 1).remove(0);
    assert!(failed.contains("404"), "the egress names the peer's answer: {failed}");
    assert!(failed.contains("nowhere.strait.test:3306"), "{failed}");

    // The known authority still works through the same ingress listener.
    let port = pair.egress.port("mysql-plain");
    assert_eq!(exchange_within(port, b"hello", Duration::from_secs(10)).unwrap(), digest_reply(b"hello"));
    let served = wait_for_access_lines(&pair.ingress, &["route=mysql", "outcome=closed"], 1).remove(0);
    assert!(served.contains(&format!("authority={AUTHORITY}")), "{served}");
    // Two routes, two pools: the refusal did not cost the lost route its connection.
    let again = open_connection(lost_port).read_to_end(&mut got);
    assert!(got.is_empty(), "{again:?}");
    wait_for_access_lines(&pair.ingress, &["listener=hbone", "outcome=refused"], 2);
    assert_eq!(pool_connections_opened(&pair.egress), 2, "{}", pair.egress.proc.output());
}
