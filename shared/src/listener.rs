//! The accept loop of one listener, with its connection limit.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::{handle, tune_socket, Context};

/// How often, at most, a listener logs that it is shedding connections.
const SHED_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// One listener's accept loop and what it needs.
pub struct AcceptLoop {
    /// The bound socket.
    pub socket: TcpListener,
    /// Listener name, to find its plan in each snapshot.
    pub name: Arc<str>,
    /// Shared connection state.
    pub context: Arc<Context>,
    /// One permit per open connection; none left means new connections are closed.
    pub permits: Arc<Semaphore>,
    /// Stops this loop (and every loop on shutdown).
    pub stop: CancellationToken,
    /// Where connection tasks go, so shutdown can wait for them.
    pub tracker: TaskTracker,
}

impl AcceptLoop {
    /// Accepts until stopped. Beyond the connection limit a new connection is closed at
    /// once (never queued), and the shedding is logged at most once a second.
    pub async fn run(self) {
        let mut shed = 0u64;
        let mut last_shed_log: Option<Instant> = None;
        loop {
            let accepted = tokio::select! {
                _ = self.stop.cancelled() => return,
                accepted = self.socket.accept() => accepted,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(listener = %self.name, error = %e, "accept failed; retrying in 100ms");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Ok(permit) = self.permits.clone().try_acquire_owned() else {
                drop(tcp);
                shed += 1;
                crate::metrics::get().connection_shed(&self.name);
                if last_shed_log.is_none_or(|t| t.elapsed() >= SHED_LOG_INTERVAL) {
                    tracing::warn!(listener = %self.name, %peer, shed, "connection limit reached: closing new connections");
                    last_shed_log = Some(Instant::now());
                    shed = 0;
                }
                continue;
            };
            tune_socket(&tcp);
            let (name, context) = (self.name.clone(), self.context.clone());
            self.tracker.spawn(async move {
                handle(tcp, peer, name, context).await;
                drop(permit);
            });
        }
    }
}
