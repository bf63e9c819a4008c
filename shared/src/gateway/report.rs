//! What a gateway tells its operator about its state: `/config_dump`, the certificates
//! it loaded (log lines and the expiry metric), and settings that weaken security.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use crate::config::{Config, PeerAuth, Role, TlsMode};
use crate::metrics::{CredentialLabels, Metrics};
use crate::route::RouteTable;

use super::ReloadStatus;

/// What `/config_dump` is made of.
pub struct DumpInputs<'a> {
    /// The effective configuration, when it changed.
    pub config: Option<&'a Config>,
    /// The table in force (for its credentials).
    pub table: &'a RouteTable,
    /// The addresses the listeners are bound to (port 0 resolved).
    pub listeners: &'a BTreeMap<String, SocketAddr>,
    /// The HTTP ports' bound addresses.
    pub http: HttpAddresses,
    /// The latest reload attempt.
    pub reload: Option<&'a ReloadStatus>,
}

/// Where the gateway's HTTP ports are bound (port 0 resolved), for `/config_dump`.
#[derive(Clone, Copy, Debug, Default)]
pub struct HttpAddresses {
    /// The admin port, when enabled.
    pub admin: Option<SocketAddr>,
    /// The health port, when enabled.
    pub health: Option<SocketAddr>,
    /// The metrics port, when enabled.
    pub metrics: Option<SocketAddr>,
}

/// Rebuilds `/config_dump` over `previous`: the effective configuration, the bound
/// addresses, every loaded certificate (paths, subject, serial, not-after; never keys)
/// and the last reload.
pub fn config_dump(previous: &serde_json::Value, inputs: DumpInputs<'_>) -> serde_json::Value {
    let mut dump = if previous.is_object() { previous.clone() } else { serde_json::json!({}) };
    if let Some(config) = inputs.config {
        dump["config"] = serde_json::to_value(config).unwrap_or_default();
    }
    // The effective configuration: a listener that asked for port 0 shows the port it got.
    for listener in dump["config"]["listener"].as_array_mut().into_iter().flatten() {
        if let Some(bound) = listener["name"].as_str().and_then(|name| inputs.listeners.get(name)) {
            listener["address"] = serde_json::json!(bound.to_string());
        }
    }
    let http = [("admin_address", inputs.http.admin), ("health_address", inputs.http.health), ("metrics_address", inputs.http.metrics)];
    for (field, bound) in http {
        if let Some(bound) = bound {
            dump[field] = serde_json::json!(bound.to_string());
        }
    }
    dump["listeners"] = inputs.listeners.iter().map(|(name, address)| (name.clone(), serde_json::json!(address.to_string()))).collect();
    let rfc3339 = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    dump["credentials"] = inputs
        .table
        .credentials
        .iter()
        .map(|c| {
            serde_json::json!({
                "cert_file": c.cert_file,
                "subject": c.subject,
                "sans": c.sans,
                "serial": c.serial,
                "not_after": rfc3339(c.not_after),
                "loaded_at": rfc3339(c.loaded_at),
            })
        })
        .collect();
    if let Some(status) = inputs.reload {
        dump["last_reload"] = serde_json::json!({
            "at": rfc3339(status.at),
            "trigger": status.trigger,
            "result": match &status.result { Ok(()) => "success".to_owned(), Err(e) => format!("failure: {e}") },
            "succeeded": status.succeeded,
            "failed": status.failed,
        });
    }
    dump
}

/// Logs every certificate the table presents (a warning inside `warning_window` of its
/// expiry) and replaces the expiry metric's series with them.
pub fn credentials(table: &RouteTable, metrics: &Metrics, warning_window: Duration) {
    let now = SystemTime::now();
    let expiries: Vec<_> = table
        .credentials
        .iter()
        .map(|c| {
            let labels = CredentialLabels { file: c.cert_file.display().to_string(), serial: c.serial.clone() };
            (labels, c.not_after.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_secs_f64())
        })
        .collect();
    metrics.cert_not_after.replace(&expiries);
    for credential in &table.credentials {
        let left = credential.not_after.duration_since(now).unwrap_or_default();
        let expires = humantime::format_rfc3339_seconds(credential.not_after);
        if left < warning_window {
            tracing::warn!(file = %credential.cert_file.display(), subject = %credential.subject, serial = %credential.serial, %expires, "certificate expires within the warning window ({} days left): renew it", left.as_secs() / 86400);
        } else {
            tracing::info!(file = %credential.cert_file.display(), subject = %credential.subject, serial = %credential.serial, %expires, "certificate loaded");
        }
    }
}

/// Settings that weaken security are allowed only when explicit, and then said loudly.
pub fn insecure_settings(config: &Config, role: Role) {
    for route in config.routes.iter().map(|r| r.get_ref()) {
        if role == Role::Egress && route.upstream_tls.is_none() {
            tracing::warn!(route = %route.name, upstream = %route.upstream, "INSECURE: upstream_tls.mode = \"disable\": this route sends plaintext off the host");
        }
    }
    for listener in config.listeners.iter().map(|l| l.get_ref()) {
        if listener.tls().map(|t| t.mode) == Some(TlsMode::Simple) {
            tracing::warn!(listener = %listener.name, "tls.mode = \"simple\": clients are not authenticated on this listener");
        }
        if listener.tls().is_some() && listener.peer_auth != PeerAuth::Strict {
            tracing::warn!(listener = %listener.name, peer_auth = ?listener.peer_auth, "INSECURE: this TLS listener also accepts plaintext clients (they take default_route)");
        }
    }
}
