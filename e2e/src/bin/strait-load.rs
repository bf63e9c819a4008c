//! `strait-load`: the load generator, backend and plain relay of `e2e/bench.sh`.
//!
//! Every path the benchmark measures ends at `backend`, which speaks a one-byte protocol:
//! a stream that starts with `b` is drained to EOF and answered with the byte count
//! (8 bytes, big-endian); a stream that starts with `p` gets one byte back at once and is
//! then drained until the client closes. The clients (`bulk`, `connect`, `hold`) speak
//! plain TCP, or mutual TLS with `--tls DIR` (a Secret directory: tls.crt, tls.key,
//! ca.crt), and print one line of `key=value` pairs for the script to read. Every client
//! loop is bounded in time and count; the servers (`backend`, `relay`, `tap`) exit by
//! themselves after `--lifetime` seconds should the script fail to stop them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use rustls::client::Resumption;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;

/// Longest wait for any single network step of a client (connect, handshake, reply).
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Size of each write of `bulk`: several TLS records, so no gateway sees tiny writes.
const BULK_CHUNK: usize = 64 * 1024;

#[derive(Parser)]
#[command(name = "strait-load", about = "Load generator, backend and plain relay for e2e/bench.sh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The sink/ping server every measured path ends at.
    Backend(ServerArgs),
    /// A plain TCP relay (the floor: two of them chained stand in for the gateway pair).
    Relay(RelayArgs),
    /// Bulk throughput: N streams each write as fast as they can for `--seconds`.
    Bulk(BulkArgs),
    /// Connection rate and latency: connect (+ TLS handshake) + one-byte round trip, closed loop.
    Connect(ConnectArgs),
    /// Opens `--count` connections through the path and holds them idle.
    Hold(HoldArgs),
    /// A plain relay that prints each TLS ServerHello passing through it (version, AEAD, resumed).
    Tap(TapArgs),
}

#[derive(Args)]
struct ServerArgs {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
    /// Seconds after which the server exits whatever happens.
    #[arg(long, default_value_t = 3600)]
    lifetime: u64,
}

#[derive(Args)]
struct RelayArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Where every accepted connection is relayed to.
    #[arg(long)]
    connect: SocketAddr,
    /// Copy buffer per direction, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    buffer: usize,
}

#[derive(Args)]
struct Target {
    /// Address of the path's entry point.
    #[arg(long)]
    connect: SocketAddr,
    /// Connect with mutual TLS presenting this Secret directory (tls.crt, tls.key, ca.crt);
    /// plain TCP without it. Session resumption is off: every handshake is a full one.
    #[arg(long)]
    tls: Option<PathBuf>,
    /// SNI and verified server name for `--tls`.
    #[arg(long, default_value = strait_e2e::SERVICE_HOST)]
    sni: String,
}

#[derive(Args)]
struct BulkArgs {
    #[command(flatten)]
    target: Target,
    /// Parallel streams.
    #[arg(long, default_value_t = 1)]
    streams: usize,
    /// How long each stream keeps writing.
    #[arg(long, default_value_t = 4.0)]
    seconds: f64,
    /// Upper bound on the bytes each stream writes.
    #[arg(long, default_value_t = 64 << 30)]
    max_bytes: u64,
}

#[derive(Args)]
struct ConnectArgs {
    #[command(flatten)]
    target: Target,
    /// Connections in flight at once (closed loop).
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// How long to keep connecting.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Upper bound on the connections made.
    #[arg(long, default_value_t = 200_000)]
    max: u64,
}

#[derive(Args)]
struct HoldArgs {
    #[command(flatten)]
    target: Target,
    /// Connections to open and hold.
    #[arg(long, default_value_t = 2000)]
    count: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// How long to hold them once all are open.
    #[arg(long, default_value_t = 30.0)]
    seconds: f64,
}

