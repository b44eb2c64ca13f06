//! The Streamable HTTP front, mounted on the gateway listeners at
//! `[mcp] routes` (see `gateway::mount`).
//!
//! 2025-11-25 era: `initialize` opens a session (`Mcp-Session-Id`); later
//! POSTs need it (400 without, 404 once ended); GET opens the stream of
//! list-changed notices; DELETE ends the session. 2026-07-28 era (a POST
//! with `MCP-Protocol-Version: 2026-07-28`, or `server/discover`): no
//! session, GET/DELETE 405. A request answers with JSON, or with an SSE
//! stream when it asked for progress and accepts `text/event-stream`.
//!
//! Checked first: `Origin` (loopback or `allowed_origins`, else 403), the
//! bearer token when `[mcp.clients.*]` exist (else 401), and the
//! `MCP-Protocol-Version` header (unknown → 400).

use std::collections::HashMap;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Frame, Incoming};
use hyper::header::{HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, ORIGIN};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::audit::{Caller, Front};
use super::errors::{error_response, McpError};
use super::hub::{McpGateway, Session, SUPPORTED};
use super::upstream::STATELESS_ERA;
use crate::config::HostMatch;
use crate::gateway::mount::Mounted;
use crate::gateway::ProxyBody;

/// Where `admin.sock` serves the MCP front for `harbormaster mcp`'s bridge.
pub const BRIDGE_PATH: &str = "/v1/mcp/stream";

/// Largest request body accepted.
const MAX_BODY: usize = 4 << 20;
const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

struct HttpSession {
    session: Arc<Session>,
    /// Cancelled by DELETE: ends its GET stream.
    ended: CancellationToken,
    /// Last request (or open GET stream): sessions idle for
    /// [`SESSION_IDLE`] are forgotten (a client that vanished without DELETE).
    last_used: Mutex<tokio::time::Instant>,
}

/// How long an unused session is kept.
const SESSION_IDLE: std::time::Duration = std::time::Duration::from_secs(3600);

impl HttpSession {
    fn touch(&self) {
        *lock(&self.last_used) = tokio::time::Instant::now();
    }

    /// Idle, with no GET stream open and no request in flight.
    fn expired(this: &Arc<Self>, now: tokio::time::Instant) -> bool {
        now.duration_since(*lock(&this.last_used)) > SESSION_IDLE
            && Arc::strong_count(this) == 1
            && Arc::strong_count(&this.session) == 1
    }
}

/// Who reaches the front, which decides how callers are identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    /// The gateway listeners: Origin checked, bearer tokens name clients.
    Gateway,
    /// `admin.sock` (the stdio bridge of `harbormaster mcp`): the file
    /// permission authenticated the caller, who is `[mcp] stdio_client`.
    Socket,
}

