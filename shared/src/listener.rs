//! The accept loop of one listener.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connection::{handle, Context};

/// Accepts on `socket` until `shutdown` fires, handing each connection to its own task
/// on `tracker` so shutdown can wait for them.
pub async fn accept_loop(
    socket: TcpListener,
    name: Arc<str>,
    context: Arc<Context>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => return,
            accepted = socket.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                tracker.spawn(handle(tcp, peer, name.clone(), context.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(listener = %name, error = %e, "accept failed; retrying in 100ms");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
