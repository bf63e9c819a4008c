//! A remote that accepts TCP but cannot do the route's mTLS (its certificate is from a CA
//! the egress does not trust) is taken out of rotation:
//! - by a `kind = "tls"` health check, which completes a full origination handshake with
//!   the route's credential and verification: the primary is unhealthy although it
//!   accepts connects, and every client is served by the standby;
//! - by passive outlier detection, where origination handshake failures count like
//!   connect failures: after `consecutive_failures` of them the primary is ejected.

use std::time::{Duration, Instant};

use strait_e2e::config::{inline, quoted, Config, Listener, Route};
use strait_e2e::*;

struct Remotes {
    egress: Gateway,
    _ingresses: [Gateway; 2],
    bad: String,
    good: String,
    plain_port: u16,
}

/// A primary ingress with an untrusted certificate, a good standby, and an egress route
/// over both with `settings`.
fn start(pki: &Pki, settings: (&str, String)) -> Remotes {
    let echo = EchoServer::start();
    let foreign = pki.server_secret("foreign-ingress", SERVICE_HOST);
    let bad = Gateway::start(Role::Ingress, pki.dir.path(), &ingress_config_with(ingress_listener(&foreign), echo.port).toml());
    let (good, good_port) = Gateway::reference_ingress(pki, echo.port);
    let (bad_address, good_address) = (format!("127.0.0.1:{}", bad.port("mtls")), format!("127.0.0.1:{good_port}"));
    let route = Route::several("to-ingress", &[(&bad_address, 0), (&good_address, 1)])
        .mutual_origination(&pki.path("egress"), SERVICE_HOST)
        .set("connect_timeout", quoted("2s"))
        .set(settings.0, settings.1);
    let egress = Gateway::start(Role::Egress, pki.dir.path(), &Config::new().listener(Listener::plain("plain", "to-ingress")).route(route).toml());
    let plain_port = egress.port("plain");
    Remotes { egress, _ingresses: [bad, good], bad: bad_address, good: good_address, plain_port }
}

impl Remotes {
    fn address_state(&self, address: &str) -> serde_json::Value {
        let dump: serde_json::Value = serde_json::from_str(&self.egress.admin("GET", "/config_dump").1).unwrap();
        let endpoints = dump["endpoints"]["to-ingress"].as_array().cloned().unwrap_or_default();
        endpoints.into_iter().find(|e| e["endpoint"] == address).map(|e| e["addresses"][0].clone()).unwrap_or_default()
    }

