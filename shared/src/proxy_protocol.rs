//! The PROXY protocol (HAProxy's, versions 1 and 2): the real client address behind a
//! load balancer, read at a listener that trusts the load balancer, and written to an
//! upstream that wants it. Parsing and writing the headers is the `ppp` crate's; this
//! module frames a header off the socket (reading exactly its bytes, never the first
//! byte of what follows), decides trust, and adds the client's verified identity to a v2
//! header.
//!
//! The identity travels in a custom TLV, [`IDENTITY_TLV`] (`0xE0`, the first of the
//! range the spec leaves to applications): the UTF-8 name the access log shows (a
//! SPIFFE URI SAN, else a DNS SAN, else `CN=...`). `PP2_TYPE_SSL` is not used: its
//! `PP2_SUBTYPE_SSL_CN` carries a subject CN only, where mesh identities are URI SANs.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ipnet::IpNet;
use ppp::{v1, v2};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::timeout;

use crate::config::ProxyVersion;

/// The v2 TLV type that carries the client's verified identity.
pub const IDENTITY_TLV: u8 = 0xE0;

/// The v2 signature every binary header starts with.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// The longest v1 header the spec allows, CRLF included.
const V1_MAX: usize = 107;

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The TCP peer is not in the listener's trusted ranges.
    #[error("{0} is not a trusted PROXY protocol source (proxy_protocol.trusted)")]
    Untrusted(IpAddr),
    /// The connection did not start with a PROXY header.
    #[error("no PROXY protocol header: the connection starts with {0:02x?}")]
    Missing(Vec<u8>),
    /// A header that does not parse.
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(String),
    /// The header did not arrive in time.
    #[error("no complete PROXY protocol header within {0:?}")]
    Timeout(Duration),
    /// Reading failed (or the peer closed) before the header was complete.
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] io::Error),
}

/// Whether `ip` is in one of `ranges` (IPv4-mapped IPv6 addresses count as IPv4).
pub fn within(ranges: &[IpNet], ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    ranges.iter().any(|net| net.contains(&ip))
}

/// At a listener with `proxy_protocol`: refuses a peer outside `trusted`, then reads
/// its header within `limit`. The client address it names, or `None` for a `LOCAL` (v2)
/// or `UNKNOWN` (v1) header: the load balancer speaking for itself (a health check),
/// whose own address then stands.
pub async fn accept(stream: &mut (impl AsyncRead + Unpin), peer: SocketAddr, trusted: &[IpNet], limit: Duration) -> Result<Option<SocketAddr>, ProxyError> {
    if !within(trusted, peer.ip()) {
        return Err(ProxyError::Untrusted(peer.ip()));
    }
    let header = timeout(limit, read_header(stream)).await.map_err(|_| ProxyError::Timeout(limit))??;
    parse(&header)
}

/// Reads exactly one header's bytes: a v2 header by its length field, a v1 header up to
/// its CRLF.
async fn read_header(stream: &mut (impl AsyncRead + Unpin)) -> Result<Vec<u8>, ProxyError> {
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).await?;
    let mut header = first.to_vec();
    match first[0] {
        b'\r' => {
            let mut fixed = [0u8; 15];
            stream.read_exact(&mut fixed).await?;
            header.extend_from_slice(&fixed);
            if &header[..12] != V2_SIGNATURE {
                return Err(ProxyError::Missing(header));
            }
            let length = usize::from(u16::from_be_bytes([header[14], header[15]]));
            let mut rest = vec![0u8; length];
            stream.read_exact(&mut rest).await?;
            header.extend_from_slice(&rest);
        }
        b'P' => {
            while !header.ends_with(b"\r\n") {
                if header.len() >= V1_MAX {
                    return Err(ProxyError::Invalid(format!("a v1 header longer than {V1_MAX} bytes")));
                }
                stream.read_exact(&mut first).await?;
                header.push(first[0]);
            }
        }
        _ => return Err(ProxyError::Missing(header)),
    }
    Ok(header)
}