#[derive(Args)]
struct TapArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// The TLS server whose ServerHello is read.
    #[arg(long)]
    connect: SocketAddr,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = match &cli.command {
        // The relay is a floor for a gateway pinned to one CPU: one thread, like Envoy's worker.
        Command::Relay(_) => tokio::runtime::Builder::new_current_thread().enable_all().build()?,
        _ => tokio::runtime::Builder::new_multi_thread().enable_all().build()?,
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Backend(args) => serve(args, None, 0).await,
            Command::Relay(args) => serve(args.server, Some(args.connect), args.buffer).await,
            Command::Bulk(args) => bulk(args).await,
            Command::Connect(args) => connect_rate(args).await,
            Command::Hold(args) => hold(args).await,
            Command::Tap(args) => tap(args.server, args.connect).await,
        }
    })
}

/// Accepts until `lifetime` runs out; relays to `upstream` when given, else acts as the backend.
async fn serve(args: ServerArgs, upstream: Option<SocketAddr>, buffer: usize) -> Result<()> {
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("bind {}", args.listen))?;
    let accept_loop = async {
        loop {
            let (tcp, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    eprintln!("accept: {e}; retrying in 100ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            tokio::spawn(async move {
                let result = match upstream {
                    Some(to) => relay(tcp, to, buffer).await,
                    None => backend(tcp).await,
                };
                // A bare connect and close is a readiness probe, not an error.
                match result {
                    Err(e) if e.kind() != std::io::ErrorKind::UnexpectedEof => eprintln!("connection: {e}"),
                    _ => {}
                }
            });
        }
    };
    let _ = timeout(Duration::from_secs(args.lifetime), accept_loop).await;
    Ok(())
}

/// One backend connection: `b` drains and answers the count, `p` answers one byte.
async fn backend(mut tcp: TcpStream) -> std::io::Result<()> {
    let mut op = [0u8; 1];
    tcp.read_exact(&mut op).await?;
    match op[0] {
        b'b' => {
            let received = drain(&mut tcp).await?;
            tcp.write_all(&received.to_be_bytes()).await?;
        }
        b'p' => {
            tcp.write_all(b"p").await?;
            drain(&mut tcp).await?;
        }
        other => return Err(std::io::Error::other(format!("unknown operation byte {other:#x}"))),
    }
    tcp.shutdown().await
}

/// Reads to EOF, discarding; returns the byte count.
async fn drain(reader: &mut (impl AsyncRead + Unpin)) -> std::io::Result<u64> {
    let mut buffer = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        match reader.read(&mut buffer).await? {
            0 => return Ok(total),
            n => total += n as u64,
        }
    }
}

/// The floor relay: plain TCP both ways, half-close preserved.
async fn relay(mut downstream: TcpStream, to: SocketAddr, buffer: usize) -> std::io::Result<()> {
    let mut upstream = timeout(STEP_TIMEOUT, TcpStream::connect(to)).await.map_err(std::io::Error::other)??;
    let _ = upstream.set_nodelay(true);
    tokio::io::copy_bidirectional_with_sizes(&mut downstream, &mut upstream, buffer, buffer).await?;
    Ok(())
}

/// Either side of a client connection.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Opens connections to one target: plain TCP, or mTLS without resumption.
struct Dialer {
    /// The entry point of the measured path.
    address: SocketAddr,
    /// TLS settings when the entry point is a TLS listener.
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

impl Dialer {
    fn new(target: &Target) -> Result<Dialer> {
        let tls = match &target.tls {
            None => None,
            Some(dir) => {
                let mut config = (*strait_e2e::client_config(Some(dir), &dir.join("ca.crt"))).clone();
                config.resumption = Resumption::disabled();
                let name = ServerName::try_from(target.sni.clone()).context("--sni is not a DNS name")?;
                Some((TlsConnector::from(Arc::new(config)), name))
            }
        };
        Ok(Dialer { address: target.connect, tls })
    }

    async fn dial(&self) -> Result<Box<dyn Io>> {
        let tcp = timeout(STEP_TIMEOUT, TcpStream::connect(self.address)).await.context("connect timed out")??;
        tcp.set_nodelay(true)?;
        match &self.tls {
            None => Ok(Box::new(tcp)),
            Some((connector, name)) => {
                let tls = timeout(STEP_TIMEOUT, connector.connect(name.clone(), tcp)).await.context("TLS handshake timed out")??;
                Ok(Box::new(tls))
            }
        }
    }
}

async fn bulk(args: BulkArgs) -> Result<()> {
    let dialer = Arc::new(Dialer::new(&args.target)?);
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.seconds);
    let mut streams = JoinSet::new();
    for _ in 0..args.streams {
        streams.spawn(bulk_stream(dialer.clone(), deadline, args.max_bytes));
    }
    let mut total = 0;
    while let Some(result) = streams.join_next().await {
        total += result??;
    }
    let seconds = start.elapsed().as_secs_f64();
    println!("bytes={total} seconds={seconds:.3} mbit_s={:.1}", total as f64 * 8.0 / seconds / 1e6);
    Ok(())
}