pub struct HttpFront {
    hub: Arc<McpGateway>,
    door: Door,
    sessions: Mutex<HashMap<String, Arc<HttpSession>>>,
    /// Cancelled at shutdown: GET streams end.
    closing: CancellationToken,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HttpFront {
    pub fn new(hub: Arc<McpGateway>, door: Door, closing: CancellationToken) -> Arc<Self> {
        Arc::new(Self {
            hub,
            door,
            sessions: Mutex::default(),
            closing,
        })
    }

    /// Answers one HTTP request to the front.
    pub async fn serve<B>(self: Arc<Self>, req: Request<B>) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let config = self.hub.config();
        if self.door == Door::Socket {
            // No Origin check: only processes of this user reach the socket.
        } else if let Some(origin) = req.headers().get(ORIGIN) {
            if !origin_allowed(origin.to_str().unwrap_or(""), &config.allowed_origins) {
                return plain(
                    StatusCode::FORBIDDEN,
                    json!({"error": "origin not allowed"}),
                );
            }
        }
        let caller = match self.identify(&req) {
            Some(c) => c,
            None => {
                let mut res = plain(
                    StatusCode::UNAUTHORIZED,
                    json!({"error": "unknown or missing bearer token"}),
                );
                res.headers_mut()
                    .insert("www-authenticate", HeaderValue::from_static("Bearer"));
                return res;
            }
        };
        let version = req
            .headers()
            .get(VERSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if let Some(v) = &version {
            if !SUPPORTED.contains(&v.as_str()) {
                return plain(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "unsupported MCP-Protocol-Version", "supported": SUPPORTED}),
                );
            }
        }
        let stateless = version.as_deref() == Some(STATELESS_ERA);
        let session_id = req
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        match *req.method() {
            Method::POST => self.post(req, caller, session_id, stateless).await,
            Method::GET if !stateless => self.get(session_id, &req),
            Method::DELETE if !stateless => {
                match session_id.and_then(|id| lock(&self.sessions).remove(&id)) {
                    Some(s) => {
                        s.ended.cancel();
                        empty(StatusCode::OK)
                    }
                    None => plain(StatusCode::NOT_FOUND, json!({"error": "unknown session"})),
                }
            }
            _ => {
                let mut res = empty(StatusCode::METHOD_NOT_ALLOWED);
                let allow = if stateless {
                    "POST"
                } else {
                    "GET, POST, DELETE"
                };
                res.headers_mut()
                    .insert("allow", HeaderValue::from_static(allow));
                res
            }
        }
    }

    /// The caller named by the bearer token; `None` when clients are
    /// configured and the token names none of them.
    fn identify<B>(&self, req: &Request<B>) -> Option<Caller> {
        let config = self.hub.config();
        let session = req
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if self.door == Door::Socket {
            let client = config.stdio_client.clone();
            let roles = config
                .clients
                .get(&client)
                .map(|c| c.roles.clone())
                .unwrap_or_default();
            return Some(Caller {
                client,
                roles,
                front: Front::Stdio,
                session,
            });
        }
        if config.clients.is_empty() {
            return Some(Caller {
                client: "anonymous".into(),
                roles: Vec::new(),
                front: Front::Http,
                session,
            });
        }
        let token = req
            .headers()
            .get(AUTHORIZATION)?
            .to_str()
            .ok()?
            .strip_prefix("Bearer ")?
            .trim();
        use subtle::ConstantTimeEq;
        let (name, client) = config
            .clients
            .iter()
            .find(|(_, c)| bool::from(c.token.as_bytes().ct_eq(token.as_bytes())))?;
        Some(Caller {
            client: name.clone(),
            roles: client.roles.clone(),
            front: Front::Http,
            session,
        })
    }

    async fn post<B>(
        self: Arc<Self>,
        req: Request<B>,
        mut caller: Caller,
        session_id: Option<String>,
        stateless: bool,
    ) -> Response<ProxyBody>
    where
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let sse_ok = req
            .headers()
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/event-stream"));
        let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
            Ok(b) => b.to_bytes(),
            Err(_) => {
                return plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    json!({"error": "body too large or unreadable"}),
                )
            }
        };
        let msg: Value = match serde_json::from_slice(&body) {
            Ok(v @ Value::Object(_)) => v,
            Ok(_) => {
                return json_rpc(
                    StatusCode::BAD_REQUEST,
                    error_response(
                        &Value::Null,
                        &McpError::invalid_request("send one JSON-RPC message per POST"),
                    ),
                    None,
                )
            }
            Err(e) => {
                return json_rpc(
                    StatusCode::BAD_REQUEST,
                    error_response(&Value::Null, &McpError::parse_error(e.to_string())),
                    None,
                )
            }
        };
        let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
        let is_request = msg.get("id").is_some() && !method.is_empty();
        let (session, new_id) = if method == "initialize" && !stateless {
            let id = new_session_id();
            caller.session = id.clone();
            let s = Arc::new(HttpSession {
                session: Session::new(caller),
                ended: CancellationToken::new(),
                last_used: Mutex::new(tokio::time::Instant::now()),
            });
            let mut sessions = lock(&self.sessions);
            let now = tokio::time::Instant::now();
            sessions.retain(|_, s| !HttpSession::expired(s, now));
            sessions.insert(id.clone(), s.clone());
            drop(sessions);
            (s.session.clone(), Some(id))
        } else if stateless || method == "server/discover" {
            (Session::new(caller), None)
        } else {
            let Some(id) = session_id else {
                return plain(
                    StatusCode::BAD_REQUEST,
                    json!({"error": "missing Mcp-Session-Id: initialize first"}),
                );
            };
            match lock(&self.sessions).get(&id) {
                Some(s) => {
                    s.touch();
                    (s.session.clone(), None)
                }
                None => {
                    return plain(
                        StatusCode::NOT_FOUND,
                        json!({"error": "unknown or ended session: initialize again"}),
                    )
                }
            }
        };
        let wants_progress = msg
            .get("params")
            .and_then(|p| p.get("_meta"))
            .and_then(|m| m.get("progressToken"))
            .is_some();
        if !is_request {
            let (tx, _rx) = mpsc::unbounded_channel();
            let _ = self.hub.handle(&session, msg, &tx).await;
            return empty(StatusCode::ACCEPTED);
        }
        if sse_ok && wants_progress {
            // Progress first, then the answer, on one SSE stream; closing
            // it cancels the request.
            let (tx, rx) = mpsc::unbounded_channel::<Value>();
            let gone = CancellationToken::new();
            let (hub, gone_task) = (self.hub.clone(), gone.clone());
            tokio::spawn(async move {
                let answer = tokio::select! {
                    a = hub.handle(&session, msg, &tx) => a,
                    _ = gone_task.cancelled() => None,
                };
                if let Some(a) = answer {
                    let _ = tx.send(a);
                }
            });
            return sse(rx, Some(gone.drop_guard()), new_id);
        }
        let (tx, _rx) = mpsc::unbounded_channel();
        match self.hub.handle(&session, msg, &tx).await {
            Some(answer) => json_rpc(StatusCode::OK, answer, new_id),
            None => empty(StatusCode::ACCEPTED),
        }
    }

    /// The session's stream of notices (list changes).
    fn get<B>(&self, session_id: Option<String>, req: &Request<B>) -> Response<ProxyBody> {
        let accepts = req
            .headers()
            .get(ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/event-stream"));
        if !accepts {
            return empty(StatusCode::METHOD_NOT_ALLOWED);
        }
        let Some(id) = session_id else {
            return plain(
                StatusCode::BAD_REQUEST,
                json!({"error": "missing Mcp-Session-Id"}),
            );
        };
        let Some(s) = lock(&self.sessions).get(&id).cloned() else {
            return plain(
                StatusCode::NOT_FOUND,
                json!({"error": "unknown or ended session"}),
            );
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let mut notices = self.hub.notices();
        let closing = self.closing.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    n = notices.recv() => match n {
                        Ok(n) => if tx.send(n).is_err() { return },
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(_) => return,
                    },
                    _ = tx.closed() => return,
                    _ = s.ended.cancelled() => return,
                    _ = closing.cancelled() => return,
                }
            }
        });
        sse(rx, None, None)
    }
}

