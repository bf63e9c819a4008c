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

/// Resolves once the peer has closed (EOF or reset) while nothing it sent is waiting to
/// be read; never consumes a byte. Bytes waiting mean the peer has spoken (a request is
/// queued behind them): a close after them cannot be seen without reading them, so this
/// then never resolves and the caller's other branch decides.
pub async fn peer_closed(tcp: &TcpStream) {
    let mut probe = [0u8; 1];
    match tcp.peek(&mut probe).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::peer_closed;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        (client, listener.accept().await.unwrap().0)
    }

    #[tokio::test]
    async fn a_close_is_seen_without_reading_and_spoken_bytes_are_not_a_close() {
        let (client, accepted) = pair().await;
        let watching = tokio::time::timeout(Duration::from_millis(50), peer_closed(&accepted)).await;
        assert!(watching.is_err(), "an open, silent client is not gone");
        drop(client);
        tokio::time::timeout(Duration::from_secs(5), peer_closed(&accepted)).await.expect("the close is seen");

        let (mut client, accepted) = pair().await;
        client.write_all(b"request").await.unwrap();
        drop(client);
        let spoken = tokio::time::timeout(Duration::from_millis(200), peer_closed(&accepted)).await;
        assert!(spoken.is_err(), "bytes waiting are data, not a close");
        let mut kept = [0u8; 7];
        assert_eq!(accepted.peek(&mut kept).await.unwrap(), 7, "nothing was consumed");
        assert_eq!(&kept, b"request");
    }
}
