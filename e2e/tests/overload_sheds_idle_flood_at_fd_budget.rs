//! Overload at the file-descriptor budget: the pair started with defaults under
//! `prlimit --nofile=4096:4096`, and more idle connections than that opened and held on
//! the egress's plain port. The plain listener's derived cap (960) fills with the flood;
//! a legitimate plain client and a legitimate mTLS client are still each served within
//! 10 s, because a new connection at a full listener takes the place of the one idle
//! longest. The shedding is counted, and within 5 s of the flood closing both
//! processes' open descriptors (`/proc/PID/fd`) are back at their baseline. And with
//! `max_connections` above the budget, a flood that runs the process out of
//! descriptors has its idlest connections shed at EMFILE, so a client is still served.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use strait_e2e::hostile::metric;
use strait_e2e::*;

/// More connections than the gateways' open-file limit.
const FLOOD: usize = 4500;

/// The limit both gateways run under, soft and hard.
const NOFILE: &str = "--nofile=4096:4096";

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
}

/// Waits (`limit`) until `pid` has at most `at_most` descriptors open; the count then.
fn settles(pid: u32, at_most: usize, limit: Duration) -> Result<usize, usize> {
    let deadline = Instant::now() + limit;
    loop {
        let open = open_fds(pid);
        if open <= at_most {
            return Ok(open);
        }
        if Instant::now() > deadline {
            return Err(open);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A plain client through the egress: its line comes back from the echo backend.
fn plain_served(port: u16) -> Result<Duration, String> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(10)).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(b"legitimate\n").map_err(|e| e.to_string())?;
    let mut echoed = [0u8; 11];
    stream.read_exact(&mut echoed).map_err(|e| e.to_string())?;
    assert_eq!(&echoed, b"legitimate\n");
    Ok(started.elapsed())
}

/// An mTLS client (an in-mesh workload) through the egress's mesh port.
fn mtls_served(pki: &Pki, port: u16) -> Result<Duration, String> {
    let started = Instant::now();
    let config = client_config(Some(&pki.path("mesh/client")), &pki.path("mesh/client/ca.crt"));
    let mut stream = tls_connect(port, SERVICE_HOST, config).map_err(|e| e.to_string())?;
    stream.write_all(b"mesh client\n").map_err(|e| e.to_string())?;
    let mut echoed = [0u8; 12];
    stream.read_exact(&mut echoed).map_err(|e| e.to_string())?;
    assert_eq!(&echoed, b"mesh client\n");
    Ok(started.elapsed())
}

#[test]
fn a_held_flood_of_idle_connections_does_not_lock_out_legitimate_clients() {
    let raised = strait::fdlimit::raise_to_hard().unwrap();
    assert!(raised.soft as usize > FLOOD + 1000, "this test holds {FLOOD} sockets: raise the hard open-file limit (ulimit -Hn) above {}", FLOOD + 1000);
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let ingress = Gateway::start_under(&["prlimit", NOFILE], Role::Ingress, pki.dir.path(), &ingress_config(&pki, echo.port).toml());
    let upstream = format!("127.0.0.1:{}", ingress.port("mtls"));
    let egress = Gateway::start_under(&["prlimit", NOFILE], Role::Egress, pki.dir.path(), &egress_config(&pki, &upstream).toml());
    let (plain, mesh) = (egress.port("mysql-plain"), egress.port("mesh"));
    assert!(!egress.log_lines("max_connections=960").is_empty(), "the plain listener's cap is derived from the 4096 budget");

    plain_served(plain).unwrap();
    mtls_served(&pki, mesh).unwrap();
    let (egress_pid, ingress_pid) = (egress.pid(), ingress.pid());
    let baseline = (settles(egress_pid, usize::MAX, Duration::ZERO).unwrap(), settles(ingress_pid, usize::MAX, Duration::ZERO).unwrap());
    std::thread::sleep(Duration::from_millis(200));
    let baseline = (baseline.0.min(open_fds(egress_pid)), baseline.1.min(open_fds(ingress_pid)));
    println!("baseline open descriptors: egress {}, ingress {}", baseline.0, baseline.1);

    // The flood: connections that never send a byte, held open.
    let started = Instant::now();
    let mut flood = Vec::with_capacity(FLOOD);
    while flood.len() < FLOOD {
        assert!(started.elapsed() < Duration::from_secs(120), "opening the flood took over 120 s ({} open)", flood.len());
        match TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], plain)), Duration::from_secs(5)) {
            Ok(stream) => flood.push(stream),
            Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => continue,
            Err(e) => panic!("flood connect {}: {e}", flood.len()),
        }
    }
    println!("flood of {FLOOD} opened in {:?}; open descriptors: egress {}, ingress {}", started.elapsed(), open_fds(egress_pid), open_fds(ingress_pid));
    // The flood filled the plain listener (its arrivals then made room from the idlest),
    // and under that pressure the shrunk idle timeouts (10 s when full) close the
    // flood's oldest connections too.
    egress.wait_for_access_line(&["listener=mysql-plain ", "outcome=shed", "max_connections reached"]);
    println!("plain listener: {} open now", metric(&egress, "strait_active_connections", &[("listener", "mysql-plain")]));
    assert!(open_fds(egress_pid) <= 4096 && open_fds(ingress_pid) <= 4096);

    // While it is held, the legitimate clients are served within 10 s.
    let plain_took = plain_served(plain).unwrap_or_else(|e| {
        let output = egress.proc.output();
        let tail: Vec<&str> = output.lines().filter(|l| !l.contains("outcome=shed")).collect();
        panic!("plain client refused under the flood: {e}\n{}", tail[tail.len().saturating_sub(15)..].join("\n"))
    });
    let mtls_took = mtls_served(&pki, mesh).unwrap_or_else(|e| panic!("mTLS client refused under the flood: {e}"));
    println!("under the flood: plain client served in {plain_took:?}, mTLS client in {mtls_took:?}");
    assert!(plain_took < Duration::from_secs(10) && mtls_took < Duration::from_secs(10));
    let shed_idle = metric(&egress, "strait_connections_shed_idle_total", &[("listener", "mysql-plain")]);
    // (+ 0.0: a sum of no samples is -0.0)
    let shed_at_accept = metric(&egress, "strait_connections_shed_total", &[("listener", "mysql-plain")]) + 0.0;
    println!("shed: {shed_idle} idle connections made room, {shed_at_accept} closed at accept");
    assert!(shed_idle >= 1.0, "the legitimate client took an idle connection's place");
    assert!(shed_idle + shed_at_accept >= (FLOOD - 960) as f64, "every flood connection beyond the cap was shed one way or the other");
    let line = egress.wait_for_access_line(&["outcome=shed", "max_connections reached"]);
    assert!(line.contains("idle for"), "{line}");

    // The flood closes: both processes are back at their baseline within 5 s.
    drop(flood);
    let closed = Instant::now();
    let egress_after = settles(egress_pid, baseline.0, Duration::from_secs(5));
    let ingress_after = settles(ingress_pid, baseline.1, Duration::from_secs(5).saturating_sub(closed.elapsed()));
    println!("after the flood closed ({:?}): egress {egress_after:?}, ingress {ingress_after:?} open descriptors", closed.elapsed());
    assert!(egress_after.is_ok() && ingress_after.is_ok(), "not back at the baseline {baseline:?} 5 s after the flood closed");
    plain_served(plain).unwrap();
}

