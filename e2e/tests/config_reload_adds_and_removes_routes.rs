//! Rewriting the egress's config file while a client keeps using one of its listeners:
//! the listener and route that were removed stop accepting (an open connection on it
//! drains), the ones that were added bind and carry traffic, and the client on the
//! listener that stays sees no failure. An invalid config written afterwards is refused
//! with the same error `check` gives, and the running one keeps serving. SIGHUP re-reads
//! the file too.

use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use strait_e2e::kube_secret::*;
use strait_e2e::*;

const RELOAD_LIMIT: Duration = Duration::from_secs(10);
/// Bounds on the background client: whichever comes first.
const MAX_ROUNDS: u64 = 100_000;
const MAX_LOAD: Duration = Duration::from_secs(60);

#[test]
fn reload_adds_and_removes_listeners_without_failing_the_one_that_stays() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let (_ingress, ingress_port) = Gateway::reference_ingress(&pki, echo.port);
    let upstream = format!("127.0.0.1:{ingress_port}");
    // Port 0 in every version of the file: a listener whose configured address is the
    // same in the new file is kept (not re-bound), so "stays" keeps the port it got.
    // "never" alone gets a number up front: the refused config must not bind it, and
    // only a known port can show that.
    let never = free_port();

    let v1 = egress_toml(&pki, &upstream, &[("stays", 0), ("removed", 0)], "");
    let egress = Gateway::start(Role::Egress, pki.dir.path(), &v1);
    let (stays, removed) = (egress.port("stays"), egress.port("removed"));
    round_trip(stays, b"hello stays").unwrap();
    round_trip(removed, b"hello removed").unwrap();
    // A connection on the listener about to be removed, open across the reload.
    let mut held = open_connection(removed);
    let (before, after): (&[u8], &[u8]) = (b"before reload\n", b"after reload, still open\n");
    echo_line(&mut held, before);

    // A client that keeps connecting to the listener that stays.
    let stop = Arc::new(AtomicBool::new(false));
    let made = Arc::new(AtomicU64::new(0));
    let client = {
        let (stop, made) = (stop.clone(), made.clone());
        std::thread::spawn(move || {
            let deadline = Instant::now() + MAX_LOAD;
            let mut failures = Vec::new();
            for round in 0..MAX_ROUNDS {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                if let Err(e) = round_trip(stays, format!("round {round}").as_bytes()) {
                    failures.push(format!("round {round}: {e}"));
                }
                made.fetch_add(1, Ordering::Relaxed);
            }
            failures
        })
    };
    wait_for_rounds(&made, 20);

    // Remove listener+route "removed", add "added".
    let mut tail = LogTail::from_now(&egress);
    let v2 = egress_toml(&pki, &upstream, &[("stays", 0), ("added", 0)], "");
    std::fs::write(&egress.config, &v2).unwrap();
    let (line, _) = tail.wait_for_reload(&egress, RELOAD_LIMIT);
    assert!(line.contains(RELOADED) && line.contains("file change"), "{line}");
    assert_eq!(egress.port("stays"), stays, "the listener that stays keeps its port");
    let added = egress.port("added");
    round_trip(added, b"through the new route").expect("the added listener carries traffic");
    egress.wait_for_access_line(&["listener=added", "route=added", "outcome=closed"]);
    assert!(refuses(removed), "the removed listener must refuse new connections");
    echo_line(&mut held, after);
    held.shutdown(Shutdown::Write).unwrap();
    assert_eq!(read_all(&mut held), "", "the drained connection ends cleanly");
    let held_bytes = format!("bytes_received={} ", before.len() + after.len());
    egress.wait_for_access_line(&["listener=removed", "route=removed", "outcome=closed", &held_bytes]);
    wait_for_rounds(&made, made.load(Ordering::Relaxed) + 20);

    // An invalid config (a route naming a listener that does not exist, plus a new
    // listener that must not bind) is refused with check's message; nothing changes.
    let v3 = egress_toml(&pki, &upstream, &[("stays", 0), ("added", 0), ("never", never)], "listeners = [\"missing\"]");
    std::fs::write(&egress.config, &v3).unwrap();
    let (line, _) = tail.wait_for_reload(&egress, RELOAD_LIMIT);
    let (checked, check_error) = run_binary(Role::Egress, &["--config", &egress.config.display().to_string(), "check"]);
    assert!(!checked && check_error.contains("no listener is named \"missing\""), "check: {check_error}");
    assert!(line.contains(REFUSED) && line.contains("no listener is named \"missing\""), "{line}");
    round_trip(stays, b"still serving").unwrap();
    round_trip(added, b"still serving").unwrap();
    assert!(refuses(never), "a listener from the refused config must not bind");
    assert!(refuses(removed));

    // SIGHUP re-reads the file: the same invalid config is refused again...
    egress.signal("HUP");
    let (line, _) = tail.wait_for_reload(&egress, RELOAD_LIMIT);
    assert!(line.contains(REFUSED) && line.contains("SIGHUP"), "{line}");
    // ...and once the file is the running config again (no change to reload on its
    // own), SIGHUP reloads it.
    std::fs::write(&egress.config, &v2).unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(tail.next_with_any(&[RELOADED, REFUSED]), None, "an unchanged config is not reloaded on a file event");
    egress.signal("HUP");
    let (line, _) = tail.wait_for_reload(&egress, RELOAD_LIMIT);
    assert!(line.contains(RELOADED) && line.contains("SIGHUP"), "{line}");
    round_trip(stays, b"after SIGHUP").unwrap();
    round_trip(added, b"after SIGHUP").unwrap();
    wait_for_rounds(&made, made.load(Ordering::Relaxed) + 20);

    stop.store(true, Ordering::Relaxed);
    let failures = client.join().unwrap();
    let total = made.load(Ordering::Relaxed);
    println!("client on the listener that stays: {total} connections, {} failed", failures.len());
    assert!(failures.is_empty(), "{} of {total} connections failed:\n{}", failures.len(), failures.iter().take(10).cloned().collect::<Vec<_>>().join("\n"));
}

/// Egress config: one plain listener per `(name, port)` (port 0: any), each with its
/// own route (same name) through mTLS to `upstream`; `route_extra` is added to the last
/// route.
fn egress_toml(pki: &Pki, upstream: &str, listeners: &[(&str, u16)], route_extra: &str) -> String {
    let mut config = Config::new();
    for (name, port) in listeners {
        config = config.listener(Listener::plain(name, name).port(*port));
    }
    for (name, _) in listeners {
        config = config.route(Route::new(name, upstream).mutual_origination(&pki.path("egress"), SERVICE_HOST));
    }
    config.raw(route_extra).toml()
}

/// One connection: send `data`, close the write side, expect it echoed back whole.
fn round_trip(port: u16, data: &[u8]) -> Result<(), String> {
    let echoed = plain_exchange(port, data).map_err(|e| e.to_string())?;
    if echoed == data {
        Ok(())
    } else {
        Err(format!("echoed {:?}, sent {:?}", String::from_utf8_lossy(&echoed), String::from_utf8_lossy(data)))
    }
}

/// Waits until the background client has made `count` connections.
fn wait_for_rounds(made: &AtomicU64, count: u64) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while made.load(Ordering::Relaxed) < count {
        assert!(Instant::now() < deadline, "the background client is stuck at {} connections", made.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(10));
    }
}
