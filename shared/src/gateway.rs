//! A running gateway: binds every listener, serves until SIGTERM/SIGINT, then drains.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, Role, TlsMode};
use crate::connection::Context;
use crate::listener::accept_loop;
use crate::resolve::Resolver;
use crate::route::RouteTable;

/// How long open connections may run on after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Why the gateway could not start.
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
        name: String,
        address: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Loads everything the config names, exactly as a start would, without binding.
pub fn check(config: &Config) -> Result<RouteTable, StartError> {
    Ok(RouteTable::build(config)?)
}

/// Runs the gateway until a shutdown signal, then lets open connections finish.
pub async fn run(config: Config, role: Role) -> Result<(), StartError> {
    warn_about_insecure_settings(&config, role);
    let table = RouteTable::build(&config)?;
    let context = Arc::new(Context {
        table: ArcSwap::from_pointee(table),
        resolver: Resolver::new(&config.resolver)?,
    });
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let plans = context.table.load_full();
    let mut loops = Vec::new();
    for plan in &plans.listeners {
        let socket = TcpListener::bind(plan.address).await.map_err(|source| StartError::Bind {
            name: plan.name.clone(),
            address: plan.address,
            source,
        })?;
        let kind = match &plan.routing {
            crate::route::Routing::Plain(route) => format!("plain -> route {}", route.name),
            crate::route::Routing::Tls(t) => format!("tls, {} SNI hosts", t.by_sni.len()),
        };
        tracing::info!(listener = %plan.name, address = %socket.local_addr().unwrap_or(plan.address), %kind, "listening");
        loops.push(tokio::spawn(accept_loop(socket, Arc::from(plan.name.as_str()), context.clone(), shutdown.clone(), tracker.clone())));
    }
    tracing::info!(role = role.name(), "ready");
    wait_for_signal().await;
    tracing::info!(open = tracker.len(), "shutting down: no new connections; draining open ones for up to {DRAIN_TIMEOUT:?}");
    shutdown.cancel();
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait()).await.is_err() {
        tracing::warn!(open = tracker.len(), "drain timeout reached; closing the remaining connections");
    }
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Settings that weaken security are allowed only when explicit, and then said loudly.
fn warn_about_insecure_settings(config: &Config, role: Role) {
    for route in config.routes.iter().map(|r| r.get_ref()) {
        let mode = route.upstream_tls.as_ref().and_then(|t| t.mode);
        if role == Role::Egress && mode == Some(TlsMode::Disable) {
            tracing::warn!(route = %route.name, upstream = %route.upstream, "INSECURE: upstream_tls.mode = \"disable\": this route sends plaintext off the host");
        }
    }
    for listener in config.listeners.iter().map(|l| l.get_ref()) {
        if listener.tls.as_ref().and_then(|t| t.mode) == Some(TlsMode::Simple) {
            tracing::warn!(listener = %listener.name, "tls.mode = \"simple\": clients are not authenticated on this listener");
        }
    }
}
