//! The admin HTTP API on its own listener and its own tasks, so it answers
//! while the gateway is under load: health endpoints with Kubernetes
//! conventions (`/live`, `/ready`, `/health`), status, the event stream
//! (`/v1/events`) and the mutating calls (`/v1/shutdown`, `/v1/reload`,
//! `/v1/apps/{app}/drain|resume|restart`), `/metrics` and the web dashboard
//! (`/`, `dashboard/`).
//!
//! Admin holds no harbor state: every handler asks the harbor through one
//! narrow interface, [`Control`], and maps its typed [`HarborError`] to a
//! status code in one place ([`HarborError::status`]).
//!
//! One router serves two doors. `admin.sock` in the private runtime dir
//! needs no token: its file mode (0600) is the authentication, which is how
//! the CLI talks to us, so no credential is ever written to a file. The TCP
//! listener accepts a mutating call only with `Authorization: Bearer T` for a
//! T in `[admin] tokens`, or with a dashboard session (`session.rs`; none
//! of either: every TCP mutation answers 401 and changes nothing); reads
//! (`/live`, `/ready`, `/health`, `/v1/status`, `/v1/events`, `/metrics`)
//! stay open. An app's log tail is guarded like a mutation (app output may
//! hold secrets).

pub mod api;
pub mod audited;
mod dashboard;
mod mcp_kill;
mod server;
pub mod session;

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
    /// The audit log, when it is on: every mutating call is recorded there.
    fn audit(&self) -> Option<crate::audit::Audit> {
        None
    }
    /// `GET /metrics`: the Prometheus text format, or OpenMetrics.
    fn metrics(&self, openmetrics: bool) -> String;
    /// Dashboard login tokens and sessions.
    fn sessions(&self) -> &session::Sessions;
    /// The last `lines` lines of `app`'s output (its log under `state_dir`).
    fn log_tail(&self, app: &str, lines: usize) -> Result<Vec<String>, HarborError>;
    /// The MCP gateway, when the config has `[mcp]`.
    fn mcp(&self) -> Option<Arc<crate::mcp::McpGateway>> {
        None
    }
    /// The MCP front served on `admin.sock` (the stdio bridge).
    fn mcp_socket_front(&self) -> Option<Arc<crate::mcp::front_http::HttpFront>> {
        None
    }
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
        .route("/v1/apps/{app}/{action}", post(app_action::<C>))
        .route("/v1/mcp/kill", post(mcp_kill::kill::<C>))
        .route("/v1/mcp/unkill", post(mcp_kill::unkill::<C>))
        .merge(dashboard::guarded::<C>())
        .route_layer(axum::middleware::from_fn_with_state(
            (harbor.clone(), door),
            audited::record::<C>,
        ));
    let mutating = match door {
        // The stdio bridge of `harbormaster mcp`: socket only.
        Door::Socket => mutating.route(
            crate::mcp::front_http::BRIDGE_PATH,
            axum::routing::any(mcp_bridge::<C>),
        ),
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
        .route("/metrics", get(metrics::<C>))
        .route("/v1/mcp", get(mcp_status::<C>))
        .merge(mutating)
        .merge(dashboard::open::<C>())
        .with_state(harbor)
}

/// Token-or-session check for mutating calls over TCP (`session::check`).
async fn authorize<C: Control>(
    State(harbor): State<Arc<C>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let tokens = &harbor.config().admin.tokens;
    match session::check(
        req.headers(),
        tokens,
        harbor.sessions(),
        tokio::time::Instant::now(),
    ) {
        Ok(via) => {
            let mut req = req;
            req.extensions_mut().insert(via);
            next.run(req).await
        }
        Err(refused) => error(refused.status(), refused.message().into()),
    }
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

/// The MCP front over `admin.sock` (Streamable HTTP, caller `stdio_client`).
async fn mcp_bridge<C: Control>(
    State(harbor): State<Arc<C>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match harbor.mcp_socket_front() {
        Some(front) => front.serve(req).await.map(axum::body::Body::new),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": "no [mcp] table in the config"})),
        )
            .into_response(),
    }
}

/// `GET /v1/mcp`: each MCP server's state, breaker, tools and restarts.
async fn mcp_status<C: Control>(State(harbor): State<Arc<C>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    match harbor.mcp() {
        Some(mcp) => Json(mcp.status()).into_response(),
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({"error": "no [mcp] table in the config"})),
        )
            .into_response(),
    }
}

async fn health<C: Control>(State(harbor): State<Arc<C>>) -> Json<api::Health> {
    Json(harbor.health())
}

/// `GET /metrics`: OpenMetrics when `Accept` asks for it.
async fn metrics<C: Control>(
    State(harbor): State<Arc<C>>,
    headers: axum::http::HeaderMap,
) -> Response {
    let accept = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let openmetrics = crate::metrics::wants_openmetrics(accept);
    let body = harbor.metrics(openmetrics);
    let kind = if openmetrics {
        crate::metrics::OPENMETRICS
    } else {
        crate::metrics::PROMETHEUS_TEXT
    };
    ([(axum::http::header::CONTENT_TYPE, kind)], body).into_response()
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
