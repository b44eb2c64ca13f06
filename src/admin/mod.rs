//! The admin HTTP API on its own listener and its own tasks, so it answers
//! while the gateway is under load: health endpoints with Kubernetes
//! conventions (`/live`, `/ready`, `/health`), status, the event stream
//! (`/v1/events`) and the mutating calls (`/v1/shutdown`, `/v1/reload`,
//! `/v1/apps/{app}/drain|resume|restart`).
//!
//! Admin holds no harbor state: every handler asks the harbor through one
//! narrow interface, [`Control`], and maps its typed [`HarborError`] to a
//! status code in one place ([`HarborError::status`]).
//!
//! One router serves two doors. `admin.sock` in the private runtime dir
//! needs no token: its file mode (0600) is the authentication, which is how
//! the CLI talks to us, so no credential is ever written to a file. The TCP
//! listener accepts a mutating call only with `Authorization: Bearer T` for a
//! T in `[admin] tokens` (none configured: every TCP mutation answers 401 and
//! changes nothing); reads (`/live`, `/ready`, `/health`, `/v1/status`,
//! `/v1/events`) stay open.

pub mod api;
mod server;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::sse::{self, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

/// What admin may ask of the harbor: the one narrow handle it holds.
pub trait Control: Send + Sync + 'static {
    fn health(&self) -> api::Health;
    fn readiness(&self) -> api::Ready;
    /// The running config (`[admin] tokens`, connection timeouts).
    fn config(&self) -> Arc<crate::config::Config>;
    fn request_shutdown(&self);
    fn reload(&self) -> impl Future<Output = api::ReloadResult> + Send;
    fn set_draining(&self, app: &str, draining: bool) -> Result<(), HarborError>;
    /// Queues a rolling restart (it runs in the background); `timeout`
    /// bounds the wait for the replacements to become ready.
    fn restart(self: &Arc<Self>, app: &str, timeout: Option<Duration>) -> Result<(), HarborError>;
    fn subscribe(&self) -> broadcast::Receiver<api::Event>;
    /// Hands over to a new harbormaster binary (`lifecycle::upgrade`): the
    /// new process's pid once it is ready, or why not (this one keeps serving).
    fn upgrade(
        self: &Arc<Self>,
        binary: std::path::PathBuf,
        timeout: Duration,
    ) -> impl Future<Output = Result<u32, String>> + Send;
}

/// Why the harbor refused or failed a command.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HarborError {
    #[error("unknown app `{0}`")]
    UnknownApp(String),
    #[error("`{0}` is external: there is no process to restart")]
    External(String),
    #[error("a restart of `{0}` is already under way")]
    Busy(String),
    #[error("harbormaster is shutting down")]
    ShuttingDown,
    #[error("{0}; the old instances keep serving")]
    NotReady(#[from] crate::supervisor::NotReady),
}

