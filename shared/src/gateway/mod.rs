//! A running gateway: binds every listener, serves, reloads on change, drains on stop.
//!
//! [`run`] starts one and returns a [`Handle`] with the bound addresses (a listener may
//! bind port 0), the metrics, and a way to ask for a reload; it stops when the caller's
//! shutdown token is cancelled. Signals belong to the process, so the CLI maps them onto
//! the handle; a test runs a gateway in-process the same way.
//!
//! The configuration and every credential it names are re-read on request and whenever
//! one of their files changes ([`reload`]). Connections already open keep the snapshot
//! they started with. On shutdown the listeners stop accepting and open connections get
//! `[process] drain_timeout`; whatever is still open then is cut, and its access-log line
//! and closed metric say `drained`.

mod reload;
mod report;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access_log::Recorder;
use crate::admin::{self, AdminState, Port};
use crate::config::{Config, Role};
use crate::connection::Context;
use crate::endpoints::Registry;
use crate::health::HealthChecks;
use crate::metrics::Metrics;
use crate::otel::Otel;
use crate::resolve::Resolver;
use crate::route::RouteTable;
use crate::telemetry::LogControl;
use crate::watch::{self, Change, FileWatcher};

/// How long a burst of in-place file writes is allowed to settle before reloading (a
/// kubelet `..data` swap does not wait: it is complete when it lands).
const SETTLE: Duration = Duration::from_millis(300);

/// Events queued before the gateway reads them; more are dropped (one pending is enough).
const PENDING_CHANGES: usize = 16;

/// How long cut connections get to write their records after the drain ran out.
const CUT_GRACE: Duration = Duration::from_secs(5);