/// The client address of one complete header (see [`accept`]).
pub fn parse(header: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    if header.starts_with(V2_SIGNATURE) {
        let parsed = v2::Header::try_from(header).map_err(|e| ProxyError::Invalid(e.to_string()))?;
        if parsed.command == v2::Command::Local {
            return Ok(None);
        }
        return match parsed.addresses {
            v2::Addresses::IPv4(a) => Ok(Some(SocketAddr::from((a.source_address, a.source_port)))),
            v2::Addresses::IPv6(a) => Ok(Some(SocketAddr::from((a.source_address, a.source_port)))),
            v2::Addresses::Unspecified => Ok(None),
            v2::Addresses::Unix(_) => Err(ProxyError::Invalid("a unix-socket source names no client address".into())),
        };
    }
    let text = std::str::from_utf8(header).map_err(|_| ProxyError::Invalid("a v1 header that is not ASCII".into()))?;
    let parsed = v1::Header::try_from(text).map_err(|e| ProxyError::Invalid(e.to_string()))?;
    Ok(match parsed.addresses {
        v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        v1::Addresses::Unknown => None,
    })
}

/// The header a route writes to its upstream: `source` is the client, `destination`
/// the address it connected to here; v2 carries `identity` (when the client presented
/// one) in [`IDENTITY_TLV`].
pub fn header(version: ProxyVersion, source: SocketAddr, destination: SocketAddr, identity: Option<&str>) -> io::Result<Vec<u8>> {
    let (source, destination) = same_family(source, destination);
    match version {
        ProxyVersion::V1 => {
            let addresses = match (source, destination) {
                (SocketAddr::V4(s), SocketAddr::V4(d)) => v1::Addresses::new_tcp4(*s.ip(), *d.ip(), s.port(), d.port()),
                (SocketAddr::V6(s), SocketAddr::V6(d)) => v1::Addresses::new_tcp6(*s.ip(), *d.ip(), s.port(), d.port()),
                _ => v1::Addresses::Unknown,
            };
            Ok(addresses.to_string().into_bytes())
        }
        ProxyVersion::V2 => {
            let mut builder = v2::Builder::with_addresses(v2::Version::Two | v2::Command::Proxy, v2::Protocol::Stream, (source, destination));
            if let Some(identity) = identity {
                builder = builder.write_tlv(IDENTITY_TLV, identity.as_bytes())?;
            }
            builder.build()
        }
    }
}

