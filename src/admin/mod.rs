//! The admin HTTP API on its own listener and its own tasks, so it answers
//! while the gateway is under load. This milestone: the process health
//! endpoints (`/live`, `/ready`, `/health`) with Kubernetes conventions.

pub mod api;
pub mod report;

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;

pub use report::View;

pub fn router(view: Arc<View>) -> Router {
    Router::new()
        .route("/live", get(live))
        .route("/ready", get(ready))
        .route("/health", get(health))
        .with_state(view)
}

async fn live() -> Json<api::Live> {
    Json(api::Live {
        status: "ok".into(),
    })
}

async fn ready(State(view): State<Arc<View>>) -> impl IntoResponse {
    let report = view.readiness();
    let code = if report.reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(report))
}

async fn health(State(view): State<Arc<View>>) -> Json<api::Health> {
    Json(view.health())
}

/// Serves the admin API on `listener` until `shutdown`.
pub async fn serve(
    listener: std::net::TcpListener,
    view: Arc<View>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    axum::serve(listener, router(view))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
