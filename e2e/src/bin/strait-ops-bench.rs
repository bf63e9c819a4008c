//! `strait-ops-bench`: the operational figures of issue 18, against the release binaries
//! (`STRAIT_BIN_DIR=target/release`), run by `e2e/bench.sh` (`BENCH_ONLY=ops`); never
//! part of the test suite. Each subcommand prints one `key=value` line.
//!
//! `reload`: how long a kubelet Secret swap takes to reach new handshakes, under load,
//! and whether any connection fails meanwhile. The reference pair in front of an echo
//! server, the ingress's server credential mounted as a kubelet Secret. Load threads
//! connect through the egress's plain port in a closed loop (each connection a full mTLS
//! handshake on the hop) while the ingress's leaf is swapped the kubelet's way, back and
//! forth between two certificates from one CA. After each swap a probe handshakes with
//! the ingress directly (no resumption) until it is served the new leaf: the time from
//! the start of the swap to that handshake is the reload latency.
//!
//! `flood`: the resident memory a gateway keeps after a flood. The same pair; `--conns`
//! connections are opened through the plain port, each proven established by an echo,
//! held, then closed together; each process's RSS is read before, at the peak and every
//! second for `--settle` seconds after.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use rustls::client::Resumption;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use strait::certs::{Authority, Issued, KeyType, Leaf, Usage};
use strait_e2e::config::{Config, Listener, Route};
use strait_e2e::kube_secret::KubeSecret;
use strait_e2e::{client_config, EchoServer, Gateway, Role, SERVICE_HOST};

/// Longest wait for any single network step, and for a swap to show.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(name = "strait-ops-bench", about = "Reload latency under load, and memory kept after a connection flood")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Kubelet Secret swap -> new handshakes see the new certificate, under load.
    Reload(ReloadArgs),
    /// RSS above the baseline after a flood of held connections closes.
    Flood(FloodArgs),
}

#[derive(clap::Args)]
struct ReloadArgs {
    /// Swaps to measure.
    #[arg(long, default_value_t = 20)]
    rounds: usize,
    /// Load threads connecting through the pair in a closed loop.
    #[arg(long, default_value_t = 8)]
    load: usize,
    /// Pause between swaps, milliseconds (the load runs throughout).
    #[arg(long, default_value_t = 300)]
    dwell_ms: u64,
}

#[derive(clap::Args)]
struct FloodArgs {
    /// Connections held at once (each costs the egress and the ingress two descriptors).
    #[arg(long, default_value_t = 8_000)]
    conns: usize,
    /// Seconds to watch the RSS after the flood closed.
    #[arg(long, default_value_t = 30)]
    settle: u64,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Reload(args) => reload(args),
        Command::Flood(args) => flood(args),
    }
}

/// The reference pair, on a fresh CA, in front of `backend_port`: the egress's plain
/// listener `plain` -> mTLS -> the ingress's `mtls` listener, whose server credential
/// is a kubelet Secret (swappable) holding `leaves[0]`.
struct Bench {
    /// Holds the configs, credentials and logs while the pair runs.
    _dir: tempfile::TempDir,
    client_dir: std::path::PathBuf,
    secret: KubeSecret,
    ingress: Gateway,
    egress: Gateway,
}

impl Bench {
    fn start(backend_port: u16, leaf: &Issued, ca: &Authority) -> Result<Bench> {
        let dir = tempfile::tempdir()?;
        let mut client = Leaf::new(&format!("client.{SERVICE_HOST}"), Usage::Client, 2);
        client.dns.push(format!("client.{SERVICE_HOST}"));
        let client_dir = dir.path().join("egress");
        strait::certs::write_secret(&client_dir, &ca.issue(&client)?, &ca.bundle_pem())?;
        let secret = KubeSecret::tls(&dir.path().join("ingress-secret"), leaf, &ca.bundle_pem());
        let ingress_toml = Config::new().listener(Listener::mutual("mtls", &secret.dir)).route(Route::to("backend", backend_port).hosts(&[SERVICE_HOST]));
        let ingress = Gateway::start(Role::Ingress, dir.path(), &ingress_toml.toml());
        let egress_toml = Config::new()
            .listener(Listener::plain("plain", "to-ingress"))
            .route(Route::to("to-ingress", ingress.port("mtls")).mutual_origination(&client_dir, SERVICE_HOST));
        let egress = Gateway::start(Role::Egress, dir.path(), &egress_toml.toml());
        Ok(Bench { _dir: dir, client_dir, secret, ingress, egress })
    }
}