/// Both addresses in one family (a v4 client on a dual-stack socket shows as
/// IPv4-mapped IPv6 on one side): canonical, or both mapped to IPv6 when they differ.
fn same_family(source: SocketAddr, destination: SocketAddr) -> (SocketAddr, SocketAddr) {
    let canonical = |a: SocketAddr| SocketAddr::new(a.ip().to_canonical(), a.port());
    let (s, d) = (canonical(source), canonical(destination));
    if s.is_ipv4() == d.is_ipv4() {
        return (s, d);
    }
    let v6 = |a: SocketAddr| match a.ip() {
        IpAddr::V4(ip) => SocketAddr::new(IpAddr::V6(ip.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    };
    (v6(s), v6(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    /// Writes `bytes` then `after` into a pipe and accepts a header from it; returns
    /// the result and what was left for the next stage.
    async fn accept_from(peer: &str, bytes: &[u8], after: &[u8]) -> (Result<Option<SocketAddr>, ProxyError>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(bytes).await.unwrap();
        client.write_all(after).await.unwrap();
        drop(client);
        let trusted = [crate::config::proxy::range("127.0.0.0/8").unwrap()];
        let result = accept(&mut server, addr(peer), &trusted, Duration::from_secs(1)).await;
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        (result, rest)
    }

    #[tokio::test]
    async fn both_versions_round_trip_and_leave_the_stream_untouched() {
        let (client, local) = (addr("192.0.2.10:51000"), addr("127.0.0.1:3306"));
        for version in [ProxyVersion::V1, ProxyVersion::V2] {
            let bytes = header(version, client, local, Some("spiffe://cluster.local/ns/a/sa/b")).unwrap();
            let (result, rest) = accept_from("127.0.0.9:4000", &bytes, b"\x16\x03\x01hello").await;
            assert_eq!(result.unwrap(), Some(client), "{version:?}");
            assert_eq!(rest, b"\x16\x03\x01hello", "{version:?}: the first byte after the header is the next stage's");
        }
        let v6 = header(ProxyVersion::V2, addr("[2001:db8::1]:5"), addr("127.0.0.1:1"), None).unwrap();
        assert_eq!(parse(&v6).unwrap(), Some(addr("[2001:db8::1]:5")), "a v4 destination is mapped to v6 beside a v6 client");
    }

    #[tokio::test]
    async fn the_identity_travels_in_its_tlv() {
        let bytes = header(ProxyVersion::V2, addr("10.0.0.1:1"), addr("10.0.0.2:2"), Some("spiffe://x/y")).unwrap();
        let parsed = v2::Header::try_from(bytes.as_slice()).unwrap();
        let tlvs: Vec<_> = parsed.tlvs().map(Result::unwrap).collect();
        assert_eq!(tlvs.len(), 1);
        assert_eq!((tlvs[0].kind, tlvs[0].value.as_ref()), (IDENTITY_TLV, b"spiffe://x/y".as_slice()));
    }

    #[tokio::test]
    async fn untrusted_missing_broken_and_local_headers() {
        let good = header(ProxyVersion::V2, addr("192.0.2.1:1"), addr("127.0.0.1:2"), None).unwrap();
        let (untrusted, _) = accept_from("10.1.1.1:1", &good, b"").await;
        assert!(matches!(untrusted, Err(ProxyError::Untrusted(ip)) if ip.to_string() == "10.1.1.1"), "{untrusted:?}");
        let (mapped, _) = accept_from("[::ffff:127.0.0.1]:1", &good, b"").await;
        assert!(mapped.is_ok(), "an IPv4-mapped peer is judged as IPv4: {mapped:?}");
        let (missing, rest) = accept_from("127.0.0.1:1", b"\x16\x03\x01", b"").await;
        assert!(matches!(missing, Err(ProxyError::Missing(_))), "{missing:?}");
        assert_eq!(rest, b"\x03\x01");
        let (broken, _) = accept_from("127.0.0.1:1", b"PROXY TCP4 1.2.3.4\r\n", b"").await;
        assert!(matches!(broken, Err(ProxyError::Invalid(_))), "{broken:?}");
        let (endless, _) = accept_from("127.0.0.1:1", &[b'P'; 200], b"").await;
        assert!(matches!(endless, Err(ProxyError::Invalid(_))), "{endless:?}");
        let (short, _) = accept_from("127.0.0.1:1", &good[..20], b"").await;
        assert!(matches!(short, Err(ProxyError::Io(_))), "{short:?}");
        let (unknown, _) = accept_from("127.0.0.1:1", b"PROXY UNKNOWN\r\n", b"x").await;
        assert_eq!(unknown.unwrap(), None);
        let local = v2::Builder::with_addresses(v2::Version::Two | v2::Command::Local, v2::Protocol::Unspecified, v2::Addresses::Unspecified).build().unwrap();
        let (local, _) = accept_from("127.0.0.1:1", &local, b"").await;
        assert_eq!(local.unwrap(), None);
    }

    #[test]
    fn ranges_hold_mapped_addresses() {
        let ranges = [crate::config::proxy::range("10.0.0.0/8").unwrap()];
        assert!(within(&ranges, "10.2.3.4".parse().unwrap()));
        assert!(within(&ranges, "::ffff:10.2.3.4".parse().unwrap()));
        assert!(!within(&ranges, "11.0.0.1".parse().unwrap()));
    }
}
