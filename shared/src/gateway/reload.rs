//! Reloading: a new [`RouteTable`] is built whole first; only if every file loads is it
//! swapped in, so a broken or half-written update leaves the running state untouched.
//! Listeners added by the new config bind, removed ones stop accepting while their
//! connections drain, and limits change in place.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use tokio::net::TcpListener;

use super::{report, Bound, Gateway, ReloadStatus, StartError};
use crate::config::Config;
use crate::listener::{AcceptLoop, ConnectionLimit};
use crate::route::{ListenerPlan, RouteTable, Routing};
use crate::watch;

impl Gateway {
    /// Re-reads everything; on any error logs it and keeps the running state. A file
    /// event whose files hold the same bytes as last time changes nothing.
    pub(super) async fn reload(&mut self, trigger: &'static str) -> Result<(), String> {
        if trigger == "file change" && watch::fingerprint(&self.watched_files) == self.inputs {
            tracing::debug!("watched files changed but their contents did not; nothing to reload");
            return Ok(());
        }
        let result = self.load_and_apply().await.map_err(|e| e.to_string());
        self.context.recorder.metrics.reloaded(result.is_ok());
        match &result {
            Ok(()) => tracing::info!(trigger, "configuration and credentials reloaded"),
            Err(e) => tracing::error!(trigger, error = %e, "reload refused; the previous configuration and credentials stay in use"),
        }
        let (succeeded, failed) = self.status.as_ref().map_or((0, 0), |s| (s.succeeded, s.failed));
        self.status = Some(ReloadStatus {
            at: SystemTime::now(),
            trigger,
            succeeded: succeeded + u64::from(result.is_ok()),
            failed: failed + u64::from(result.is_err()),
            result: result.clone(),
        });
        self.refresh_dump(None);
        result
    }

    async fn load_and_apply(&mut self) -> Result<(), StartError> {
        let config = Config::load(&self.config_path, self.role)?;
        let inputs = watch::fingerprint(&config.watched_files());
        // Watch what the new config names even if it does not load yet: a Secret it
        // points to may still be on its way, and its arrival must retry.
        self.watcher.watch_files(&config.watched_files());
        let table = RouteTable::build_with(&config, &self.endpoints)?;
        report::insecure_settings(&config, self.role);
        self.apply(config, table, inputs).await
    }

    /// Binds what is new, swaps the table in, stops what is gone.
    pub(super) async fn apply(&mut self, config: Config, table: RouteTable, inputs: u64) -> Result<(), StartError> {
        // Bind new (or moved) listeners before anything changes, so a bind failure
        // leaves the running state whole.
        let mut fresh = Vec::new();
        for plan in &table.listeners {
            if self.listeners.get(&plan.name).is_some_and(|b| b.configured == plan.address) {
                continue;
            }
            let socket = TcpListener::bind(plan.address).await.map_err(|source| StartError::Bind { name: plan.name.clone(), address: plan.address, source })?;
            fresh.push((plan.clone(), socket));
        }
        report::credentials(&table, &self.context.recorder.metrics, config.process.cert_warning_window);
        for plan in &table.listeners {
            if let Some(bound) = self.listeners.get(&plan.name) {
                bound.limit.set(plan.max_connections);
            }
            self.context.limits.configure(&plan.name, &plan.limits);
        }
        self.context.limits.retain(&table.listeners.iter().map(|p| p.name.as_str()).collect::<Vec<_>>());
        let wanted: Vec<(String, SocketAddr)> = table.listeners.iter().map(|p| (p.name.clone(), p.address)).collect();
        let table = Arc::new(table);
        self.context.table.store(table.clone());
        self.health.restart(&table, &self.context.resolver);
        let in_force = config.routes.iter().map(|r| r.get_ref()).map(|r| (r.name.as_str(), r.endpoints.iter().map(|e| e.address.to_string()).collect()));
        self.endpoints.retain(&in_force.collect());
        let trust = crate::recheck::trust_fingerprint(&config);
        if self.trust.replace(trust).is_some_and(|before| before != trust) {
            self.recheck_live_connections(table).await;
        }
        self.listeners.retain(|name, bound| {
            let keep = wanted.iter().any(|(n, a)| n == name && *a == bound.configured);
            if !keep {
                tracing::info!(listener = %name, address = %bound.configured, "listener removed: no longer accepting; open connections drain");
                bound.stop.cancel();
            }
            keep
        });
        let mut addresses = self.bound_addresses.load().as_ref().clone();
        addresses.retain(|name, _| self.listeners.contains_key(name));
        for (plan, socket) in fresh {
            let address = socket.local_addr().unwrap_or(plan.address);
            addresses.insert(plan.name.clone(), address);
            let bound = self.spawn_accept_loop(&plan, socket, address);
            self.listeners.insert(plan.name.clone(), bound);
        }
        self.bound_addresses.store(Arc::new(addresses));
        self.watched_files = config.watched_files();
        self.inputs = inputs;
        self.watcher.watch_files(&self.watched_files);
        self.context.drain_timeout.store(Arc::new(config.process.drain_timeout));
        self.drain_delay = config.process.drain_delay;
        self.refresh_dump(Some(&config));
        Ok(())
    }

    /// The trust changed: verifies every open TLS connection's peer again under the new
    /// table, closing (and counting) those that no longer verify.
    async fn recheck_live_connections(&self, table: Arc<RouteTable>) {
        let live = self.context.live.clone();
        let open = live.len();
        let closed = match tokio::task::spawn_blocking(move || live.recheck(&table)).await {
            Ok(closed) => closed,
            Err(e) => {
                tracing::error!(error = %e, "re-checking open connections after the trust change failed");
                return;
            }
        };
        for c in &closed {
            self.context.recorder.metrics.trust_change_closed.add(&crate::metrics::ListenerLabels { listener: c.listener.to_string() }, 1);
        }
        tracing::info!(open, closed = closed.len(), "trust changed: open TLS connections re-verified under the new CA bundles and CRLs");
    }

    fn spawn_accept_loop(&self, plan: &ListenerPlan, socket: TcpListener, address: SocketAddr) -> Bound {
        let kind = match &plan.routing {
            Routing::Plain(route) => format!("plain -> route {}", route.name),
            Routing::Tls(t) => format!("tls, {} SNI hosts, {} wildcards", t.by_sni.len(), t.wildcards.len()),
            Routing::Hbone(h) => format!("hbone, {} authority hosts", h.by_host.len()),
        };
        tracing::info!(listener = %plan.name, %address, %kind, max_connections = plan.max_connections, "listening");
        if !plan.recheck_on_trust_change {
            tracing::info!(listener = %plan.name, "recheck_on_trust_change = false: after a trust change, open connections keep the trust they were accepted under");
        }
        let stop = self.stop_accepting.child_token();
        let limit = Arc::new(ConnectionLimit::new(plan.max_connections));
        let accept = AcceptLoop {
            socket,
            name: Arc::from(plan.name.as_str()),
            context: self.context.clone(),
            limit: limit.clone(),
            stop: stop.clone(),
            tracker: self.tracker.clone(),
            limits: self.context.limits.configure(&plan.name, &plan.limits),
        };
        tokio::spawn(accept.run());
        Bound { configured: plan.address, stop, limit }
    }
}
