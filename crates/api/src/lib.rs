//! The HTTP listener of fleetcore: `/health` and `/metrics`, and the AWS-compatible control
//! plane behind them ([`ControlPlane`]): Signature V4 verification ([`sigv4`]), routing by
//! service, AWS error shapes ([`ApiError`]), and one module per service ([`iot`]).

pub mod context;
pub mod dispatch;
pub mod error;
pub mod extract;
pub mod firehose;
pub mod iot;
pub mod iotdata;
pub mod kinesis;
pub mod operations;
pub mod query;
pub mod sigv4;

pub use context::RequestContext;
pub use dispatch::ControlPlane;
pub use error::{ApiError, Protocol};
pub use sigv4::Credentials;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct ApiState {
    ready: Arc<AtomicBool>,
    metrics: PrometheusHandle,
    ca_pem: Arc<str>,
}

impl ApiState {
    /// State whose `/health` answers 503 until [`ApiState::set_ready`] is called.
    pub fn new(metrics: PrometheusHandle) -> ApiState {
        ApiState {
            ready: Arc::new(AtomicBool::new(false)),
            metrics,
            ca_pem: Arc::from(""),
        }
    }

    /// Serves `pem` (the CA that signed the server's TLS certificate) at `/ca.pem`.
    pub fn with_ca_pem(mut self, pem: &str) -> ApiState {
        self.ca_pem = Arc::from(pem);
        self
    }

    /// Marks every listener up (true) or the server going down (false).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }
}

/// The HTTP router: `/health`, `/metrics` and `/ca.pem` only ([`ControlPlane::into_router`]
/// adds the APIs). The CA certificate is public (devices need it to verify the server), so
/// like the other two it needs no signature.
pub fn router(state: ApiState) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/ca.pem", get(ca_pem))
        .with_state(state)
}

async fn ca_pem(State(state): State<ApiState>) -> axum::response::Response {
    if state.ca_pem.is_empty() {
        return (StatusCode::NOT_FOUND, "no CA configured\n").into_response();
    }
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        state.ca_pem.to_string(),
    )
        .into_response()
}

async fn health(State(state): State<ApiState>) -> impl IntoResponse {
    if state.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ok\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}

async fn metrics(State(state): State<ApiState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
}

/// Serves `router` on an already-bound listener until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Binds the HTTP address.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}