/// With `max_connections` set above what the open-file limit allows, the flood runs the
/// process out of descriptors instead: an accept that fails with EMFILE sheds the
/// process's idlest connections and retries, so a legitimate client is still served.
#[test]
fn out_of_descriptors_the_idlest_connections_make_room() {
    const SMALL_FLOOD: usize = 1500;
    strait::fdlimit::raise_to_hard().unwrap();
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let config = Config::new().listener(Listener::plain("plain", "echo").set("max_connections", 5000)).route(Route::to("echo", echo.port).plaintext());
    let egress = Gateway::start_under(&["prlimit", "--nofile=1024:1024"], Role::Egress, pki.dir.path(), &config.toml());
    let port = egress.port("plain");
    plain_served(port).unwrap();
    let pid = egress.pid();
    std::thread::sleep(Duration::from_millis(200));
    let baseline = open_fds(pid);

    let started = Instant::now();
    let mut flood = Vec::with_capacity(SMALL_FLOOD);
    while flood.len() < SMALL_FLOOD {
        assert!(started.elapsed() < Duration::from_secs(120), "opening the flood took over 120 s ({} open)", flood.len());
        match TcpStream::connect_timeout(&SocketAddr::from(([127, 0, 0, 1], port)), Duration::from_secs(5)) {
            Ok(stream) => flood.push(stream),
            Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => continue,
            Err(e) => panic!("flood connect {}: {e}", flood.len()),
        }
    }
    println!("flood of {SMALL_FLOOD} opened in {:?}; egress holds {} descriptors of 1024", started.elapsed(), open_fds(pid));
    let took = plain_served(port).unwrap_or_else(|e| panic!("plain client refused out of descriptors: {e}\n{}", egress.proc.output()));
    println!("out of descriptors: plain client served in {took:?}");
    assert!(took < Duration::from_secs(10));
    assert!(!egress.log_lines("out of file descriptors; idlest connections shed").is_empty(), "the flood never ran the process out of descriptors");
    egress.wait_for_access_line(&["outcome=shed", "out of file descriptors"]);
    assert!(metric(&egress, "strait_connections_shed_idle_total", &[("listener", "plain")]) >= 1.0);

    drop(flood);
    let after = settles(pid, baseline, Duration::from_secs(5));
    println!("5 s after the flood closed: {after:?} descriptors (baseline {baseline})");
    assert!(after.is_ok(), "not back at the baseline {baseline}");
}