impl HarborError {
    /// The one mapping to HTTP (the CLI maps the status to its exit code).
    pub fn status(&self) -> StatusCode {
        match self {
            Self::UnknownApp(_) => StatusCode::NOT_FOUND,
            Self::External(_) | Self::Busy(_) | Self::ShuttingDown => StatusCode::CONFLICT,
            Self::NotReady(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

impl IntoResponse for HarborError {
    fn into_response(self) -> Response {
        error(self.status(), self.to_string())
    }
}

fn error(code: StatusCode, error: String) -> Response {
    (code, Json(api::ErrorBody { error })).into_response()
}

/// Which door a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// TCP: mutations need a configured bearer token.
    Tcp,
    /// `admin.sock`: the file permission already authenticated the caller.
    Socket,
}

pub fn router<C: Control>(harbor: Arc<C>, door: Door) -> Router {
    let mutating = Router::new()
        .route("/v1/shutdown", post(shutdown::<C>))
        .route("/v1/reload", post(reload::<C>))
        .route("/v1/upgrade", post(upgrade::<C>))
        .route("/v1/apps/{app}/{action}", post(app_action::<C>));
    let mutating = match door {
        Door::Socket => mutating,
        Door::Tcp => mutating.route_layer(axum::middleware::from_fn_with_state(
            harbor.clone(),
            authorize::<C>,
        )),
    };
    Router::new()
        .route("/live", get(live))
        .route("/ready", get(ready::<C>))
        .route("/health", get(health::<C>))
        .route("/v1/status", get(health::<C>))
        .route("/v1/events", get(events::<C>))
        .merge(mutating)
        .with_state(harbor)
}

/// Bearer-token check for mutating calls over TCP.
async fn authorize<C: Control>(
    State(harbor): State<Arc<C>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let given = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Constant time per candidate (`subtle`); how many tokens there are is
    // not a secret.
    let tokens = harbor.config().admin.tokens.clone();
    let same = tokens.iter().fold(false, |found, t| {
        found
            | bool::from(subtle::ConstantTimeEq::ct_eq(
                given.as_bytes(),
                t.as_bytes(),
            ))
    });
    if same {
        return next.run(req).await;
    }
    let why = "unauthorized: over TCP, mutating calls need Authorization: Bearer <one of [admin] tokens>; the CLI uses admin.sock instead";
    error(StatusCode::UNAUTHORIZED, why.into())
}

fn accepted(status: &str, app: Option<String>) -> Response {
    let body = api::Accepted {
        status: status.into(),
        app,
    };
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

async fn shutdown<C: Control>(State(harbor): State<Arc<C>>) -> Response {
    tracing::info!(event = "shutdown_requested", via = "admin API");
    harbor.request_shutdown();
    accepted("shutting_down", None)
}

/// `POST /v1/apps/{app}/drain|resume|restart[?timeout=30s]`: 202 once
/// done (drain, resume) or queued (restart).
async fn app_action<C: Control>(
    State(harbor): State<Arc<C>>,
    Path((app, action)): Path<(String, String)>,
    uri: Uri,
) -> Response {
    let timeout = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("timeout="))
        .map(humantime::parse_duration)
        .transpose();
    let done = match (action.as_str(), timeout) {
        ("drain", _) => harbor.set_draining(&app, true).map(|()| "draining"),
        ("resume", _) => harbor.set_draining(&app, false).map(|()| "resumed"),
        ("restart", Ok(timeout)) => harbor.restart(&app, timeout).map(|()| "restarting"),
        ("restart", Err(e)) => {
            return error(StatusCode::BAD_REQUEST, format!("invalid timeout: {e}"))
        }
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    match done {
        Ok(status) => accepted(status, Some(app)),
        Err(e) => e.into_response(),
    }
}

async fn reload<C: Control>(State(harbor): State<Arc<C>>) -> Response {
    tracing::info!(event = "reload_requested", via = "admin API");
    let result = harbor.reload().await;
    let code = match result.status.as_str() {
        "applied" => StatusCode::OK,
        "refused" => StatusCode::CONFLICT,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    (code, Json(result)).into_response()
}

async fn upgrade<C: Control>(
    State(harbor): State<Arc<C>>,
    Json(req): Json<api::UpgradeRequest>,
) -> Response {
    tracing::info!(event = "upgrade_requested", binary = %req.binary);
    let timeout = Duration::from_millis(req.timeout_ms.unwrap_or(120_000));
    match harbor.upgrade(req.binary.clone().into(), timeout).await {
        Ok(pid) => Json(api::UpgradeDone {
            pid,
            binary: req.binary,
        })
        .into_response(),
        Err(error) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({ "error": error })),
        )
            .into_response(),
    }
}

async fn live() -> Json<api::Live> {
    Json(api::Live {
        status: "ok".into(),
    })
}

async fn ready<C: Control>(State(harbor): State<Arc<C>>) -> impl IntoResponse {
    let report = harbor.readiness();
    let code = if report.reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(report))
}

async fn health<C: Control>(State(harbor): State<Arc<C>>) -> Json<api::Health> {
    Json(harbor.health())
}

/// `GET /v1/events`: Server-Sent Events, `event:` the kind and `data:` the
/// event as JSON. Ends after the `flushing` shutdown phase, so a connection
/// on `admin.sock` never holds up the exit.
async fn events<C: Control>(State(harbor): State<Arc<C>>) -> impl IntoResponse {
    let stream = futures_util::stream::unfold(Some(harbor.subscribe()), |rx| async move {
        let mut rx = rx?;
        let event = match rx.recv().await {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                let lagged = sse::Event::default().event("lagged").data(n.to_string());
                return Some((Ok::<_, Infallible>(lagged), Some(rx)));
            }
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        let last = matches!(&event.what, api::EventKind::Shutdown { phase } if phase == "flushing");
        let data = serde_json::to_string(&event).unwrap_or_default();
        let sse = sse::Event::default().event(event.kind()).data(data);
        Some((Ok(sse), (!last).then_some(rx)))
    });
    Sse::new(stream).keep_alive(sse::KeepAlive::default())
}

/// Serves the admin API on `listener` until `shutdown`.
pub async fn serve<C: Control>(
    listener: std::net::TcpListener,
    harbor: Arc<C>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let timeouts = {
        let gateway = &harbor.config().gateway;
        crate::gateway::conn::Timeouts {
            header: gateway.header_read_timeout,
            idle: gateway.client_idle_timeout,
        }
    };
    server::serve_tcp(listener, router(harbor, Door::Tcp), timeouts, shutdown).await
}

/// Serves the same API on `admin.sock` until `shutdown`.
pub async fn serve_socket<C: Control>(
    listener: std::os::unix::net::UnixListener,
    harbor: Arc<C>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(listener)?;
    axum::serve(listener, router(harbor, Door::Socket))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
