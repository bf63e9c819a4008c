//! A running gateway: binds every listener, serves, reloads on change, drains on stop.
//!
//! The configuration and every credential it names are re-read on SIGHUP and whenever
//! one of their files changes. A reload builds a whole new [`RouteTable`] first; only if
//! every file loads is it swapped in, so a broken or half-written update leaves the
//! running state untouched. Connections already open keep the snapshot they started
//! with; listeners added by the new config bind, removed ones stop accepting while their
//! connections drain.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use std::sync::atomic::Ordering;

use crate::admin::{self, AdminState};
use crate::config::{AdminSettings, Config, PeerAuth, Role, TlsMode};
use crate::connection::Context;
use crate::listener::{AcceptLoop, ConnectionLimit};
use crate::resolve::Resolver;
use crate::route::{RouteTable, Routing};
use crate::watch::{self, FileWatcher};

/// How long a burst of file events is allowed to settle before reloading.
const SETTLE: Duration = Duration::from_millis(300);

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
    Bind { name: String, address: SocketAddr, source: std::io::Error },
    /// Signal handlers or the file watcher could not be installed.
    #[error("cannot set up {what}: {reason}")]
    Setup { what: &'static str, reason: String },
}

/// The outcome of the latest reload attempt, kept for operators (and later metrics).
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

/// A bound listener, its connection limit and the token that stops its accept loop.
struct Bound {
    address: SocketAddr,
    stop: CancellationToken,
    limit: Arc<ConnectionLimit>,
}

/// The running process: what a reload changes and what shutdown stops.
pub struct Gateway {
    role: Role,
    config_path: PathBuf,
    context: Arc<Context>,
    listeners: HashMap<String, Bound>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    drain_timeout: Duration,
    cert_warning_window: Duration,
    watcher: FileWatcher,
    /// The config file and every credential file it names.
    watched_files: Vec<PathBuf>,
    /// Contents digest of the files the running state was built from.
    inputs: u64,
    /// Latest reload outcome.
    pub status: Arc<Mutex<Option<ReloadStatus>>>,
    /// What the admin port shows.
    admin: Arc<AdminState>,
    /// The admin port's settings as loaded at start (it is not rebound on reload).
    admin_settings: AdminSettings,
    /// Stops the admin port, after the drain, so probes see "not ready" meanwhile.
    admin_stop: CancellationToken,
    /// The admin port's actual address (port 0 resolved), for `/config_dump`.
    admin_bound: Option<SocketAddr>,
}

/// Runs the gateway from `config_path` until SIGTERM or SIGINT, then drains.
/// `admin_address` overrides the config's admin address.
pub async fn run(config_path: PathBuf, role: Role, admin_address: Option<SocketAddr>) -> Result<(), StartError> {
    let setup = |what| move |e: std::io::Error| StartError::Setup { what, reason: e.to_string() };
    let mut term = signal(SignalKind::terminate()).map_err(setup("SIGTERM handler"))?;
    let mut hup = signal(SignalKind::hangup()).map_err(setup("SIGHUP handler"))?;
    let (changes_tx, mut changes) = mpsc::channel(1);
    let mut gateway = Gateway::start(config_path, role, changes_tx).await?;
    if gateway.admin_settings.enabled {
        let address = admin_address.unwrap_or(gateway.admin_settings.address);
        let bound = admin::serve(address, gateway.admin.clone(), gateway.admin_stop.clone()).await.map_err(|source| StartError::Bind {
            name: "admin".into(),
            address,
            source,
        })?;
        tracing::info!(address = %bound, "admin listening");
        gateway.admin_bound = Some(bound);
        gateway.refresh_dump(None);
    }
    gateway.admin.ready.store(true, Ordering::Relaxed);
    tracing::info!(role = role.name(), "ready");
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = hup.recv() => gateway.reload("SIGHUP").await,
            Some(()) = changes.recv() => {
                // Let the rest of a Secret update (several files, a symlink swap) land.
                tokio::time::sleep(SETTLE).await;
                while changes.try_recv().is_ok() {}
                gateway.reload("file change").await;
            }
        }
    }
    gateway.drain().await;
    Ok(())
}

