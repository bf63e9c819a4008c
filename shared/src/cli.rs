//! The command line both binaries share: run, `check`, `certs`.

use std::path::PathBuf;
use std::process::ExitCode;

use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::certs::{KeyType, ReferenceOptions};
use crate::config::{Config, Role};
use crate::gateway::StartError;
use crate::telemetry::LogFormat;

#[derive(Parser)]
#[command(version)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, env = "STRAIT_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Log level or filter, e.g. `debug` or `info,strait::access=warn`.
    #[arg(long, env = "STRAIT_LOG", default_value = "info", global = true)]
    log_level: String,
    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    /// Admin HTTP address (config dump, log level, and the health and metrics paths);
    /// overrides the config's `[admin] address`. Port 0 picks a free port (logged).
    #[arg(long, env = "STRAIT_ADMIN_ADDRESS", global = true)]
    admin_address: Option<std::net::SocketAddr>,
    /// Health port address (`/healthz/ready`); overrides `[health] address`.
    #[arg(long, env = "STRAIT_HEALTH_ADDRESS", global = true)]
    health_address: Option<std::net::SocketAddr>,
    /// Prometheus scrape port address (`/stats/prometheus`); overrides `[metrics] address`.
    #[arg(long, env = "STRAIT_METRICS_ADDRESS", global = true)]
    metrics_address: Option<std::net::SocketAddr>,
    /// Once ready, write the admin port's bound address to this file (Envoy's
    /// `--admin-address-path`): with `--admin-address 127.0.0.1:0`, how a supervisor or
    /// a test finds the port without reading logs.
    #[arg(long, env = "STRAIT_ADMIN_ADDRESS_PATH", global = true)]
    admin_address_path: Option<PathBuf>,
    /// Worker threads (Envoy's --concurrency); default: the CPUs this process may use.
    #[arg(long, env = "STRAIT_WORKERS", global = true)]
    workers: Option<usize>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration: syntax, fields, files, PEM, key/certificate pairs,
    /// route and listener references. Prints every problem found, each with its file,
    /// line, field and fix, and exits non-zero if there is any.
    Check,
    /// Walk a TLS path step by step (DNS, TCP per address, handshake, the server's
    /// chain) and say in plain words what is wrong. Egress: `diagnose ROUTE` runs the
    /// route's origination. Ingress: `diagnose --sni HOST --cert FILE --key FILE`
    /// connects to the running listener as a client. Exits 0 only if the path works.
    Diagnose(DiagnoseArgs),
    /// Write the reference certificates (root -> intermediate -> server and client
    /// certificates for HOST, plus a mesh CA with SPIFFE workload certificates) in
    /// Kubernetes Secret layout.
    Certs(CertsArgs),
}