impl HttpFront {
    /// Whether a request for `host` and `path` is for the MCP front.
    pub fn claims(&self, host: &str, path: &str) -> bool {
        self.hub.config().routes.iter().any(|r| {
            let host_ok = match &r.host {
                None => true,
                Some(HostMatch::Exact(h)) => h == host,
                Some(HostMatch::Wildcard(suffix)) => host
                    .strip_suffix(suffix.as_str())
                    .is_some_and(|p| p.ends_with('.')),
            };
            let path_ok = match &r.path {
                None => true,
                Some(p) => {
                    path == p
                        || path
                            .strip_prefix(p.as_str())
                            .is_some_and(|rest| rest == "/")
                }
            };
            host_ok && path_ok
        })
    }
}

/// An `Arc<HttpFront>` as the gateway's mount.
pub struct MountedFront(pub Arc<HttpFront>);

impl Mounted for MountedFront {
    fn claims(&self, host: &str, path: &str) -> bool {
        self.0.claims(host, path)
    }

    fn call(
        &self,
        req: Request<Incoming>,
        _peer: IpAddr,
    ) -> Pin<Box<dyn std::future::Future<Output = Response<ProxyBody>> + Send + 'static>> {
        Box::pin(self.0.clone().serve(req))
    }
}

fn new_session_id() -> String {
    format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..))
}

