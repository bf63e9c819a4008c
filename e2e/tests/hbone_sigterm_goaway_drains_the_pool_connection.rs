//! SIGTERM at an ingress with an HBONE listener: the pool connection is told GOAWAY, a
//! stream open on it runs to its end (bytes still cross during the drain), and the
//! ingress exits as soon as that stream is done — the egress's idle pool connection does
//! not hold the drain until its timeout. The egress then takes the next stream to a
//! fresh pool connection (here: to the ingress started again on the same port).

use std::net::Shutdown;
use std::time::Duration;

use strait_e2e::digest::{digest_reply, DigestServer};
use strait_e2e::hbone::{hbone_listener, pool_connections_opened, HbonePair};
use strait_e2e::*;

#[test]
fn sigterm_sends_goaway_lets_the_open_stream_finish_and_exits_when_it_is_done() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let port = free_port();
    let config = || {
        Config::new()
            .listener(hbone_listener(&pki).port(port))
            .route(Route::to("mysql", echo.port).hosts(&[SERVICE_HOST]))
            .raw("[process]\ndrain_delay = \"0s\"\ndrain_timeout = \"60s\"")
    };
    let mut pair = HbonePair::start_with_ingress(&pki, &config().toml(), |r| r);
    let mut open = open_connection(pair.plain_port);
    echo_line(&mut open, b"before SIGTERM\n");

    pair.ingress.signal("TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while pair.ingress.log_lines("shutting down: no new connections").is_empty() {
        assert!(std::time::Instant::now() < deadline, "{}", pair.ingress.proc.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    echo_line(&mut open, b"during the drain\n");
    open.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut open), "", "the stream ends with a clean EOF");
    // The drain ends with the stream (60 s timeout not reached): GOAWAY closed the pool
    // connection once its last stream was done.
    let status = pair.ingress.wait_for_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}:\n{}", pair.ingress.proc.output());
    let log = pair.ingress.proc.output();
    assert!(log.contains("drained; exiting") && !log.contains("drain timeout reached"), "{log}");

    let digest = DigestServer::start();
    let next = Config::new().listener(hbone_listener(&pki).port(port)).route(Route::to("mysql", digest.port).hosts(&[SERVICE_HOST]));
    pair.ingress = Gateway::start(Role::Ingress, pki.dir.path(), &next.toml());
    assert_eq!(exchange_within(pair.plain_port, b"after", Duration::from_secs(10)).unwrap(), digest_reply(b"after"));
    assert_eq!(pool_connections_opened(&pair.egress), 2, "{}", pair.egress.proc.output());
}
