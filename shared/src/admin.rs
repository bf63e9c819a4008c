//! The admin HTTP port: probes, Prometheus metrics, the effective configuration, and
//! the log level at run time. Loopback by default; it never shows key material.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// What the admin endpoints read; the gateway writes it.
pub struct AdminState {
    /// True once every listener is bound and every credential loaded; false again
    /// while draining, so load balancers stop sending.
    pub ready: AtomicBool,
    /// `/config_dump`'s document, rebuilt at every (re)load.
    pub config_dump: ArcSwap<serde_json::Value>,
    /// The gateway's metrics, for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The log filter, for `/logging`; `None` when the process's logging is not ours
    /// to change (a gateway run inside a test).
    pub log: Option<Arc<crate::telemetry::LogControl>>,
    /// Upstream endpoint health, shown live under `/config_dump`'s `endpoints` (it
    /// changes between reloads); set once by the gateway.
    pub endpoints: std::sync::OnceLock<Arc<crate::endpoints::Registry>>,
}

impl AdminState {
    /// Not ready, an empty dump.
    pub fn new(metrics: Arc<crate::metrics::Metrics>, log: Option<Arc<crate::telemetry::LogControl>>) -> AdminState {
        AdminState { ready: AtomicBool::new(false), config_dump: ArcSwap::from_pointee(serde_json::json!({})), metrics, log, endpoints: Default::default() }
    }
}

/// Which endpoints a port serves: Istio splits them so that what the kubelet and
/// Prometheus must reach never exposes the configuration or the log level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// 15021: `/healthz/ready`, `/healthz/live`.
    Health,
    /// 15090: `/stats/prometheus` (and `/metrics`).
    Metrics,
    /// 15000, loopback: everything, plus `/config_dump` and `/logging`.
    Admin,
}

impl Port {
    /// Name for logs.
    pub fn name(self) -> &'static str {
        match self {
            Port::Health => "health",
            Port::Metrics => "metrics",
            Port::Admin => "admin",
        }
    }

    fn router(self) -> Router<Arc<AdminState>> {
        let health = || Router::new().route("/healthz/live", get(|| async { "live\n" })).route("/healthz/ready", get(ready));
        let metrics = || Router::new().route("/stats/prometheus", get(metrics)).route("/metrics", get(metrics));
        match self {
            Port::Health => health(),
            Port::Metrics => metrics(),
            Port::Admin => health().merge(metrics()).route("/config_dump", get(config_dump)).route("/logging", get(logging).post(logging)),
        }
    }
}

/// Binds one of the gateway's HTTP ports (so a bad address fails the start) and serves
/// it until `stop`; returns the bound address.
pub async fn serve(port: Port, address: SocketAddr, state: Arc<AdminState>, stop: CancellationToken) -> std::io::Result<SocketAddr> {
    let socket = TcpListener::bind(address).await?;
    let bound = socket.local_addr()?;
    let app = port.router().with_state(state);
    tokio::spawn(async move {
        let served = axum::serve(socket, app).with_graceful_shutdown(stop.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::error!(port = port.name(), error = %e, "HTTP port failed");
        }
    });
    Ok(bound)
}

async fn ready(State(state): State<Arc<AdminState>>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], state.metrics.encode()).into_response()
}

async fn config_dump(State(state): State<Arc<AdminState>>) -> Json<serde_json::Value> {
    let mut dump = state.config_dump.load().as_ref().clone();
    if let (Some(registry), Some(object)) = (state.endpoints.get(), dump.as_object_mut()) {
        object.insert("endpoints".into(), registry.report());
    }
    Json(dump)
}

#[derive(serde::Deserialize)]
struct LevelQuery {
    level: Option<String>,
}

/// `GET /logging` shows the filter; `POST /logging?level=debug` (or a directive such as
/// `info,strait::access=warn`) replaces it.
async fn logging(State(state): State<Arc<AdminState>>, method: axum::http::Method, Query(query): Query<LevelQuery>) -> Response {
    let Some(log) = &state.log else {
        return (StatusCode::NOT_FOUND, "this gateway does not own the process's logging\n").into_response();
    };
    match (method, query.level) {
        (axum::http::Method::POST, Some(level)) => match log.set_level(&level) {
            Ok(()) => (StatusCode::OK, format!("level: {level}\n")).into_response(),
            Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        },
        (axum::http::Method::POST, None) => (StatusCode::BAD_REQUEST, "POST /logging?level=LEVEL\n").into_response(),
        _ => (StatusCode::OK, format!("level: {}\n", log.level())).into_response(),
    }
}