/// At `max_connections`, a new client takes the place of the connection idle longest
/// (idle at least a second); with `shed_idle_under_pressure = false` the cap is hard.
#[test]
fn the_limit_makes_room_from_idle_connections_unless_it_is_a_hard_cap() {
    let pki = Pki::reference();
    let echo = EchoServer::start();
    let config = Config::new()
        .listener(Listener::plain("soft", "echo").set("max_connections", 2))
        .listener(Listener::plain("hard", "echo").set("max_connections", 2).set("shed_idle_under_pressure", false))
        .route(Route::to("echo", echo.port).plaintext());
    let egress = Gateway::start(Role::Egress, pki.dir.path(), &config.toml());
    let held = |port: u16| -> Vec<TcpStream> {
        (0..2)
            .map(|_| {
                let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                stream.write_all(b"held\n").unwrap();
                let mut echoed = [0u8; 5];
                stream.read_exact(&mut echoed).unwrap();
                stream
            })
            .collect()
    };
    let (soft, hard) = (egress.port("soft"), egress.port("hard"));
    let (mut soft_held, mut hard_held) = (held(soft), held(hard));
    // Idleness is measured in time: the first of the soft pair idles longest, both past
    // the one-second floor.
    std::thread::sleep(Duration::from_millis(300));
    soft_held[1].write_all(b"held\n").unwrap();
    soft_held[1].read_exact(&mut [0u8; 5]).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    assert!(plain_served(soft).is_ok(), "the soft cap makes room");
    assert!(plain_served(hard).is_err(), "the hard cap refuses");
    let line = egress.wait_for_access_line(&["listener=soft ", "outcome=shed", "max_connections reached"]);
    println!("{line}");
    let mut rest = [0u8; 1];
    let idlest = soft_held[0].read(&mut rest);
    assert!(
        matches!(&idlest, Ok(0)) || matches!(&idlest, Err(e) if e.kind() == ErrorKind::ConnectionReset),
        "the idlest connection was the one shed: {idlest:?}"
    );
    for stream in hard_held.iter_mut().chain(&mut soft_held[1..]) {
        stream.write_all(b"alive\n").unwrap();
        let mut echoed = [0u8; 6];
        stream.read_exact(&mut echoed).unwrap();
    }
    assert_eq!(metric(&egress, "strait_connections_shed_idle_total", &[("listener", "soft")]), 1.0);
    assert_eq!(metric(&egress, "strait_connections_shed_total", &[("listener", "hard")]), 1.0);
}
