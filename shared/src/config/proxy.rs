//! PROXY protocol and source-address settings: a listener's `proxy_protocol` (accept a
//! header from trusted ranges), a route's `send_proxy_protocol` and `source_ranges`.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// A listener's `proxy_protocol` table as written.
#[derive(Debug, Deserialize)]
pub struct RawProxyProtocol {
    /// Source ranges (CIDRs, or single addresses) allowed to send a PROXY header: a
    /// load balancer's addresses. Connections from anywhere else are refused.
    #[serde(default)]
    pub trusted: Vec<String>,
}

/// A listener's checked `proxy_protocol`: every connection must come from `trusted` and
/// start with a PROXY v1 or v2 header, whose source address is then the client's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProxyProtocol {
    /// Where a PROXY header is accepted from.
    pub trusted: Vec<IpNet>,
}

/// Which PROXY protocol version a route writes to its upstream.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ProxyVersion {
    /// The text header (addresses only).
    V1,
    /// The binary header, with the client's verified identity in a TLV.
    V2,
}

/// A CIDR or a single address (a host route) parsed; the error says what is wrong.
pub fn range(text: &str) -> Result<IpNet, String> {
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("{text:?} is not an address range: give a CIDR such as \"10.0.0.0/8\" or \"2001:db8::/32\", or one address"))
}

/// Checks a list of ranges for `field`; problems go to `add`. `None` when any failed.
pub(super) fn ranges(texts: &[String], field: &str, mut add: impl FnMut(&str, String)) -> Option<Vec<IpNet>> {
    let parsed: Vec<Option<IpNet>> = texts.iter().map(|t| range(t).map_err(|m| add(field, m)).ok()).collect();
    parsed.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_cidrs_or_single_addresses() {
        assert_eq!(range("127.0.0.0/8").unwrap().to_string(), "127.0.0.0/8");
        assert_eq!(range("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8", "host bits are dropped");
        assert_eq!(range("192.0.2.7").unwrap().to_string(), "192.0.2.7/32");
        assert_eq!(range("::1").unwrap().to_string(), "::1/128");
        assert!(range("10.0.0.0/33").is_err());
        assert!(range("lb.example.com").is_err());
    }
}
