//! Where a running gateway's health and metrics ports are bound. The fixtures start every
//! gateway with `--health-address 127.0.0.1:0 --metrics-address 127.0.0.1:0`, and the
//! gateway says which ports it got in `/config_dump` (`health_address`,
//! `metrics_address`), as it does for the admin port and the listeners.

use std::net::SocketAddr;

use crate::Gateway;

/// The bound address `field` (`"health_address"`, `"metrics_address"`, `"admin_address"`)
/// from the gateway's `/config_dump`.
pub fn bound_address(gateway: &Gateway, field: &str) -> SocketAddr {
    let (status, body) = gateway.admin("GET", "/config_dump");
    assert_eq!(status, 200, "{body}");
    let dump: serde_json::Value = serde_json::from_str(&body).unwrap();
    let address = dump[field].as_str().unwrap_or_else(|| panic!("no {field:?} in /config_dump: {body}"));
    address.parse().unwrap_or_else(|e| panic!("{field} = {address:?}: {e}"))
}

/// The health port (Istio's 15021: `/healthz/ready`, `/healthz/live`).
pub fn health_port(gateway: &Gateway) -> u16 {
    bound_address(gateway, "health_address").port()
}

/// The metrics port (Istio's 15090: `/stats/prometheus`).
pub fn metrics_port(gateway: &Gateway) -> u16 {
    bound_address(gateway, "metrics_address").port()
}