/// Writes until `deadline` (or `limit` bytes), half-closes, and checks the sink's count.
async fn bulk_stream(dialer: Arc<Dialer>, deadline: Instant, limit: u64) -> Result<u64> {
    let mut stream = dialer.dial().await?;
    stream.write_all(b"b").await?;
    let chunk = vec![0x5a_u8; BULK_CHUNK];
    let mut sent = 0u64;
    while Instant::now() < deadline && sent < limit {
        timeout(STEP_TIMEOUT, stream.write_all(&chunk)).await.context("write stalled")??;
        sent += chunk.len() as u64;
    }
    stream.shutdown().await?;
    let mut count = [0u8; 8];
    timeout(STEP_TIMEOUT * 3, stream.read_exact(&mut count)).await.context("no byte count from the sink")??;
    let received = u64::from_be_bytes(count);
    if received != sent {
        bail!("sent {sent} bytes but the sink counted {received}");
    }
    Ok(received)
}

async fn connect_rate(args: ConnectArgs) -> Result<()> {
    let dialer = Arc::new(Dialer::new(&args.target)?);
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(args.seconds);
    let mut workers = JoinSet::new();
    for _ in 0..args.concurrency {
        let (dialer, issued, max) = (dialer.clone(), issued.clone(), args.max);
        workers.spawn(async move {
            let (mut latencies, mut errors) = (Vec::new(), Vec::new());
            while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max {
                let t0 = Instant::now();
                match ping(&dialer).await {
                    Ok(mut stream) => {
                        latencies.push(t0.elapsed());
                        let _ = timeout(STEP_TIMEOUT, stream.shutdown()).await;
                    }
                    Err(e) => errors.push(e.to_string()),
                }
            }
            (latencies, errors)
        });
    }
    let (mut latencies, mut errors) = (Vec::new(), Vec::new());
    while let Some(result) = workers.join_next().await {
        let (l, e) = result?;
        latencies.extend(l);
        errors.extend(e);
    }
    let seconds = start.elapsed().as_secs_f64();
    latencies.sort();
    let ms = |q: f64| percentile(&latencies, q).as_secs_f64() * 1e3;
    println!(
        "conns={} errors={} seconds={seconds:.3} rate={:.1} p50_ms={:.3} p99_ms={:.3}",
        latencies.len(),
        errors.len(),
        latencies.len() as f64 / seconds,
        ms(0.50),
        ms(0.99)
    );
    if let Some(first) = errors.first() {
        eprintln!("{} connections failed; first: {first}", errors.len());
    }
    Ok(())
}

/// Connect (+ handshake), send `p`, wait for the reply byte: the measured unit.
async fn ping(dialer: &Dialer) -> Result<Box<dyn Io>> {
    let mut stream = dialer.dial().await?;
    stream.write_all(b"p").await?;
    let mut reply = [0u8; 1];
    timeout(STEP_TIMEOUT, stream.read_exact(&mut reply)).await.context("no reply byte")??;
    Ok(stream)
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

async fn hold(args: HoldArgs) -> Result<()> {
    let dialer = Arc::new(Dialer::new(&args.target)?);
    let mut opening = JoinSet::new();
    let (mut held, mut failed) = (Vec::with_capacity(args.count), 0usize);
    for _ in 0..args.count {
        if opening.len() >= args.concurrency {
            collect(opening.join_next().await, &mut held, &mut failed);
        }
        let dialer = dialer.clone();
        opening.spawn(async move { ping(&dialer).await });
    }
    while let Some(result) = opening.join_next().await {
        collect(Some(result), &mut held, &mut failed);
    }
    println!("held={} failed={failed}", held.len());
    tokio::time::sleep(Duration::from_secs_f64(args.seconds)).await;
    drop(held);
    Ok(())
}

fn collect(result: Option<Result<Result<Box<dyn Io>>, tokio::task::JoinError>>, held: &mut Vec<Box<dyn Io>>, failed: &mut usize) {
    match result {
        Some(Ok(Ok(stream))) => held.push(stream),
        Some(_) => *failed += 1,
        None => {}
    }
}

/// The tap: a plain relay that reads the TLS ServerHello going back to the client and
/// prints, per connection, the version, cipher suite and whether the session was resumed.
async fn tap(args: ServerArgs, upstream: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("bind {}", args.listen))?;
    let accept_loop = async {
        while let Ok((downstream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if let Err(e) = tap_one(downstream, upstream).await {
                    eprintln!("tap: {e}");
                }
            });
        }
    };
    let _ = timeout(Duration::from_secs(args.lifetime), accept_loop).await;
    Ok(())
}

