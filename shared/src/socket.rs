//! Socket options every proxied TCP connection gets, on either side.

use tokio::net::TcpStream;

use crate::config::TcpKeepalive;

/// No Nagle delay (the relay writes whole records and database packets), and keepalive
/// with a matching `TCP_USER_TIMEOUT`, so a peer behind a dead network is noticed within
/// [`TcpKeepalive::bound`] whether the connection is idle or has data in flight.
pub fn tune(tcp: &TcpStream, keepalive: &TcpKeepalive) {
    let _ = tcp.set_nodelay(true);
    let socket = socket2::SockRef::from(tcp);
    let probes = socket2::TcpKeepalive::new().with_time(keepalive.time).with_interval(keepalive.interval).with_retries(keepalive.probes);
    if let Err(e) = socket.set_tcp_keepalive(&probes) {
        tracing::debug!(error = %e, "cannot set TCP keepalive");
    }
    if let Err(e) = socket.set_tcp_user_timeout(Some(keepalive.bound())) {
        tracing::debug!(error = %e, "cannot set TCP_USER_TIMEOUT");
    }
}