fn new_ca() -> Result<Authority> {
    let root = Authority::root("Ops Bench Root", KeyType::EcdsaP256, 2)?;
    Ok(root.intermediate("Ops Bench Intermediate", 2)?)
}

fn server_leaf(ca: &Authority, n: usize) -> Result<Issued> {
    let mut leaf = Leaf::new(&format!("{SERVICE_HOST} #{n}"), Usage::Server, 2);
    leaf.dns.push(SERVICE_HOST.into());
    Ok(ca.issue(&leaf)?)
}

fn reload(args: ReloadArgs) -> Result<()> {
    let ca = new_ca()?;
    let leaves = [server_leaf(&ca, 0)?, server_leaf(&ca, 1)?];
    let leaf_der = |issued: &Issued| -> Result<CertificateDer<'static>> {
        Ok(CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes()).next().context("an issued chain without a certificate")??)
    };
    let ders = [leaf_der(&leaves[0])?, leaf_der(&leaves[1])?];
    let echo = EchoServer::start();
    let mut bench = Bench::start(echo.port, &leaves[0], &ca)?;
    let (ingress_port, plain_port) = (bench.ingress.port("mtls"), bench.egress.port("plain"));
    let client_dir = bench.client_dir.clone();

    let mut probe_config = (*client_config(Some(&client_dir), &client_dir.join("ca.crt"))).clone();
    probe_config.resumption = Resumption::disabled();
    let probe_config = Arc::new(probe_config);
    let served = |config: &Arc<rustls::ClientConfig>| -> Result<CertificateDer<'static>> { served_leaf(config, ingress_port) };
    if served(&probe_config)? != ders[0] {
        bail!("the ingress does not serve the first certificate before any swap");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (made, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let threads: Vec<_> = (0..args.load)
        .map(|_| {
            let (stop, made, failed) = (stop.clone(), made.clone(), failed.clone());
            std::thread::spawn(move || {
                // Bounded in count as well as by `stop`.
                for _ in 0..1_000_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    match echo_once(plain_port) {
                        Ok(()) => made.fetch_add(1, Ordering::Relaxed),
                        Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();

    let mut latencies = Vec::new();
    for round in 0..args.rounds {
        std::thread::sleep(Duration::from_millis(args.dwell_ms));
        let (next, next_der) = (&leaves[(round + 1) % 2], &ders[(round + 1) % 2]);
        let started = Instant::now();
        bench.secret.update(&[("tls.crt", &next.chain_pem), ("tls.key", &next.key_pem)]);
        loop {
            if served(&probe_config)? == *next_der {
                latencies.push(started.elapsed());
                break;
            }
            if started.elapsed() > STEP_TIMEOUT {
                bail!("round {round}: the new certificate was not served within {STEP_TIMEOUT:?}");
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
    latencies.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "rounds={} p50_ms={:.1} max_ms={:.1} min_ms={:.1} load_conns={} load_failures={}",
        latencies.len(),
        ms(latencies[latencies.len() / 2]),
        ms(latencies[latencies.len() - 1]),
        ms(latencies[0]),
        made.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    drop(bench);
    Ok(())
}

/// One full handshake with the ingress: the leaf it presents.
fn served_leaf(config: &Arc<rustls::ClientConfig>, port: u16) -> Result<CertificateDer<'static>> {
    let name = ServerName::try_from(SERVICE_HOST)?;
    let mut conn = rustls::ClientConnection::new(config.clone(), name)?;
    let mut tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(STEP_TIMEOUT))?;
    tcp.set_write_timeout(Some(STEP_TIMEOUT))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).context("probe handshake")?;
    }
    let chain = conn.peer_certificates().context("no server certificate")?;
    Ok(chain[0].clone().into_owned())
}

/// Connect through the pair, one byte there and back.
fn echo_once(port: u16) -> std::io::Result<()> {
    let mut tcp = TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(STEP_TIMEOUT))?;
    tcp.set_nodelay(true)?;
    tcp.write_all(b"x")?;
    let mut byte = [0u8; 1];
    tcp.read_exact(&mut byte)
}

fn flood(args: FloodArgs) -> Result<()> {
    // The client and the backend hold a descriptor per connection each, in this process.
    strait::fdlimit::raise_to_hard()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let backend = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let backend_port = backend.local_addr()?.port();
    runtime.spawn(echo_each(backend));
    let ca = new_ca()?;
    let bench = Bench::start(backend_port, &server_leaf(&ca, 0)?, &ca)?;
    let plain_port = bench.egress.port("plain");
    let pids = [("egress", bench.egress.proc.pid()), ("ingress", bench.ingress.proc.pid())];

    // Warm up (TLS state, buffers, the first of each allocation size), then the baseline.
    runtime.block_on(open_held(plain_port, 200))?;
    std::thread::sleep(Duration::from_secs(2));
    let baseline = pids.map(|(_, pid)| rss_kib(pid));
    let held = runtime.block_on(open_held(plain_port, args.conns))?;
    let peak = pids.map(|(_, pid)| rss_kib(pid));
    let opened = held.len();
    drop(held);
    let closed = Instant::now();
    let mut samples: Vec<[u64; 2]> = Vec::new();
    for second in 1..=args.settle {
        std::thread::sleep((closed + Duration::from_secs(second)).saturating_duration_since(Instant::now()));
        samples.push(pids.map(|(_, pid)| rss_kib(pid)));
    }
    let mib = |kib: u64, base: u64| kib.saturating_sub(base) as f64 / 1024.0;
    let mut line = format!("conns={opened}");
    for (i, (name, _)) in pids.iter().enumerate() {
        let at = |s: usize| samples.get(s.saturating_sub(1)).map_or(0.0, |sample| mib(sample[i], baseline[i]));
        line += &format!(
            " {name}_baseline_mib={:.1} {name}_peak_above_mib={:.1} {name}_above_1s_mib={:.1} {name}_above_5s_mib={:.1} {name}_above_end_mib={:.1}",
            baseline[i] as f64 / 1024.0,
            mib(peak[i], baseline[i]),
            at(1),
            at(5),
            at(samples.len()),
        );
    }
    println!("{line}");
    drop(bench);
    Ok(())
}

/// Resident set size of `pid`, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap_or(0)
}

/// `count` connections through `port`, each proven established end to end by one echoed
/// byte, opened 256 at a time.
async fn open_held(port: u16, count: usize) -> Result<Vec<tokio::net::TcpStream>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut held = Vec::with_capacity(count);
    let mut failures = 0usize;
    while held.len() + failures < count {
        let batch = (count - held.len() - failures).min(256);
        let mut opening = tokio::task::JoinSet::new();
        for _ in 0..batch {
            opening.spawn(async move {
                let step = async {
                    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                    tcp.write_all(b"x").await?;
                    let mut byte = [0u8; 1];
                    tcp.read_exact(&mut byte).await?;
                    Ok::<_, std::io::Error>(tcp)
                };
                tokio::time::timeout(STEP_TIMEOUT, step).await
            });
        }
        while let Some(done) = opening.join_next().await {
            match done? {
                Ok(Ok(tcp)) => held.push(tcp),
                _ => failures += 1,
            }
        }
    }
    if failures > 0 {
        eprintln!("{failures} of {count} connections failed to open");
    }
    Ok(held)
}

/// Echoes every connection until it closes.
async fn echo_each(listener: tokio::net::TcpListener) {
    while let Ok((mut tcp, _)) = listener.accept().await {
        tokio::spawn(async move {
            let (mut reader, mut writer) = tcp.split();
            let _ = tokio::io::copy(&mut reader, &mut writer).await;
        });
    }
}
