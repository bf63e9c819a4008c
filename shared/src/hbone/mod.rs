//! HBONE, Istio ambient's transport: TCP connections carried as HTTP/2 `CONNECT` streams
//! inside long-lived mutual-TLS connections (port 15008), so the cross-cluster hop pays
//! one handshake per pool connection instead of one per client connection.
//!
//! [`server`] is the ingress side's HTTP/2 (an HBONE listener's handshake and its
//! `CONNECT` requests, each handed to the pipeline, which routes it by `:authority` and
//! relays it like a connection), [`pool`] the egress side (a route's pooled connections
//! and one stream per client connection), [`stream`] the adapter that lets the relay
//! pump an HTTP/2 stream like a socket. Nothing here imports the pipeline
//! (`connection`, `route`, `upstream`): they use this. The HTTP/2 is the `h2`
//! crate's; the conventions are Istio's: ALPN `h2`, `:authority` = the destination's
//! `host:port`, the peer's identity from its (SPIFFE) certificate.

pub mod pool;
pub mod server;
pub mod stream;

pub use pool::{Connected, Pool};
pub use stream::H2Stream;

/// ALPN protocol id both sides offer and require.
pub const ALPN_H2: &[u8] = b"h2";

/// Initial flow-control window of each stream: large enough that one stream keeps a
/// cross-cluster link busy (the window must cover bandwidth x round trip), where
/// HTTP/2's 64 KiB default would cap a 10 ms link at about 6 MB/s.
pub const STREAM_WINDOW: u32 = 4 * 1024 * 1024;

/// Initial flow-control window of each connection, shared by its streams.
pub const CONNECTION_WINDOW: u32 = 16 * 1024 * 1024;

/// Largest DATA frame we accept: fewer frames (and frame headers to parse) per
/// megabyte than HTTP/2's 16 KiB minimum.
pub const MAX_FRAME_SIZE: u32 = 64 * 1024;

/// Streams at once on one accepted HBONE connection (`SETTINGS_MAX_CONCURRENT_STREAMS`).
pub const SERVER_MAX_STREAMS: u32 = 1024;
