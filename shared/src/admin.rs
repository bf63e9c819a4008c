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
#[derive(Default)]
pub struct AdminState {
    /// True once every listener is bound and every credential loaded; false again
    /// while draining, so load balancers stop sending.
    pub ready: AtomicBool,
    /// `/config_dump`'s document, rebuilt at every (re)load.
    pub config_dump: ArcSwap<serde_json::Value>,
}

/// Binds the admin port (so a bad address fails the start) and serves it until
/// `stop`; returns the bound address.
pub async fn serve(address: SocketAddr, state: Arc<AdminState>, stop: CancellationToken) -> std::io::Result<SocketAddr> {
    let socket = TcpListener::bind(address).await?;
    let bound = socket.local_addr()?;
    let app = Router::new()
        .route("/healthz/live", get(|| async { "live\n" }))
        .route("/healthz/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/config_dump", get(config_dump))
        .route("/logging", get(logging).post(logging))
        .with_state(state);
    tokio::spawn(async move {
        let served = axum::serve(socket, app).with_graceful_shutdown(stop.cancelled_owned()).await;
        if let Err(e) = served {
            tracing::error!(error = %e, "admin server failed");
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

async fn metrics() -> Response {
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([(header::CONTENT_TYPE, content_type)], crate::metrics::get().encode()).into_response()
}

async fn config_dump(State(state): State<Arc<AdminState>>) -> Json<serde_json::Value> {
    Json(state.config_dump.load().as_ref().clone())
}

#[derive(serde::Deserialize)]
struct LevelQuery {
    level: Option<String>,
}

/// `GET /logging` shows the filter; `POST /logging?level=debug` (or a directive such as
/// `info,strait::access=warn`) replaces it.
async fn logging(method: axum::http::Method, Query(query): Query<LevelQuery>) -> Response {
    match (method, query.level) {
        (axum::http::Method::POST, Some(level)) => match crate::telemetry::set_level(&level) {
            Ok(()) => (StatusCode::OK, format!("level: {level}\n")).into_response(),
            Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
        },
        (axum::http::Method::POST, None) => (StatusCode::BAD_REQUEST, "POST /logging?level=LEVEL\n").into_response(),
        _ => (StatusCode::OK, format!("level: {}\n", crate::telemetry::level())).into_response(),
    }
}