/// Loopback origins always; others only when listed.
pub fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    let origin = origin.trim().trim_end_matches('/').to_ascii_lowercase();
    if allowed.contains(&origin) {
        return true;
    }
    let Some((_, rest)) = origin.split_once("://") else {
        return false;
    };
    let host = if rest.starts_with('[') {
        rest.split_once(']')
            .map_or(rest, |(h, _)| h)
            .trim_start_matches('[')
    } else {
        rest.split(':').next().unwrap_or(rest)
    };
    host == "localhost"
        || host.ends_with(".localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn full(status: StatusCode, body: Bytes, content_type: &'static str) -> Response<ProxyBody> {
    let mut res = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    *res.status_mut() = status;
    if !content_type.is_empty() {
        res.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    }
    res
}

fn empty(status: StatusCode) -> Response<ProxyBody> {
    full(status, Bytes::new(), "")
}

fn plain(status: StatusCode, body: Value) -> Response<ProxyBody> {
    full(status, Bytes::from(body.to_string()), "application/json")
}

fn json_rpc(status: StatusCode, body: Value, session: Option<String>) -> Response<ProxyBody> {
    let mut res = plain(status, body);
    if let Some(id) = session.and_then(|s| HeaderValue::from_str(&s).ok()) {
        res.headers_mut().insert(SESSION_HEADER, id);
    }
    res
}

fn sse(
    rx: mpsc::UnboundedReceiver<Value>,
    guard: Option<DropGuard>,
    session: Option<String>,
) -> Response<ProxyBody> {
    let body = SseBody { rx, _guard: guard };
    let mut res = Response::new(body.boxed());
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    res.headers_mut()
        .insert("cache-control", HeaderValue::from_static("no-cache"));
    if let Some(id) = session.and_then(|s| HeaderValue::from_str(&s).ok()) {
        res.headers_mut().insert(SESSION_HEADER, id);
    }
    res
}

/// Server-Sent Events from a channel; dropping it (the client went away)
/// drops `_guard`, which cancels the request behind it.
struct SseBody {
    rx: mpsc::UnboundedReceiver<Value>,
    _guard: Option<DropGuard>,
}

impl Body for SseBody {
    type Data = Bytes;
    type Error = crate::gateway::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, crate::gateway::BoxError>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(msg)) => Poll::Ready(Some(Ok(Frame::data(Bytes::from(format!(
                "event: message\ndata: {msg}\n\n"
            )))))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_sessions_expire_unless_something_holds_them() {
        let caller = Caller {
            client: "c".into(),
            roles: vec![],
            front: Front::Http,
            session: "s".into(),
        };
        let s = Arc::new(HttpSession {
            session: Session::new(caller),
            ended: CancellationToken::new(),
            last_used: Mutex::new(tokio::time::Instant::now()),
        });
        tokio::time::advance(SESSION_IDLE / 2).await;
        assert!(!HttpSession::expired(&s, tokio::time::Instant::now()));
        tokio::time::advance(SESSION_IDLE).await;
        let stream = s.clone(); // an open GET stream
        assert!(!HttpSession::expired(&s, tokio::time::Instant::now()));
        drop(stream);
        assert!(HttpSession::expired(&s, tokio::time::Instant::now()));
        s.touch();
        assert!(!HttpSession::expired(&s, tokio::time::Instant::now()));
    }

    #[test]
    fn loopback_origins_pass_and_others_need_listing() {
        assert!(origin_allowed("http://localhost:3000", &[]));
        assert!(origin_allowed("http://127.0.0.1:8080", &[]));
        assert!(origin_allowed("http://[::1]:8080", &[]));
        assert!(!origin_allowed("https://evil.example", &[]));
        assert!(origin_allowed(
            "https://app.example.com/",
            &["https://app.example.com".into()]
        ));
        assert!(!origin_allowed("null", &[]));
    }
}
