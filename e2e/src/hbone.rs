//! The pair with the HBONE transport on the cross-cluster hop: egress plain port ->
//! one `CONNECT` stream per client connection over a pooled HTTP/2 mutual-TLS
//! connection -> ingress HBONE listener (`hbone`, 15008 in production) -> backend.

use std::time::{Duration, Instant};

use crate::config::{inline, list, quoted, quoted_path};
use crate::{Config, Gateway, Listener, Pki, Role, Route, SERVICE_HOST};

/// The authority the egress asks for: the tutorial's database behind the ingress.
pub const AUTHORITY: &str = "db.strait.test:3306";

/// What the egress logs each time its pool opens a connection to an ingress.
pub const POOL_OPENED: &str = "HBONE pool connection opened";

/// The ingress's HBONE listener: `hbone`, mutual TLS with the reference server Secret.
pub fn hbone_listener(pki: &Pki) -> Listener {
    Listener::mutual("hbone", &pki.path("ingress")).set("transport", quoted("hbone"))
}

/// Ingress config: the HBONE listener, route `mysql` for [`SERVICE_HOST`] to
/// `127.0.0.1:backend_port`.
pub fn ingress_config(pki: &Pki, backend_port: u16) -> Config {
    Config::new().listener(hbone_listener(pki)).route(Route::to("mysql", backend_port).hosts(&[SERVICE_HOST]))
}

/// An egress route `name` originating HBONE to `upstream` with the reference egress
/// credential, asking for `authority`.
pub fn hbone_route(pki: &Pki, name: &str, upstream: &str, authority: &str) -> Route {
    let tls = inline(&[("mode", quoted("mutual")), ("dir", quoted_path(&pki.path("egress"))), ("sni", quoted(SERVICE_HOST))]);
    Route::new(name, upstream).set("upstream_tls", tls).set("transport", quoted("hbone")).set("authority", quoted(authority))
}

/// Egress config: plain listener `mysql-plain` to the HBONE route `to-ingress`, as
/// `route` changes it (a short pool idle timeout, another authority).
pub fn egress_config(pki: &Pki, upstream: &str, route: impl FnOnce(Route) -> Route) -> Config {
    Config::new()
        .listener(Listener::plain("mysql-plain", "to-ingress"))
        .route(route(hbone_route(pki, "to-ingress", upstream, AUTHORITY).hosts(&[SERVICE_HOST])))
}

/// The HBONE pair on loopback.
pub struct HbonePair {
    /// The egress process.
    pub egress: Gateway,
    /// The ingress process.
    pub ingress: Gateway,
    /// Egress plain listener (the app's `egress:3306`).
    pub plain_port: u16,
    /// Ingress HBONE listener.
    pub hbone_port: u16,
}

impl HbonePair {
    /// Starts ingress then egress in front of `backend_port`; `route` may change the
    /// egress's HBONE route (see [`egress_config`]).
    pub fn start(pki: &Pki, backend_port: u16, route: impl FnOnce(Route) -> Route) -> HbonePair {
        HbonePair::start_with_ingress(pki, &ingress_config(pki, backend_port).toml(), route)
    }

    /// [`HbonePair::start`] with the ingress running `ingress` (its listener `hbone` on a
    /// fixed port, say, so it can be restarted in place).
    pub fn start_with_ingress(pki: &Pki, ingress: &str, route: impl FnOnce(Route) -> Route) -> HbonePair {
        let ingress = Gateway::start(Role::Ingress, pki.dir.path(), ingress);
        let hbone_port = ingress.port("hbone");
        let config = egress_config(pki, &format!("127.0.0.1:{hbone_port}"), route);
        let egress = Gateway::start(Role::Egress, pki.dir.path(), &config.toml());
        let plain_port = egress.port("mysql-plain");
        HbonePair { egress, ingress, plain_port, hbone_port }
    }
}

/// An allow list of identities as a TOML value.
pub fn allow(identities: &[&str]) -> String {
    list(identities)
}

/// The number of pool connections `egress` has opened so far.
pub fn pool_connections_opened(egress: &Gateway) -> usize {
    egress.log_lines(POOL_OPENED).len()
}

/// Waits until `gateway`'s access log holds exactly `count` lines containing every one
/// of `needles` (lines are written at close, so this waits for the closes); panics with
/// the log after 10 s.
pub fn wait_for_access_lines(gateway: &Gateway, needles: &[&str], count: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<String> = gateway.access_log().into_iter().filter(|l| needles.iter().all(|n| l.contains(n))).collect();
        if lines.len() == count {
            return lines;
        }
        assert!(Instant::now() < deadline, "{} access-log lines with {needles:?}, expected {count}, in:\n{}", lines.len(), gateway.proc.output());
        std::thread::sleep(Duration::from_millis(20));
    }
}
