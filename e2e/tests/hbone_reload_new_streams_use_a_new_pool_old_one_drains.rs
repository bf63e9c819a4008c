//! A reload of the egress (SIGHUP: the configuration and credentials read again) gives
//! new HBONE streams a new pool, opened with the reloaded credential; a stream open on
//! the old pool connection keeps working across the reload, and once it ends the old
//! connection closes (the ingress logs that one TLS connection).

use std::net::Shutdown;
use std::time::{Duration, Instant};

use strait_e2e::hbone::{pool_connections_opened, wait_for_access_lines, HbonePair};
use strait_e2e::*;

fn wait_for_log(gateway: &Gateway, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while gateway.log_lines(needle).len() < count {
        assert!(Instant::now() < deadline, "fewer than {count} lines with {needle:?}:\n{}", gateway.proc.output());
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn after_a_reload_new_streams_open_a_new_pool_while_the_old_connection_drains() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let pair = HbonePair::start(&pki, echo.port, |r| r);
    let mut held = open_connection(pair.plain_port);
    echo_line(&mut held, b"before the reload\n");
    assert_eq!(pool_connections_opened(&pair.egress), 1);

    pair.egress.signal("HUP");
    wait_for_log(&pair.egress, "configuration and credentials reloaded", 1);
    let reply = exchange_within(pair.plain_port, b"a new stream", Duration::from_secs(10)).expect("a stream after the reload");
    assert_eq!(reply, b"a new stream");
    assert_eq!(pool_connections_opened(&pair.egress), 2, "the reloaded route has a pool of its own:\n{}", pair.egress.proc.output());

    // The old pool connection still carries the stream that was open across the reload.
    echo_line(&mut held, b"after the reload, on the old connection\n");
    held.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut held), "");
    // Its pool is gone and its last stream ended: the old connection closes.
    wait_for_log(&pair.egress, "HBONE pool connection closed", 1);
    let closed = wait_for_access_lines(&pair.ingress, &["listener=hbone", "protocol=hbone"], 1);
    assert!(closed[0].contains("outcome=closed"), "{}", closed[0]);
    // The new pool connection is still up and serving.
    assert_eq!(exchange_within(pair.plain_port, b"again", Duration::from_secs(10)).unwrap(), b"again");
    assert_eq!(pool_connections_opened(&pair.egress), 2);
}
