//! The admin HTTP API on its own listener and its own tasks, so it answers
//! while the gateway is under load: health endpoints with Kubernetes
//! conventions (`/live`, `/ready`, `/health`), status, and the mutating calls
//! (`/v1/shutdown`, `/v1/reload`, `/v1/apps/{app}/drain|resume|restart`), which need
//! `Authorization: Bearer <admin.token>`; without it they answer 401 and
//! change nothing.

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

pub fn router(view: Arc<View>) -> Router {
    let mutating = Router::new()
        .route("/v1/shutdown", post(shutdown))
        .route("/v1/reload", post(reload))
        .route("/v1/apps/{app}/drain", post(drain))
        .route("/v1/apps/{app}/resume", post(resume))
        .route("/v1/apps/{app}/restart", post(restart))
        .route_layer(axum::middleware::from_fn_with_state(
            view.clone(),
            authorize,
        ));
    Router::new()
        .route("/live", get(live))
        .route("/ready", get(ready))
        .route("/health", get(health))
        .route("/v1/status", get(health))
        .merge(mutating)
        .with_state(view)
}

/// Bearer-token check for mutating calls (constant-time comparison).
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
    let expected = view.token.as_bytes();
    let same = given.len() == expected.len()
        && given
            .bytes()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        next.run(req).await
    } else {
        let body = api::ErrorBody {
            error: "unauthorized: send Authorization: Bearer <admin.token from the runtime dir>"
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
    server::serve_tcp(listener, router(view), timeouts, shutdown).await
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