async fn tap_one(downstream: TcpStream, to: SocketAddr) -> Result<()> {
    let upstream = timeout(STEP_TIMEOUT, TcpStream::connect(to)).await??;
    let (mut down_read, mut down_write) = downstream.into_split();
    let (mut up_read, mut up_write) = upstream.into_split();
    let client_to_server = async {
        tokio::io::copy(&mut down_read, &mut up_write).await?;
        up_write.shutdown().await
    };
    let server_to_client = async {
        let mut seen = Vec::new();
        let mut buffer = vec![0u8; 16 * 1024];
        while seen.len() < 64 * 1024 {
            let n = up_read.read(&mut buffer).await?;
            if n == 0 {
                break;
            }
            down_write.write_all(&buffer[..n]).await?;
            seen.extend_from_slice(&buffer[..n]);
            match server_hello(&seen) {
                Some(Ok(hello)) => {
                    println!("{hello}");
                    break;
                }
                Some(Err(e)) => {
                    println!("unparsed: {e}");
                    break;
                }
                None => {}
            }
        }
        tokio::io::copy(&mut up_read, &mut down_write).await?;
        down_write.shutdown().await
    };
    tokio::try_join!(client_to_server, server_to_client)?;
    Ok(())
}

/// Reads the ServerHello at the start of `bytes`: `None` until it is complete.
fn server_hello(bytes: &[u8]) -> Option<Result<String, String>> {
    let record_len = usize::from(u16::from_be_bytes([*bytes.get(3)?, *bytes.get(4)?]));
    let record = bytes.get(5..5 + record_len)?;
    if bytes[0] != 22 || record.first() != Some(&2) {
        return Some(Err(format!("first record is type {} / handshake {:?}, not a ServerHello", bytes[0], record.first())));
    }
    Some(parse_server_hello(&record[4..]).ok_or_else(|| "truncated ServerHello".to_owned()))
}

fn parse_server_hello(body: &[u8]) -> Option<String> {
    let session_id_len = usize::from(*body.get(34)?);
    let at = 35 + session_id_len;
    let suite = u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]);
    let extensions_len = usize::from(u16::from_be_bytes([*body.get(at + 3)?, *body.get(at + 4)?]));
    let mut extensions = body.get(at + 5..at + 5 + extensions_len)?;
    let (mut version, mut resumed) = ("TLSv1.2", false);
    while extensions.len() >= 4 {
        let kind = u16::from_be_bytes([extensions[0], extensions[1]]);
        let len = usize::from(u16::from_be_bytes([extensions[2], extensions[3]]));
        match kind {
            0x002b => version = "TLSv1.3",
            0x0029 => resumed = true,
            _ => {}
        }
        extensions = extensions.get(4 + len..)?;
    }
    let name = match suite {
        0x1301 => "TLS13_AES_128_GCM_SHA256",
        0x1302 => "TLS13_AES_256_GCM_SHA384",
        0x1303 => "TLS13_CHACHA20_POLY1305_SHA256",
        0xc02b => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        0xc02c => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        0xcca9 => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        _ => "other",
    };
    Some(format!("version={version} suite={name} suite_id={suite:#06x} resumed={resumed}"))
}