#[derive(Args)]
struct DiagnoseArgs {
    /// Egress: the route to diagnose.
    route: Option<String>,
    /// Ingress: SNI to send.
    #[arg(long)]
    sni: Option<String>,
    /// Ingress: client certificate to present.
    #[arg(long)]
    cert: Option<PathBuf>,
    /// Ingress: its key.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Ingress: CA to verify the listener's certificate (default: the listener's ca).
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Ingress: address to connect to (default: the first TLS listener's).
    #[arg(long)]
    address: Option<std::net::SocketAddr>,
}

#[derive(Args)]
struct CertsArgs {
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// `$SERVICE_URL`: the ingress's DNS name (server certificate SAN and SNI).
    #[arg(long)]
    host: String,
    /// Mesh trust domain for the SPIFFE IDs.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// Leaf validity in days (CAs: ten times longer).
    #[arg(long, default_value_t = 90)]
    days: i64,
    /// Key algorithm.
    #[arg(long, value_enum, default_value_t = KeyType::EcdsaP256)]
    key_type: KeyType,
}

/// Entry point of `strait-egress` and `strait-ingress`.
pub fn main(role: Role) -> ExitCode {
    let name = match role {
        Role::Egress => "strait-egress",
        Role::Ingress => "strait-ingress",
    };
    let command = Cli::command().name(name).bin_name(name).about(match role {
        Role::Egress => "Strait egress gateway: plain or mesh mTLS in, SNI-routed mTLS out",
        Role::Ingress => "Strait ingress gateway: mTLS in, routed by SNI to in-cluster services",
    });
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let (_log_flush, log) = match crate::telemetry::init(&cli.log_level, cli.log_format) {
        Ok(logging) => logging,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    match run(role, cli, log) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One problem per line (a refused configuration has one per finding), each
            // line complete on its own for grep.
            for line in e.to_string().lines() {
                eprintln!("error: {line}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(role: Role, cli: Cli, log: crate::telemetry::LogControl) -> anyhow::Result<()> {
    let config_path = || cli.config.clone().ok_or_else(|| anyhow::anyhow!("no configuration: pass --config FILE or set STRAIT_CONFIG"));
    match cli.command {
        Some(Command::Certs(args)) => {
            let options = ReferenceOptions { host: args.host, trust_domain: args.trust_domain, days: args.days, key_type: args.key_type };
            crate::certs::write_reference(&args.out, &options)?;
            println!("wrote the reference certificates to {}", args.out.display());
        }
        Some(Command::Diagnose(args)) => {
            let config = Config::load(&config_path()?, role)?;
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let report = runtime.block_on(diagnose(role, &config, args))?;
            print!("{}", report.text);
            if !report.ok {
                anyhow::bail!("diagnose: the path does not work (see FAIL above)");
            }
        }
        Some(Command::Check) => {
            let path = config_path()?;
            // The file first (every problem in it), then every file it names.
            let checked = Config::load(&path, role).map_err(StartError::from).and_then(|config| Ok((crate::gateway::check(&config)?, config)));
            match checked {
                Ok((table, config)) => {
                    println!("{}: OK ({} listeners, {} routes, every credential loaded)", path.display(), table.listeners.len(), config.routes.len())
                }
                Err(e) => {
                    let count = match &e {
                        StartError::Config(e) => e.count(),
                        _ => 1,
                    };
                    let problems = if count == 1 { "1 problem".to_owned() } else { format!("{count} problems") };
                    anyhow::bail!("{e}\n{}: {problems}; fix {} and run `check` again", path.display(), if count == 1 { "it" } else { "them all" });
                }
            }
        }
        None => {
            raise_fd_limit();
            let options = crate::gateway::Options {
                config_path: config_path()?,
                role,
                admin_address: cli.admin_address,
                health_address: cli.health_address,
                metrics_address: cli.metrics_address,
                log: Some(Arc::new(log)),
            };
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            if let Some(workers) = cli.workers {
                runtime.worker_threads(workers.max(1));
            }
            runtime.enable_all().build()?.block_on(serve(options, cli.admin_address_path))?;
        }
    }
    Ok(())
}

/// Runs the gateway as a process: SIGHUP reloads, SIGTERM and SIGINT drain and stop.
async fn serve(options: crate::gateway::Options, admin_address_path: Option<PathBuf>) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    let shutdown = CancellationToken::new();
    let gateway = crate::gateway::run(options, shutdown.clone()).await?;
    if let (Some(path), Some(address)) = (&admin_address_path, gateway.admin_address) {
        write_atomically(path, &address.to_string()).with_context(|| format!("cannot write the admin address to {}", path.display()))?;
    }
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = hup.recv() => {
                // A refused reload is logged by the gateway; the process keeps running.
                let _ = gateway.reload("SIGHUP").await;
            }
        }
    }
    shutdown.cancel();
    gateway.stopped().await;
    Ok(())
}

/// Raises the soft open-file limit to the hard one before anything opens a socket, and
/// logs both with the connection budget they give (see [`crate::fdlimit`]).
fn raise_fd_limit() {
    use crate::fdlimit::{DEFAULT_CAP, HEADROOM, PER_CONNECTION};
    match crate::fdlimit::raise_to_hard() {
        Ok(limit) => {
            let budget = limit.soft.saturating_sub(HEADROOM) / PER_CONNECTION;
            tracing::info!(
                soft_before = limit.before,
                soft = limit.soft,
                hard = limit.hard,
                connection_budget = budget,
                "open-file limit: soft raised to the hard limit; listeners without max_connections share (soft - {HEADROOM}) / {PER_CONNECTION} = {budget} connections (each at most {DEFAULT_CAP})"
            );
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit: the default max_connections comes from the limit as it is"),
    }
}

/// Writes `text` so that a reader sees the whole file or none (write, then rename).
fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let partial = path.with_extension("partial");
    std::fs::write(&partial, text)?;
    std::fs::rename(&partial, path)
}

async fn diagnose(role: Role, config: &Config, args: DiagnoseArgs) -> anyhow::Result<crate::diagnose::Report> {
    if role == Role::Egress {
        let route = args.route.ok_or_else(|| anyhow::anyhow!("name the route: strait-egress diagnose ROUTE"))?;
        return Ok(crate::diagnose::route(config, &route).await);
    }
    let (Some(sni), Some(cert), Some(key)) = (args.sni, args.cert, args.key) else {
        anyhow::bail!("strait-ingress diagnose --sni HOST --cert FILE --key FILE [--ca FILE] [--address ADDR]");
    };
    let listener = config.listeners.iter().map(|l| l.get_ref()).find(|l| l.tls().is_some()).ok_or_else(|| anyhow::anyhow!("the config has no TLS listener"))?;
    let mut address = args.address.unwrap_or(listener.address);
    if address.ip().is_unspecified() {
        address.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let ca = args.ca.or_else(|| listener.tls().and_then(|t| t.ca.clone())).ok_or_else(|| anyhow::anyhow!("give --ca: the listener names no CA"))?;
    Ok(crate::diagnose::client(config, address, sni, cert, key, ca).await)
}