    fn wait_for_state(&self, address: &str, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while self.address_state(address)["state"] != state {
            assert!(Instant::now() < deadline, "{address} not {state}: {}\n{}", self.address_state(address), self.egress.proc.output());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn echo(&self, message: &str) -> Result<String, String> {
        exchange_within(self.plain_port, message.as_bytes(), Duration::from_secs(10))
            .map(|r| String::from_utf8_lossy(&r).into_owned())
            .map_err(|e| e.to_string())
    }
}

#[test]
fn a_tls_health_check_fails_a_remote_that_only_accepts_tcp() {
    let pki = Pki::reference();
    let check = inline(&[("kind", quoted("tls")), ("interval", quoted("1s")), ("timeout", quoted("1s")), ("unhealthy_threshold", "1".into())]);
    let remotes = start(&pki, ("health_check", check));
    remotes.wait_for_state(&remotes.bad, "unhealthy");
    let probe = remotes.address_state(&remotes.bad)["last_probe"].clone();
    assert_eq!(probe["ok"], false, "{probe}");
    // Addresses start healthy; the good remote's first probe must pass to keep it so.
    let deadline = Instant::now() + Duration::from_secs(10);
    while remotes.address_state(&remotes.good)["last_probe"]["ok"] != true {
        assert!(Instant::now() < deadline, "the good remote's handshake never passed: {}", remotes.address_state(&remotes.good));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(remotes.address_state(&remotes.good)["state"], "healthy");
    for i in 0..10 {
        let message = format!("standby {i}");
        assert_eq!(remotes.echo(&message).as_deref(), Ok(message.as_str()), "{}", remotes.egress.proc.output());
    }
    // Each record is written as its connection's task ends, just after the client saw EOF.
    let served = || remotes.egress.access_log().iter().filter(|l| l.contains("outcome=closed") && l.contains(&format!("upstream={}", remotes.good))).count();
    let deadline = Instant::now() + Duration::from_secs(10);
    while served() < 10 {
        assert!(Instant::now() < deadline, "{}", remotes.egress.proc.output());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(served(), 10, "{}", remotes.egress.proc.output());
    let metrics = remotes.egress.admin("GET", "/metrics").1;
    assert!(metrics.contains(&format!("strait_upstream_health_check_failures_total{{route=\"to-ingress\",endpoint=\"{}\"}}", remotes.bad)), "{metrics}");
    assert!(metrics.contains(&format!("strait_upstream_endpoint_healthy{{route=\"to-ingress\",endpoint=\"{}\"}} 0", remotes.bad)), "{metrics}");
    assert!(metrics.contains(&format!("strait_upstream_endpoint_failovers_total{{route=\"to-ingress\",endpoint=\"{}\"}} 10", remotes.good)), "{metrics}");

    // A reload without the bad remote drops its state and its gauge series.
    let text = std::fs::read_to_string(&remotes.egress.config).unwrap();
    let without = text.replace(&format!("{{ address = \"{}\", priority = 0 }}, ", remotes.bad), "");
    assert_ne!(text, without, "{text}");
    std::fs::write(&remotes.egress.config, without).unwrap();
    remotes.egress.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    let dump = loop {
        let dump: serde_json::Value = serde_json::from_str(&remotes.egress.admin("GET", "/config_dump").1).unwrap();
        if dump["last_reload"]["succeeded"].as_u64() >= Some(1) {
            break dump;
        }
        assert!(Instant::now() < deadline, "no reload: {}", remotes.egress.proc.output());
        std::thread::sleep(Duration::from_millis(20));
    };
    let endpoints: Vec<_> = dump["endpoints"]["to-ingress"].as_array().into_iter().flatten().map(|e| e["endpoint"].clone()).collect();
    assert_eq!(endpoints, [serde_json::json!(remotes.good)], "{}", dump["endpoints"]);
    let metrics = remotes.egress.admin("GET", "/metrics").1;
    assert!(!metrics.contains(&format!("strait_upstream_endpoint_healthy{{route=\"to-ingress\",endpoint=\"{}\"}}", remotes.bad)), "{metrics}");
    assert_eq!(remotes.echo("after the reload").as_deref(), Ok("after the reload"));
}

#[test]
fn origination_handshake_failures_eject_the_remote() {
    let pki = Pki::reference();
    let outlier = inline(&[("consecutive_failures", "2".into()), ("base_ejection_time", quoted("60s")), ("max_ejection_percent", "50".into())]);
    let remotes = start(&pki, ("outlier_detection", outlier));
    // A handshake failure is not a connect failure: the client is not passed on to the
    // next priority, it is given up on (and counted), until the remote is ejected.
    let mut failed = 0;
    while remotes.address_state(&remotes.bad)["state"] != "ejected" {
        let reply = remotes.echo("to the primary");
        assert_ne!(reply.as_deref(), Ok("to the primary"), "nobody can have served it");
        failed += 1;
        assert!(failed <= 4, "not ejected after {failed} handshake failures:\n{}", remotes.egress.proc.output());
    }
    assert_eq!(failed, 2, "{}", remotes.egress.proc.output());
    remotes.egress.wait_for_access_line(&["outcome=upstream_failed", "TLS origination", "UnknownIssuer"]);
    for i in 0..5 {
        let message = format!("after ejection {i}");
        assert_eq!(remotes.echo(&message).as_deref(), Ok(message.as_str()), "{}", remotes.egress.proc.output());
    }
    assert_eq!(remotes.address_state(&remotes.bad)["times_ejected"], 1);
}