impl Gateway {
    async fn start(config_path: PathBuf, role: Role, changes: mpsc::Sender<()>) -> Result<Gateway, StartError> {
        let config = Config::load(&config_path, role)?;
        if let Some(endpoint) = &config.telemetry.otlp_endpoint {
            let service = config.telemetry.service_name.clone().unwrap_or_else(|| format!("strait-{}", role.name()));
            crate::otel::init(endpoint, &service, config.telemetry.metrics_interval)
                .map_err(|reason| StartError::Setup { what: "OpenTelemetry export", reason })?;
            tracing::info!(%endpoint, %service, "exporting a span per connection and the metrics over OTLP/HTTP");
        }
        let inputs = watch::fingerprint(&config.watched_files());
        warn_about_insecure_settings(&config, role);
        let table = RouteTable::build(&config)?;
        let watcher = FileWatcher::new(changes).map_err(|e| StartError::Setup { what: "file watcher", reason: e.to_string() })?;
        let mut gateway = Gateway {
            role,
            config_path,
            context: Arc::new(Context {
                table: ArcSwap::from_pointee(RouteTable { listeners: Vec::new(), credentials: Vec::new() }),
                resolver: Resolver::new(&config.resolver)?,
                role,
            }),
            listeners: HashMap::new(),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            drain_timeout: config.process.drain_timeout,
            cert_warning_window: config.process.cert_warning_window,
            watcher,
            watched_files: Vec::new(),
            inputs: 0,
            status: Arc::new(Mutex::new(None)),
            admin: Arc::default(),
            admin_settings: AdminSettings::default(),
            admin_stop: CancellationToken::new(),
            admin_bound: None,
        };
        gateway.admin_settings = AdminSettings { address: config.admin.address, enabled: config.admin.enabled };
        gateway.apply(config, table, inputs).await?;
        Ok(gateway)
    }

