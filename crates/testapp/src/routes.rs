//! The endpoints. Each one exists to provoke one behaviour in a proxy.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{DefaultBodyLimit, Path, Query, Request};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::Notify;

#[derive(Clone)]
pub struct State(Arc<Inner>);

struct Inner {
    name: String,
    port: u16,
    grandchild_pid: Option<u32>,
    log_requests: bool,
    healthy: AtomicBool,
    ready: AtomicBool,
    shutdown: Arc<Notify>,
    /// `POST /admin/shutdown` answers at once and shuts down this much later.
    shutdown_delay: std::sync::Mutex<Duration>,
}

impl State {
    /// Makes `POST /admin/shutdown` answer at once and shut down after `delay`.
    pub fn with_shutdown_delay(self, delay: Duration) -> Self {
        *self.0.shutdown_delay.lock().unwrap() = delay;
        self
    }

    pub fn new(
        name: String,
        port: u16,
        grandchild_pid: Option<u32>,
        log_requests: bool,
        shutdown: Arc<Notify>,
    ) -> Self {
        Self(Arc::new(Inner {
            name,
            port,
            grandchild_pid,
            log_requests,
            healthy: AtomicBool::new(true),
            ready: AtomicBool::new(true),
            shutdown,
            shutdown_delay: std::sync::Mutex::new(Duration::ZERO),
        }))
    }
}

pub fn router(state: State) -> Router {
    let log = state.clone();
    Router::new()
        .route("/", get(hello))
        .route("/info", get(info))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/control/{what}", post(control))
        .route("/slow", get(slow))
        .route("/sse", get(sse))
        .route("/ws", get(ws))
        .route("/echo", any(echo))
        .route("/sink", any(sink))
        .route("/status/{code}", any(status))
        .route("/crash", any(crash))
        .route("/hang", any(hang))
        .route("/bytes", get(bytes))
        .route("/admin/shutdown", post(shutdown))
        .layer(DefaultBodyLimit::max(64 << 20))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: axum::middleware::Next| {
                let log = log.clone();
                async move {
                    if log.0.log_requests {
                        println!("testapp: {} {}", req.method(), req.uri());
                    }
                    next.run(req).await
                }
            },
        ))
        .with_state(state)
}

type S = axum::extract::State<State>;

async fn hello(axum::extract::State(s): S) -> impl IntoResponse {
    (
        [("x-instance", s.0.name.clone())],
        format!(
            "hello from {} pid={} port={}\n",
            s.0.name,
            std::process::id(),
            s.0.port
        ),
    )
}

async fn info(axum::extract::State(s): S) -> impl IntoResponse {
    Json(serde_json::json!({
        "name": s.0.name,
        "pid": std::process::id(),
        "port": s.0.port,
        "grandchild_pid": s.0.grandchild_pid,
        "app": std::env::var("HARBORMASTER_APP").ok(),
        "instance": std::env::var("HARBORMASTER_INSTANCE").ok(),
    }))
}

fn flag(ok: bool, what: &str) -> Response {
    if ok {
        (StatusCode::OK, format!("{what} ok\n")).into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, format!("{what} failing\n")).into_response()
    }
}

async fn health(axum::extract::State(s): S) -> Response {
    flag(s.0.healthy.load(Ordering::SeqCst), "health")
}

async fn ready(axum::extract::State(s): S) -> Response {
    flag(s.0.ready.load(Ordering::SeqCst), "ready")
}

#[derive(Deserialize)]
struct Ok {
    ok: bool,
}

/// `POST /control/ready?ok=false` and `POST /control/health?ok=false`.
async fn control(
    axum::extract::State(s): S,
    Path(what): Path<String>,
    Query(q): Query<Ok>,
) -> Response {
    let target = match what.as_str() {
        "ready" => &s.0.ready,
        "health" => &s.0.healthy,
        _ => {
            return (
                StatusCode::NOT_FOUND,
                "use /control/ready or /control/health\n",
            )
                .into_response()
        }
    };
    target.store(q.ok, Ordering::SeqCst);
    (StatusCode::OK, format!("{what}={}\n", q.ok)).into_response()
}

