//! A client certificate that is not on a route's allow list is refused per stream at
//! an HBONE listener: each `CONNECT` for that route is answered `403` and logged as
//! denied with the identity, while the same pool connection goes on serving streams for
//! a route that allows it.

use std::io::Read;
use std::time::Duration;

use strait_e2e::digest::{digest_reply, DigestServer};
use strait_e2e::hbone::{allow, hbone_listener, hbone_route, pool_connections_opened, wait_for_access_lines};
use strait_e2e::*;

#[test]
fn a_route_that_does_not_allow_the_identity_answers_403_per_stream() {
    let pki = Pki::reference();
    let backend = DigestServer::start();
    let ingress_config = Config::new()
        .listener(hbone_listener(&pki))
        .route(Route::to("open", backend.port).hosts(&["open.strait.test"]))
        .route(Route::to("guarded", backend.port).hosts(&["guarded.strait.test"]).set("allow", allow(&["spiffe://cluster.local/ns/other/sa/someone-else"])));
    let ingress = Gateway::start(Role::Ingress, pki.dir.path(), &ingress_config.toml());
    let upstream = format!("127.0.0.1:{}", ingress.port("hbone"));
    // A pool belongs to a route, so two egress routes: the guarded one's streams share
    // one pool connection, and each of them is refused on it.
    let egress_config = Config::new()
        .listener(Listener::plain("open-plain", "open"))
        .listener(Listener::plain("guarded-plain", "guarded"))
        .route(hbone_route(&pki, "open", &upstream, "open.strait.test:5432"))
        .route(hbone_route(&pki, "guarded", &upstream, "guarded.strait.test:5432"));
    let egress = Gateway::start(Role::Egress, pki.dir.path(), &egress_config.toml());
    let (open_port, guarded_port) = (egress.port("open-plain"), egress.port("guarded-plain"));

    for attempt in 1..=3 {
        let mut got = Vec::new();
        let _ = open_connection(guarded_port).read_to_end(&mut got);
        assert!(got.is_empty(), "attempt {attempt}: a denied stream carried {got:?}");
        assert_eq!(exchange_within(open_port, b"allowed", Duration::from_secs(10)).unwrap(), digest_reply(b"allowed"), "attempt {attempt}");
    }
    let denied = wait_for_access_lines(&ingress, &["listener=hbone", "route=guarded", "outcome=denied"], 3);
    for line in &denied {
        assert!(line.contains(&format!("identity=client.{SERVICE_HOST}")), "{line}");
        assert!(line.contains("is not on route \"guarded\"'s allow list"), "{line}");
        assert!(line.contains("authority=guarded.strait.test:5432"), "{line}");
    }
    wait_for_access_lines(&ingress, &["listener=hbone", "route=open", "outcome=closed"], 3);
    let refused = wait_for_access_lines(&egress, &["route=guarded", "outcome=upstream_failed"], 3);
    assert!(refused.iter().all(|l| l.contains("403")), "{refused:#?}");
    // Three denied streams on one pool connection (and three served on the other).
    assert_eq!(pool_connections_opened(&egress), 2, "{}", egress.proc.output());
    assert!(ingress.access_log().iter().all(|l| !l.contains("protocol=hbone")), "no pool connection was closed: {}", ingress.proc.output());
}