    /// Re-reads everything; on any error logs it and keeps the running state. A file
    /// event whose files hold the same bytes as last time changes nothing.
    pub async fn reload(&mut self, trigger: &'static str) {
        if trigger == "file change" && watch::fingerprint(&self.watched_files) == self.inputs {
            tracing::debug!("watched files changed but their contents did not; nothing to reload");
            return;
        }
        let result = match Config::load(&self.config_path, self.role) {
            Ok(config) => {
                let inputs = watch::fingerprint(&config.watched_files());
                // Watch what the new config names even if it does not load yet: a Secret
                // it points to may still be on its way, and its arrival must retry.
                self.watcher.watch_files(&config.watched_files());
                match RouteTable::build(&config) {
                    Ok(table) => {
                        warn_about_insecure_settings(&config, self.role);
                        self.apply(config, table, inputs).await
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        };
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        let previous = status.take();
        let (succeeded, failed) = previous.map_or((0, 0), |s| (s.succeeded, s.failed));
        let result = result.map_err(|e| e.to_string());
        crate::metrics::get().reloaded(result.is_ok());
        match &result {
            Ok(()) => tracing::info!(trigger, "configuration and credentials reloaded"),
            Err(e) => tracing::error!(trigger, error = %e, "reload refused; the previous configuration and credentials stay in use"),
        }
        *status = Some(ReloadStatus {
            at: SystemTime::now(),
            trigger,
            succeeded: succeeded + u64::from(result.is_ok()),
            failed: failed + u64::from(result.is_err()),
            result,
        });
        drop(status);
        self.refresh_dump(None);
    }

    /// Binds what is new, swaps the table in, stops what is gone.
    async fn apply(&mut self, config: Config, table: RouteTable, inputs: u64) -> Result<(), StartError> {
        // Bind new (or moved) listeners before anything changes, so a bind failure
        // leaves the running state whole.
        let mut fresh = Vec::new();
        for plan in &table.listeners {
            if self.listeners.get(&plan.name).is_some_and(|b| b.address == plan.address) {
                continue;
            }
            let socket = TcpListener::bind(plan.address).await.map_err(|source| StartError::Bind { name: plan.name.clone(), address: plan.address, source })?;
            fresh.push((plan.clone(), socket));
        }
        self.log_credentials(&table);
        let names: Vec<(String, SocketAddr)> = table.listeners.iter().map(|p| (p.name.clone(), p.address)).collect();
        for plan in &table.listeners {
            if let Some(bound) = self.listeners.get(&plan.name) {
                bound.limit.set(plan.max_connections);
            }
        }
        self.context.table.store(Arc::new(table));
        self.listeners.retain(|name, bound| {
            let keep = names.iter().any(|(n, a)| n == name && *a == bound.address);
            if !keep {
                tracing::info!(listener = %name, address = %bound.address, "listener removed: no longer accepting; open connections drain");
                bound.stop.cancel();
            }
            keep
        });
        for (plan, socket) in fresh {
            let kind = match &plan.routing {
                Routing::Plain(route) => format!("plain -> route {}", route.name),
                Routing::Tls(t) => format!("tls, {} SNI hosts", t.by_sni.len()),
            };
            tracing::info!(listener = %plan.name, address = %socket.local_addr().unwrap_or(plan.address), %kind, "listening");
            let stop = self.shutdown.child_token();
            let limit = Arc::new(ConnectionLimit::new(plan.max_connections));
            tokio::spawn(
                AcceptLoop {
                    socket,
                    name: Arc::from(plan.name.as_str()),
                    context: self.context.clone(),
                    limit: limit.clone(),
                    stop: stop.clone(),
                    tracker: self.tracker.clone(),
                }
                .run(),
            );
            let bound = Bound { address: plan.address, stop, limit };
            self.listeners.insert(plan.name.clone(), bound);
        }
        self.watched_files = config.watched_files();
        self.inputs = inputs;
        self.refresh_dump(Some(&config));
        self.watcher.watch_files(&self.watched_files);
        self.drain_timeout = config.process.drain_timeout;
        self.cert_warning_window = config.process.cert_warning_window;
        Ok(())
    }

    /// Rebuilds `/config_dump`: the effective configuration (when `config` is given),
    /// every loaded certificate (paths, subject, serial, not-after; never keys) and the
    /// last reload.
    fn refresh_dump(&self, config: Option<&Config>) {
        let mut dump = self.admin.config_dump.load().as_ref().clone();
        if !dump.is_object() {
            dump = serde_json::json!({});
        }
        if let Some(config) = config {
            dump["config"] = serde_json::to_value(config).unwrap_or_default();
        }
        if let Some(bound) = self.admin_bound {
            dump["admin_address"] = serde_json::json!(bound.to_string());
        }
        let table = self.context.table.load();
        dump["credentials"] = table
            .credentials
            .iter()
            .map(|c| {
                serde_json::json!({
                    "cert_file": c.cert_file,
                    "subject": c.subject,
                    "sans": c.sans,
                    "serial": c.serial,
                    "not_after": humantime::format_rfc3339_seconds(c.not_after).to_string(),
                    "loaded_at": humantime::format_rfc3339_seconds(c.loaded_at).to_string(),
                })
            })
            .collect();
        if let Some(status) = self.status.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
            dump["last_reload"] = serde_json::json!({
                "at": humantime::format_rfc3339_seconds(status.at).to_string(),
                "trigger": status.trigger,
                "result": match &status.result { Ok(()) => "success".to_owned(), Err(e) => format!("failure: {e}") },
                "succeeded": status.succeeded,
                "failed": status.failed,
            });
        }
        self.admin.config_dump.store(Arc::new(dump));
    }

    fn log_credentials(&self, table: &RouteTable) {
        let now = SystemTime::now();
        let expiries: Vec<_> = table
            .credentials
            .iter()
            .map(|c| {
                let labels = crate::metrics::CredentialLabels { file: c.cert_file.display().to_string(), serial: c.serial.clone() };
                (labels, c.not_after.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64())
            })
            .collect();
        crate::metrics::get().certificates(&expiries);
        for credential in &table.credentials {
            let left = credential.not_after.duration_since(now).unwrap_or_default();
            let expires = humantime::format_rfc3339_seconds(credential.not_after);
            if left < self.cert_warning_window {
                tracing::warn!(file = %credential.cert_file.display(), subject = %credential.subject, serial = %credential.serial, %expires, "certificate expires within the warning window ({} days left): renew it", left.as_secs() / 86400);
            } else {
                tracing::info!(file = %credential.cert_file.display(), subject = %credential.subject, serial = %credential.serial, %expires, "certificate loaded");
            }
        }
    }

    /// Stops accepting everywhere at once, then waits for open connections up to the
    /// drain timeout; whatever is still open after it is closed when the runtime ends.
    async fn drain(self) {
        self.admin.ready.store(false, Ordering::Relaxed);
        tracing::info!(open = self.tracker.len(), timeout = ?self.drain_timeout, "shutting down: no new connections; draining open ones");
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(self.drain_timeout, self.tracker.wait()).await.is_err() {
            tracing::warn!(open = self.tracker.len(), "drain timeout reached; closing the remaining connections");
        } else {
            tracing::info!("drained; exiting");
        }
        self.admin_stop.cancel();
        crate::otel::shutdown();
    }
}

/// Settings that weaken security are allowed only when explicit, and then said loudly.
fn warn_about_insecure_settings(config: &Config, role: Role) {
    for route in config.routes.iter().map(|r| r.get_ref()) {
        if role == Role::Egress && route.upstream_tls.is_none() {
            tracing::warn!(route = %route.name, upstream = %route.upstream, "INSECURE: upstream_tls.mode = \"disable\": this route sends plaintext off the host");
        }
    }
    for listener in config.listeners.iter().map(|l| l.get_ref()) {
        if listener.tls().map(|t| t.mode) == Some(TlsMode::Simple) {
            tracing::warn!(listener = %listener.name, "tls.mode = \"simple\": clients are not authenticated on this listener");
        }
        if listener.tls().is_some() && listener.peer_auth != PeerAuth::Strict {
            tracing::warn!(listener = %listener.name, peer_auth = ?listener.peer_auth, "INSECURE: this TLS listener also accepts plaintext clients (they take default_route)");
        }
    }
}