#[derive(Deserialize)]
struct Ms {
    #[serde(default)]
    ms: u64,
}

async fn slow(axum::extract::State(s): S, Query(q): Query<Ms>) -> impl IntoResponse {
    tokio::time::sleep(Duration::from_millis(q.ms)).await;
    format!("slept {} ms in {}\n", q.ms, s.0.name)
}

#[derive(Deserialize)]
struct SseParams {
    #[serde(default = "default_events")]
    events: u64,
    #[serde(default = "default_interval")]
    interval_ms: u64,
}

fn default_events() -> u64 {
    10
}

fn default_interval() -> u64 {
    100
}

/// A real event stream: each event is its own body frame, sent when due.
async fn sse(Query(q): Query<SseParams>) -> Response {
    let interval = Duration::from_millis(q.interval_ms);
    let stream = futures_util::stream::unfold(0u64, move |i| async move {
        if i >= q.events {
            return None;
        }
        if i > 0 {
            tokio::time::sleep(interval).await;
        }
        let event = format!("id: {i}\ndata: event {i}\n\n");
        Some((Ok::<_, Infallible>(Bytes::from(event)), i + 1))
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn ws(upgrade: WebSocketUpgrade) -> Response {
    upgrade.on_upgrade(echo_socket)
}

async fn echo_socket(mut socket: WebSocket) {
    use axum::extract::ws::Message;
    while let Some(Ok(msg)) = socket.recv().await {
        let reply = match msg {
            Message::Text(_) | Message::Binary(_) => msg,
            Message::Ping(p) => Message::Pong(p),
            Message::Close(_) => break,
            Message::Pong(_) => continue,
        };
        if socket.send(reply).await.is_err() {
            break;
        }
    }
}

async fn echo(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> impl IntoResponse {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    Json(serde_json::json!({
        "method": method.as_str(),
        "uri": uri.to_string(),
        "path": uri.path(),
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    }))
}

/// Reads the body as it streams in and answers how many bytes arrived.
async fn sink(body: Body) -> Response {
    let mut stream = body.into_data_stream();
    let mut n: u64 = 0;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => n += c.len() as u64,
            Err(e) => {
                return (StatusCode::BAD_REQUEST, format!("body error: {e}\n")).into_response()
            }
        }
    }
    Json(serde_json::json!({ "bytes": n })).into_response()
}

async fn status(Path(code): Path<u16>) -> Response {
    match StatusCode::from_u16(code) {
        Ok(code) => (code, format!("status {}\n", code.as_u16())).into_response(),
        Err(_) => (StatusCode::BAD_REQUEST, "status must be 100-999\n").into_response(),
    }
}

#[derive(Deserialize)]
struct Code {
    #[serde(default = "one")]
    code: i32,
}

fn one() -> i32 {
    1
}

/// Exits at once, without answering: the client sees the connection close.
async fn crash(Query(q): Query<Code>) -> Response {
    eprintln!("testapp: crashing with exit code {}", q.code);
    std::process::exit(q.code)
}

async fn hang() -> Response {
    std::future::pending().await
}

#[derive(Deserialize)]
struct N {
    #[serde(default)]
    n: u64,
}

/// Streams `n` bytes in 64 KiB chunks, never holding more than one chunk.
async fn bytes(Query(q): Query<N>) -> Response {
    const CHUNK: u64 = 64 * 1024;
    let chunk = Bytes::from(vec![b'x'; CHUNK as usize]);
    let stream = futures_util::stream::unfold(q.n, move |left| {
        let chunk = chunk.clone();
        async move {
            if left == 0 {
                return None;
            }
            let take = left.min(CHUNK);
            Some((
                Ok::<_, Infallible>(chunk.slice(..take as usize)),
                left - take,
            ))
        }
    });
    (
        [(header::CONTENT_LENGTH, q.n.to_string())],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn shutdown(axum::extract::State(s): S) -> impl IntoResponse {
    let delay = *s.0.shutdown_delay.lock().unwrap();
    eprintln!("testapp: shutdown requested over HTTP; exiting in {delay:?}");
    let notify = s.0.shutdown.clone();
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        notify.notify_one();
    });
    "shutting down\n"
}
