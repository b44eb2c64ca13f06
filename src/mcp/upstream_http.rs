//! A `url` server: the same connection and handshake as a stdio server
//! (`conn.rs`, `upstream.rs`), over Streamable HTTP. Each outgoing message
//! is its own POST (concurrent); a JSON or SSE answer is fed to the same
//! dispatch as a stdio line. The session id from `initialize` goes on every
//! later request; the GET stream brings the server's notifications. A
//! refused connection or a lost session (404) ends the run: the server
//! reads as down (its tools leave the catalog) and is reconnected with
//! backoff ([`RECONNECT`]), like a stdio server is restarted.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::conn::Conn;
use super::upstream::{lock, ServerState, Upstream, HANDSHAKE_TIMEOUT};
use crate::config::{Backoff, RestartConfig, RestartPolicy};
use crate::supervisor::restart::End;

/// Reconnecting a `url` server: always, 100 ms doubling to 10 s, no budget.
pub static RECONNECT: LazyLock<RestartConfig> = LazyLock::new(|| RestartConfig {
    policy: RestartPolicy::Always,
    backoff: Backoff::try_new(Duration::from_millis(100), Duration::from_secs(10), 2.0)
        .expect("valid backoff"),
    max_restarts: u32::MAX,
    window: Duration::from_secs(60),
    reset_after: Duration::from_secs(30),
});

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Link {
    client: HttpClient,
    url: hyper::Uri,
    headers: BTreeMap<String, String>,
    session: Mutex<Option<String>>,
    version: Mutex<Option<String>>,
    /// Cancelled when the server cannot be reached or forgot the session.
    dead: CancellationToken,
}

impl Upstream {
    /// One connection to a Streamable HTTP server, until it is lost or stopped.
    pub(super) async fn run_http(
        self: &Arc<Self>,
        url: &str,
        headers: &BTreeMap<String, String>,
    ) -> End {
        let Ok(uri) = url.parse::<hyper::Uri>() else {
            return self.unhealthy(format!("invalid url {url}"));
        };
        let link = Arc::new(Link {
            client: Client::builder(TokioExecutor::new()).build_http(),
            url: uri,
            headers: headers.clone(),
            session: Mutex::default(),
            version: Mutex::default(),
            dead: CancellationToken::new(),
        });
        let (tx, mut rx) = mpsc::unbounded_channel::<String>();
        let conn = Conn::new(tx);
        let (this, l, c) = (self.clone(), link.clone(), conn.clone());
        let sender = tokio::spawn(async move {
            loop {
                let line = tokio::select! {
                    line = rx.recv() => match line { Some(line) => line, None => return },
                    _ = l.dead.cancelled() => return,
                };
                let (this, l, c) = (this.clone(), l.clone(), c.clone());
                tokio::spawn(async move { this.post(&l, &c, line).await });
            }
        });
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake(&conn));
        let end = tokio::select! {
            result = handshake => match result {
                Ok(Ok((protocol, lists))) => {
                    *lock(&link.version) = Some(protocol.clone());
                    self.ready(&conn, protocol, lists);
                    let (this, l, c) = (self.clone(), link.clone(), conn.clone());
                    tokio::spawn(async move { this.listen(&l, &c).await });
                    tokio::select! {
                        _ = link.dead.cancelled() => self.unhealthy("connection lost".into()),
                        _ = self.stop.cancelled() => {
                            self.set_state(ServerState::Stopping, None);
                            let _ = link.send(hyper::Method::DELETE, None, None).await;
                            End::Exited(crate::supervisor::state::Exit::Code(0))
                        }
                    }
                }
                Ok(Err(why)) => self.unhealthy(why),
                Err(_) => self.unhealthy("no answer to the handshake within 30s".into()),
            },
            _ = link.dead.cancelled() => self.unhealthy(format!("cannot reach {url}")),
            _ = self.stop.cancelled() => End::Exited(crate::supervisor::state::Exit::Code(0)),
        };
        link.dead.cancel();
        lock(&self.conn).take();
        conn.close();
        sender.abort();
        end
    }

    /// One outgoing message; whatever answers it goes to the dispatch.
    async fn post(self: &Arc<Self>, link: &Link, conn: &Arc<Conn>, line: String) {
        let msg: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        let id = msg
            .get("id")
            .filter(|_| msg.get("method").is_some())
            .cloned();
        let res = match link.send(hyper::Method::POST, Some(line), Some(&msg)).await {
            Ok(res) => res,
            Err(e) => {
                tracing::warn!(event = "mcp_server_unreachable", server = %self.name(), error = %e);
                link.dead.cancel();
                return;
            }
        };
        if let Some(sid) = res
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            *lock(&link.session) = Some(sid.to_string());
        }
        let status = res.status();
        if status == hyper::StatusCode::NOT_FOUND && lock(&link.session).is_some() {
            link.dead.cancel(); // the server forgot the session: start over
            return;
        }
        self.relay(res, conn).await;
        // Refused at the HTTP level (e.g. 400 with `"id": null`): the request
        // gets an error (a no-op if it was answered).
        if !status.is_success() {
            if let Some(id) = id {
                conn.answered(&json!({"id": id, "error": {"code": -32600, "message": format!("HTTP {status}")}}));
            }
        }
    }

    /// The session's GET stream: the server's notifications and requests.
    /// When an open stream ends, the server went away (or dropped us):
    /// the connection is over and the next run reconnects.
    async fn listen(self: &Arc<Self>, link: &Link, conn: &Arc<Conn>) {
        if let Ok(res) = link.send(hyper::Method::GET, None, None).await {
            if res.status().is_success() {
                self.relay(res, conn).await;
                link.dead.cancel();
            }
        }
    }

    /// Feeds a JSON or SSE answer to the dispatch; whether any message came.
    async fn relay(self: &Arc<Self>, res: hyper::Response<Incoming>, conn: &Arc<Conn>) -> bool {
        let sse = res
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|c| c.starts_with("text/event-stream"));
        let mut body = res.into_body();
        let (mut buf, mut any) = (String::new(), false);
        while let Some(Ok(frame)) = body.frame().await {
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.push_str(&String::from_utf8_lossy(&data));
            if sse {
                for data in super::sse::take_events(&mut buf) {
                    if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(&data) {
                        any = true;
                        self.dispatch(conn, v);
                    }
                }
            }
        }
        if !sse {
            if let Ok(v @ Value::Object(_)) = serde_json::from_str::<Value>(&buf) {
                any = true;
                self.dispatch(conn, v);
            }
        }
        any
    }
}

impl Link {
    async fn send(
        &self,
        method: hyper::Method,
        body: Option<String>,
        msg: Option<&Value>,
    ) -> Result<hyper::Response<Incoming>, String> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(self.url.clone())
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json");
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        if let Some(sid) = lock(&self.session).clone() {
            req = req.header("mcp-session-id", sid);
        }
        if let Some(v) = lock(&self.version).clone() {
            req = req.header("mcp-protocol-version", v);
        }
        if let Some(method) = msg.and_then(|m| m["method"].as_str()) {
            req = req.header("mcp-method", method);
        }
        let req = req
            .body(Full::new(body.map(Bytes::from).unwrap_or_default()))
            .map_err(|e| e.to_string())?;
        self.client.request(req).await.map_err(|e| e.to_string())
    }
}
