//! The admin HTTP API on its own listener and its own tasks, so it answers
//! while the gateway is under load: health endpoints with Kubernetes
//! conventions (`/live`, `/ready`, `/health`), status, and the mutating calls
//! (`/v1/shutdown`, `/v1/reload`, `/v1/apps/{app}/drain|resume|restart`).
//!
//! One router serves two doors. `admin.sock` in the private runtime dir
//! needs no token: its file mode (0600) is the authentication, which is how
//! the CLI talks to us, so no credential is ever written to a file. The TCP
//! listener accepts a mutating call only with `Authorization: Bearer T` for a
//! T in `[admin] tokens` (none configured: every TCP mutation answers 401 and
//! changes nothing); reads (`/live`, `/ready`, `/health`, `/v1/status`) stay open.

pub mod api;
pub mod report;
mod server;

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio_util::sync::CancellationToken;

pub use report::View;

/// Which door a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// TCP: mutations need a configured bearer token.
    Tcp,
    /// `admin.sock`: the file permission already authenticated the caller.
    Socket,
}

pub fn router(view: Arc<View>, door: Door) -> Router {
    let mutating = Router::new()
        .route("/v1/shutdown", post(shutdown))
        .route("/v1/reload", post(reload))
        .route("/v1/apps/{app}/drain", post(drain))
        .route("/v1/apps/{app}/resume", post(resume))
        .route("/v1/apps/{app}/restart", post(restart));
    let mutating = match door {
        Door::Socket => mutating,
        Door::Tcp => mutating.route_layer(axum::middleware::from_fn_with_state(
            view.clone(),
            authorize,
        )),
    };
    Router::new()
        .route("/live", get(live))
        .route("/ready", get(ready))
        .route("/health", get(health))
        .route("/v1/status", get(health))
        .merge(mutating)
        .with_state(view)
}

/// Bearer-token check for mutating calls over TCP (constant-time comparison).
async fn authorize(
    State(view): State<Arc<View>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let tokens = view.config.load().admin.tokens.clone();
    // Constant time per candidate (`subtle`); how many tokens there are is
    // not a secret.
    let same = tokens.iter().fold(false, |found, t| {
        found
            | bool::from(subtle::ConstantTimeEq::ct_eq(
                given.as_bytes(),
                t.as_bytes(),
            ))
    });
    if same {
        next.run(req).await
    } else {
        let body = api::ErrorBody {
            error: "unauthorized: over TCP, mutating calls need Authorization: Bearer <one of [admin] tokens>; the CLI uses admin.sock instead"
                .into(),
        };
        (StatusCode::UNAUTHORIZED, Json(body)).into_response()
    }
}

fn accepted(status: &str, app: Option<String>) -> axum::response::Response {
    (
        StatusCode::ACCEPTED,
        Json(api::Accepted {
            status: status.into(),
            app,
        }),
    )
        .into_response()
}

async fn shutdown(State(view): State<Arc<View>>) -> axum::response::Response {
    tracing::info!(event = "shutdown_requested", via = "admin API");
    view.shutdown.cancel();
    accepted("shutting_down", None)
}

fn known_app(view: &View, app: &str) -> Option<crate::config::AppName> {
    crate::config::AppName::new(app)
        .ok()
        .filter(|n| view.config.load().apps.contains_key(n))
}

fn unknown_app(app: &str) -> axum::response::Response {
    let body = api::ErrorBody {
        error: format!("unknown app `{app}`"),
    };
    (StatusCode::NOT_FOUND, Json(body)).into_response()
}

async fn drain(State(view): State<Arc<View>>, Path(app): Path<String>) -> axum::response::Response {
    let Some(name) = known_app(&view, &app) else {
        return unknown_app(&app);
    };
    view.gateway.set_draining(&name, true);
    tracing::info!(event = "app_drain_start", app = %name, in_flight = view.gateway.app_in_flight(&name));
    accepted("draining", Some(app))
}

async fn resume(
    State(view): State<Arc<View>>,
    Path(app): Path<String>,
) -> axum::response::Response {
    let Some(name) = known_app(&view, &app) else {
        return unknown_app(&app);
    };
    view.gateway.set_draining(&name, false);
    tracing::info!(event = "app_resumed", app = %name);
    accepted("resumed", Some(app))
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
    let timeouts = {
        let gateway = &view.config.load().gateway;
        crate::gateway::conn::Timeouts {
            header: gateway.header_read_timeout,
            idle: gateway.client_idle_timeout,
        }
    };
    server::serve_tcp(listener, router(view, Door::Tcp), timeouts, shutdown).await
}

/// Serves the same API on `admin.sock` until `shutdown`.
pub async fn serve_socket(
    listener: std::os::unix::net::UnixListener,
    view: Arc<View>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    axum::serve(listener, router(view, Door::Socket))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn restart(
    State(view): State<Arc<View>>,
    Path(app): Path<String>,
) -> axum::response::Response {
    let Some(name) = known_app(&view, &app) else {
        return unknown_app(&app);
    };
    if !view
        .restarting
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(name.clone())
    {
        let body = api::ErrorBody {
            error: format!("a restart of `{app}` is already under way"),
        };
        return (StatusCode::CONFLICT, Json(body)).into_response();
    }
    view.restart_errors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&name);
    let task_view = view.clone();
    tokio::spawn(async move {
        if let Err(e) = (task_view.restart)(name.clone()).await {
            tracing::error!(event = "restart_failed", app = %name, reason = %e);
            task_view
                .restart_errors
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(name.clone(), e);
        }
        task_view
            .restarting
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&name);
    });
    accepted("restarting", Some(app))
}

async fn reload(State(view): State<Arc<View>>) -> axum::response::Response {
    tracing::info!(event = "reload_requested", via = "admin API");
    let result = (view.reload)().await;
    let code = match result.status.as_str() {
        "applied" => StatusCode::OK,
        "refused" => StatusCode::CONFLICT,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    (code, Json(result)).into_response()
}
