//! Active health checks: one task per endpoint of every route that asks for them,
//! probing each address the endpoint resolves to every `interval` (a TCP connect, or a
//! full origination handshake with the route's credential and verification) and
//! feeding the result into the endpoint's state ([`crate::endpoints`]).
//!
//! The tasks of one route table form a generation under one cancellation token: a
//! reload cancels it and starts the next over the new table (the address states, kept in
//! the registry, carry over), and shutdown cancels it for good.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;
use tokio::time::{timeout, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use crate::config::{HealthCheck, HealthCheckKind};
use crate::resolve::Resolver;
use crate::route::{Route, RouteTable, Routing};

/// The running generation of health-check tasks.
pub struct HealthChecks {
    /// Cancelled when the gateway stops: every generation is a child of it.
    stop: CancellationToken,
    /// The current generation's token.
    generation: CancellationToken,
}

impl HealthChecks {
    /// No tasks yet; every later generation stops with `stop`.
    pub fn new(stop: CancellationToken) -> HealthChecks {
        let generation = stop.child_token();
        HealthChecks { stop, generation }
    }

    /// Cancels the running probes and starts one task per endpoint of every route of
    /// `table` that has a `health_check`.
    pub fn restart(&mut self, table: &RouteTable, resolver: &Arc<Resolver>) {
        self.generation.cancel();
        self.generation = self.stop.child_token();
        for route in routes(table) {
            let Some(check) = route.endpoints.health_check else { continue };
            for index in 0..route.endpoints.endpoints.len() {
                let probe = Probe { route: route.clone(), index, check, resolver: resolver.clone() };
                tokio::spawn(probe.run(self.generation.clone()));
            }
        }
    }

    /// Stops every probe.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Every route of a table once (a route served at several listeners is one route).
pub fn routes(table: &RouteTable) -> Vec<Arc<Route>> {
    let mut seen = HashSet::new();
    let mut all = Vec::new();
    for plan in &table.listeners {
        let found: Vec<&Arc<Route>> = match &plan.routing {
            Routing::Plain(route) => vec![route],
            Routing::Tls(tls) => tls.by_sni.values().chain(tls.wildcards.iter().map(|(_, e)| e)).chain(tls.default.iter()).map(|e| &e.route).collect(),
            Routing::Hbone(hbone) => hbone.by_host.values().collect(),
        };
        for route in found {
            if seen.insert(route.name.clone()) {
                all.push(route.clone());
            }
        }
    }
    all
}

/// The probes of one endpoint.
struct Probe {
    route: Arc<Route>,
    index: usize,
    check: HealthCheck,
    resolver: Arc<Resolver>,
}

impl Probe {
    async fn run(self, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(self.check.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            tokio::select! {
                () = stop.cancelled() => return,
                () = self.round() => {}
            }
        }
    }

    /// Resolves the endpoint and probes every address at once.
    async fn round(&self) {
        let plan = &self.route.endpoints.endpoints[self.index];
        let address = &plan.endpoint.address;
        let addrs = match timeout(self.check.timeout, self.resolver.lookup(&address.host, address.port)).await {
            Ok(Ok(addrs)) => addrs,
            Ok(Err(e)) => return tracing::warn!(route = %self.route.name, endpoint = %plan.label, error = %e, "health check: the endpoint does not resolve"),
            Err(_) => return tracing::warn!(route = %self.route.name, endpoint = %plan.label, "health check: no DNS answer within the probe timeout"),
        };
        let state = &self.route.endpoints.state;
        state.resolved(&plan.label, &addrs);
        let mut probes = JoinSet::new();
        for addr in addrs {
            let (route, check) = (self.route.clone(), self.check);
            probes.spawn(async move {
                let started = Instant::now();
                let result = probe(&route, addr, &check).await;
                (addr, result, started.elapsed())
            });
        }
        while let Some(done) = probes.join_next().await {
            let Ok((addr, result, took)) = done else { continue };
            if let Err(reason) = &result {
                tracing::debug!(route = %self.route.name, endpoint = %plan.label, address = %addr, %reason, "health check probe failed");
            }
            state.probed(&plan.label, addr, result.is_ok(), took, &self.check);
        }
    }
}

/// One probe of `addr` within the check's timeout; the error says why it failed.
async fn probe(route: &Route, addr: SocketAddr, check: &HealthCheck) -> Result<(), String> {
    let attempt = async {
        let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
        match (check.kind, &route.origination) {
            (HealthCheckKind::Tcp, _) => Ok(()),
            (HealthCheckKind::Tls, Some(origination)) => {
                let mut tls = crate::upstream::handshake(origination, origination.server_name.clone(), tcp, check.timeout).await?;
                // A close_notify, so the peer logs a clean close rather than a reset.
                let _ = tls.shutdown().await;
                Ok(())
            }
            // Validation refuses a `tls` check on a plaintext route.
            (HealthCheckKind::Tls, None) => Err("the route has no origination TLS".into()),
        }
    };
    timeout(check.timeout, attempt).await.unwrap_or_else(|_| Err(format!("no answer within {:?}", check.timeout)))
}