/// Why the gateway could not start (a reload reports the same errors but keeps running).
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration or a credential it names is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The resolver could not be set up.
    #[error(transparent)]
    Resolve(#[from] crate::resolve::ResolveError),
    /// A listener's address could not be bound.
    #[error("listener {name:?}: cannot bind {address}: {source}")]
    Bind {
        /// The listener (or `admin`).
        name: String,
        /// The address it asked for.
        address: SocketAddr,
        /// Why the bind failed.
        source: std::io::Error,
    },
    /// The file watcher or the telemetry export could not be set up.
    #[error("cannot set up {what}: {reason}")]
    Setup {
        /// What could not be set up.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

/// The outcome of the latest reload attempt, kept for operators.
#[derive(Clone, Debug)]
pub struct ReloadStatus {
    /// When it was attempted.
    pub at: SystemTime,
    /// What triggered it.
    pub trigger: &'static str,
    /// `Err` holds the message that kept the old state running.
    pub result: Result<(), String>,
    /// Successful reloads since start.
    pub succeeded: u64,
    /// Refused reloads since start.
    pub failed: u64,
}

/// Loads everything the config names, exactly as a start would, without binding.
pub fn check(config: &Config) -> Result<RouteTable, StartError> {
    Ok(RouteTable::build(config)?)
}

/// What a gateway is started from.
pub struct Options {
    /// The configuration file (re-read on every reload).
    pub config_path: PathBuf,
    /// Egress or ingress.
    pub role: Role,
    /// Overrides the config's `[admin] address`.
    pub admin_address: Option<SocketAddr>,
    /// Overrides the config's `[health] address`.
    pub health_address: Option<SocketAddr>,
    /// Overrides the config's `[metrics] address`.
    pub metrics_address: Option<SocketAddr>,
    /// The process's log filter, for the admin port's `/logging`.
    pub log: Option<Arc<LogControl>>,
}

/// A running gateway, as its owner sees it.
pub struct Handle {
    listeners: Arc<ArcSwap<BTreeMap<String, SocketAddr>>>,
    /// The admin port's bound address, when it is enabled.
    pub admin_address: Option<SocketAddr>,
    /// The health port's bound address, when it is enabled.
    pub health_address: Option<SocketAddr>,
    /// The metrics port's bound address, when it is enabled.
    pub metrics_address: Option<SocketAddr>,
    /// The gateway's metrics.
    pub metrics: Arc<Metrics>,
    reloads: mpsc::Sender<(&'static str, oneshot::Sender<Result<(), String>>)>,
    task: JoinHandle<()>,
}

impl Handle {
    /// The address listener `name` is bound to now (port 0 resolved).
    pub fn listener(&self, name: &str) -> Option<SocketAddr> {
        self.listeners.load().get(name).copied()
    }

    /// Every listener's bound address, by name.
    pub fn listeners(&self) -> BTreeMap<String, SocketAddr> {
        self.listeners.load().as_ref().clone()
    }

    /// Re-reads the configuration and every credential; returns once applied (or
    /// refused, with the reason; the previous state then stays in force).
    pub async fn reload(&self, trigger: &'static str) -> Result<(), String> {
        let (done, result) = oneshot::channel();
        self.reloads.send((trigger, done)).await.map_err(|_| "the gateway has stopped".to_owned())?;
        result.await.map_err(|_| "the gateway has stopped".to_owned())?
    }

    /// Waits until the gateway has drained and stopped.
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

/// Starts a gateway: loads and binds everything, starts the admin port, marks it ready.
/// It runs until `shutdown` is cancelled, then drains.
pub async fn run(options: Options, shutdown: CancellationToken) -> Result<Handle, StartError> {
    let (changes_tx, changes) = mpsc::channel(PENDING_CHANGES);
    let (reloads_tx, reloads) = mpsc::channel(1);
    let mut gateway = Gateway::start(&options, changes_tx).await?;
    let ports = gateway.http_ports.clone();
    let wanted = [
        (Port::Admin, ports.admin.then(|| options.admin_address.unwrap_or(ports.admin_address))),
        (Port::Health, ports.health.map(|a| options.health_address.unwrap_or(a))),
        (Port::Metrics, ports.metrics.map(|a| options.metrics_address.unwrap_or(a))),
    ];
    if let (Port::Admin, Some(address)) = wanted[0] {
        // `--admin-address` is held to the same rule as the file.
        if !address.ip().is_loopback() && !ports.admin_remote {
            let reason = format!("admin address {address} is reachable from other hosts: bind 127.0.0.1, or set [admin] allow_remote = true");
            return Err(StartError::Setup { what: "the admin port", reason });
        }
    }
    let mut bound = [None; 3];
    for (slot, (port, address)) in bound.iter_mut().zip(wanted) {
        let Some(address) = address else { continue };
        let at = admin::serve(port, address, gateway.admin.clone(), gateway.admin_stop.clone()).await.map_err(|source| StartError::Bind {
            name: port.name().into(),
            address,
            source,
        })?;
        tracing::info!(address = %at, "{} listening", port.name());
        *slot = Some(at);
    }
    let [admin_address, health_address, metrics_address] = bound;
    gateway.http_bound = report::HttpAddresses { admin: admin_address, health: health_address, metrics: metrics_address };
    gateway.refresh_dump(None);
    gateway.admin.ready.store(true, Ordering::Relaxed);
    tracing::info!(role = options.role.name(), "ready");
    let (listeners, metrics) = (gateway.bound_addresses.clone(), gateway.context.recorder.metrics.clone());
    let task = tokio::spawn(gateway.serve(shutdown, changes, reloads));
    Ok(Handle { listeners, admin_address, health_address, metrics_address, metrics, reloads: reloads_tx, task })
}

/// The HTTP ports as loaded at start (they are not rebound on reload).
#[derive(Clone, Debug)]
struct HttpPorts {
    /// Whether the admin port runs.
    admin: bool,
    /// Where it listens.
    admin_address: SocketAddr,
    /// Whether a non-loopback admin address is allowed (`[admin] allow_remote`).
    admin_remote: bool,
    /// The health port, unless disabled.
    health: Option<SocketAddr>,
    /// The metrics port, unless disabled.
    metrics: Option<SocketAddr>,
}

/// A bound listener, its connection limit and the token that stops its accept loop.
struct Bound {
    /// The address the config asked for (a port 0 stays 0 here).
    configured: SocketAddr,
    stop: CancellationToken,
    limit: Arc<crate::listener::ConnectionLimit>,
}

/// The running gateway's state: what a reload changes and what shutdown stops.
struct Gateway {
    /// Egress or ingress: decides the config's defaults.
    role: Role,
    /// Re-read on every reload.
    config_path: PathBuf,
    /// What every connection shares.
    context: Arc<Context>,
    /// Bound listeners by name.
    listeners: BTreeMap<String, Bound>,
    /// The bound addresses, shared with the [`Handle`] and `/config_dump`.
    bound_addresses: Arc<ArcSwap<BTreeMap<String, SocketAddr>>>,
    /// Stops every accept loop at shutdown.
    stop_accepting: CancellationToken,
    /// Every connection task, so the drain can wait for them.
    tracker: TaskTracker,
    /// Wakes the gateway when a watched file changes.
    watcher: FileWatcher,
    /// The config file and every credential file it names.
    watched_files: Vec<PathBuf>,
    /// Contents digest of the files the running state was built from.
    inputs: u64,
    /// Contents digest of the trust files (CAs, trust domains, CRLs) of the running
    /// state; `None` before the first apply. A reload that changes it re-checks live
    /// connections.
    trust: Option<u64>,
    /// Latest reload outcome.
    status: Option<ReloadStatus>,
    /// What the admin port shows.
    admin: Arc<AdminState>,
    /// Upstream endpoint health, kept across reloads.
    endpoints: Arc<Registry>,
    /// The active health checks of the table in force.
    health: HealthChecks,
    /// The HTTP ports' settings as loaded at start (they are not rebound on reload).
    http_ports: HttpPorts,
    /// Stops the admin port, after the drain, so probes see "not ready" meanwhile.
    admin_stop: CancellationToken,
    /// The HTTP ports' actual addresses (port 0 resolved), for `/config_dump`.
    http_bound: report::HttpAddresses,
    /// OTLP export, flushed at stop.
    otel: Option<Otel>,
    /// How long the listeners keep accepting after shutdown begins.
    drain_delay: Duration,
}

impl Gateway {
    async fn start(options: &Options, changes: mpsc::Sender<Change>) -> Result<Gateway, StartError> {
        let role = options.role;
        let config = Config::load(&options.config_path, role)?;
        let otel = match &config.telemetry.otlp_endpoint {
            Some(endpoint) => {
                let service = config.telemetry.service_name.clone().unwrap_or_else(|| format!("strait-{}", role.name()));
                let otel = Otel::start(endpoint, &service, config.telemetry.metrics_interval)
                    .map_err(|reason| StartError::Setup { what: "OpenTelemetry export", reason })?;
                tracing::info!(%endpoint, %service, "exporting a span per connection and the metrics over OTLP/HTTP");
                Some(otel)
            }
            None => None,
        };
        let metrics = Arc::new(Metrics::new(otel.as_ref().map(|o| &o.meter)));
        let workload = crate::metrics::Workload::from(&config.telemetry, |var| std::env::var(var).ok());
        let recorder = Arc::new(Recorder { metrics: metrics.clone(), tracer: otel.as_ref().map(|o| o.tracer.clone()), workload });
        let inputs = watch::fingerprint(&config.watched_files());
        report::insecure_settings(&config, role);
        let endpoints = Arc::new(Registry::new(metrics.clone()));
        let table = RouteTable::build_with(&config, &endpoints)?;
        let watcher = FileWatcher::new(changes).map_err(|e| StartError::Setup { what: "file watcher", reason: e.to_string() })?;
        let stop_accepting = CancellationToken::new();
        let mut gateway = Gateway {
            role,
            config_path: options.config_path.clone(),
            context: Arc::new(Context {
                table: ArcSwap::from_pointee(RouteTable { listeners: Vec::new(), credentials: Vec::new() }),
                resolver: Arc::new(Resolver::new(&config.resolver)?),
                role,
                recorder,
                force_close: CancellationToken::new(),
                draining: stop_accepting.clone(),
                drain_timeout: ArcSwap::from_pointee(config.process.drain_timeout),
                live: Arc::default(),
                limits: crate::limits::Limiters::default(),
                overload: Arc::default(),
            }),
            listeners: BTreeMap::new(),
            bound_addresses: Arc::default(),
            stop_accepting,
            tracker: TaskTracker::new(),
            watcher,
            watched_files: Vec::new(),
            inputs: 0,
            trust: None,
            status: None,
            admin: Arc::new(AdminState::new(metrics, options.log.clone())),
            endpoints: endpoints.clone(),
            health: HealthChecks::new(CancellationToken::new()),
            http_ports: HttpPorts {
                admin: config.admin.enabled,
                admin_address: config.admin.address,
                admin_remote: config.admin.allow_remote,
                health: config.health.enabled.then_some(config.health.address),
                metrics: config.metrics.enabled.then_some(config.metrics.address),
            },
            admin_stop: CancellationToken::new(),
            http_bound: report::HttpAddresses::default(),
            otel,
            drain_delay: config.process.drain_delay,
        };
        if config.admin.enabled && !config.admin.address.ip().is_loopback() {
            tracing::warn!(address = %config.admin.address, "INSECURE: admin.allow_remote: the admin port (configuration, log level) is reachable from other hosts");
        }
        let _ = gateway.admin.endpoints.set(endpoints);
        gateway.apply(config, table, inputs).await?;
        Ok(gateway)
    }

    /// Serves reload requests and file changes until `shutdown`, then drains.
    async fn serve(
        mut self,
        shutdown: CancellationToken,
        mut changes: mpsc::Receiver<Change>,
        mut reloads: mpsc::Receiver<(&'static str, oneshot::Sender<Result<(), String>>)>,
    ) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some((trigger, done)) = reloads.recv() => {
                    let result = self.reload(trigger).await;
                    let _ = done.send(result);
                }
                Some(change) = changes.recv() => {
                    if change == Change::Settling {
                        settle(&mut changes).await;
                    }
                    while changes.try_recv().is_ok() {}
                    let _ = self.reload("file change").await;
                }
            }
        }
        self.drain().await;
    }

    /// Rebuilds `/config_dump`, with the effective configuration when `config` is given.
    fn refresh_dump(&self, config: Option<&Config>) {
        let table = self.context.table.load();
        let listeners = self.bound_addresses.load();
        let inputs = report::DumpInputs { config, table: &table, listeners: &listeners, http: self.http_bound, reload: self.status.as_ref() };
        let dump = report::config_dump(&self.admin.config_dump.load(), inputs);
        self.admin.config_dump.store(Arc::new(dump));
    }

    /// Stops accepting everywhere at once, waits for open connections up to the drain
    /// timeout, then cuts whatever is still open (each is logged and counted `drained`).
    async fn drain(self) {
        self.admin.ready.store(false, Ordering::Relaxed);
        self.health.stop();
        if !self.drain_delay.is_zero() {
            // Kubernetes removes the pod from its endpoints after readiness fails, not at
            // once: whatever it still sends meanwhile is served.
            tracing::info!(delay = ?self.drain_delay, "shutting down: not ready; still accepting for the drain delay");
            tokio::time::sleep(self.drain_delay).await;
        }
        let drain_timeout = **self.context.drain_timeout.load();
        tracing::info!(open = self.tracker.len(), timeout = ?drain_timeout, "shutting down: no new connections; draining open ones");
        self.stop_accepting.cancel();
        self.tracker.close();
        if tokio::time::timeout(drain_timeout, self.tracker.wait()).await.is_err() {
            tracing::warn!(open = self.tracker.len(), "drain timeout reached; closing the remaining connections");
            self.context.force_close.cancel();
            if tokio::time::timeout(CUT_GRACE, self.tracker.wait()).await.is_err() {
                tracing::error!(open = self.tracker.len(), "connections still open after being cut; exiting anyway");
            }
        } else {
            tracing::info!("drained; exiting");
        }
        self.admin_stop.cancel();
        if let Some(otel) = &self.otel {
            otel.shutdown();
        }
    }
}

/// Waits for the rest of an in-place update to land: [`SETTLE`] at most, or until a
/// kubelet commit arrives, which needs no more waiting.
async fn settle(changes: &mut mpsc::Receiver<Change>) {
    let committed = async {
        while let Some(change) = changes.recv().await {
            if change == Change::Committed {
                return;
            }
        }
        std::future::pending::<()>().await;
    };
    let _ = tokio::time::timeout(SETTLE, committed).await;
}
