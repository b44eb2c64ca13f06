//! `harbormaster mcp` when a harbor already runs for the config: stdio on
//! one side, the harbor's MCP front on `admin.sock` (Streamable HTTP at
//! `mcp::front_http::BRIDGE_PATH`) on the other. The caller is
//! `[mcp] stdio_client`; stdout carries only MCP messages.
//!
//! Each request is its own POST (so a slow call never holds up the next);
//! until the session exists, messages go one at a time, in order. The
//! session's GET stream brings list-changed notices. At EOF on stdin the
//! requests in flight finish, then the session is deleted.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::lifecycle::runtime_dir;
use crate::mcp::front_http::BRIDGE_PATH;

type Out = mpsc::UnboundedSender<Value>;

struct Bridge {
    socket: PathBuf,
    session: Mutex<Option<String>>,
}

/// Bridges stdin/stdout to the harbor whose runtime dir is `dir`.
pub async fn run(dir: &Path) -> anyhow::Result<()> {
    let bridge = Arc::new(Bridge {
        socket: dir.join(runtime_dir::SOCKET),
        session: Mutex::new(None),
    });
    let (out, mut rx) = mpsc::unbounded_channel::<Value>();
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(msg) = rx.recv().await {
            let line = format!("{msg}\n");
            if stdout.write_all(line.as_bytes()).await.is_err() || stdout.flush().await.is_err() {
                return;
            }
        }
    });
    let tasks = TaskTracker::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut listening = false;
    while let Some(line) = lines.next_line().await? {
        let Ok(msg) = serde_json::from_str::<Value>(&line) else {
            let _ = out.send(json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "parse error"}}));
            continue;
        };
        if bridge.session().is_none() {
            bridge.post(msg, &out).await;
        } else {
            let (b, o) = (bridge.clone(), out.clone());
            tasks.spawn(async move { b.post(msg, &o).await });
        }
        if !listening && bridge.session().is_some() {
            listening = true;
            let (b, o) = (bridge.clone(), out.clone());
            tokio::spawn(async move { b.listen(&o).await });
        }
    }
    tasks.close();
    tasks.wait().await;
    if bridge.session().is_some() {
        let _ = bridge.send("DELETE", None).await;
    }
    drop(out);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), writer).await;
    Ok(())
}

impl Bridge {
    fn session(&self) -> Option<String> {
        self.session
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    async fn send(
        &self,
        method: &str,
        body: Option<&Value>,
    ) -> Result<hyper::Response<hyper::body::Incoming>, String> {
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|e| format!("the harbor is gone ({e})"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(BRIDGE_PATH)
            .header("host", "localhost")
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json");
        if let Some(id) = self.session() {
            req = req.header("mcp-session-id", id);
        }
        let modern = body.is_some_and(|b| {
            b["params"]["_meta"][crate::mcp::PROTOCOL_VERSION_META] == "2026-07-28"
                || b["method"] == "server/discover"
        });
        if modern {
            req = req.header("mcp-protocol-version", "2026-07-28");
        }
        let bytes = body.map_or(Bytes::new(), |b| Bytes::from(b.to_string()));
        let req = req.body(Full::new(bytes)).map_err(|e| e.to_string())?;
        sender.send_request(req).await.map_err(|e| e.to_string())
    }

    /// One message to the front; what comes back goes to stdout.
    async fn post(&self, msg: Value, out: &Out) {
        let id = msg.get("id").cloned();
        let res = match self.send("POST", Some(&msg)).await {
            Ok(res) => res,
            Err(why) => {
                if let Some(id) = id {
                    let _ = out.send(json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32015, "message": format!("harbormaster is unavailable: {why}"), "data": {"reason": "unavailable"}}}));
                }
                return;
            }
        };
        if let Some(sid) = res
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            *self.session.lock().unwrap_or_else(|p| p.into_inner()) = Some(sid.to_string());
        }
        let status = res.status();
        relay(res, out).await;
        if !status.is_success() {
            if let Some(id) = id {
                let _ = out.send(json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32600, "message": format!("the harbor answered HTTP {status}")}}));
            }
        }
    }

    /// The session's GET stream of notices.
    async fn listen(&self, out: &Out) {
        if let Ok(res) = self.send("GET", None).await {
            if res.status().is_success() {
                relay(res, out).await;
            }
        }
    }
}

/// Writes a JSON answer, or each SSE event's data as it arrives.
async fn relay(res: hyper::Response<hyper::body::Incoming>, out: &Out) {
    let sse = res
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("text/event-stream"));
    let mut body = res.into_body();
    let mut buf = String::new();
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.push_str(&String::from_utf8_lossy(&data));
        if sse {
            for data in crate::mcp::sse::take_events(&mut buf) {
                if let Ok(v) = serde_json::from_str::<Value>(&data) {
                    let _ = out.send(v);
                }
            }
        }
    }
    if !sse {
        if let Ok(v) = serde_json::from_str::<Value>(&buf) {
            if v.get("jsonrpc").is_some() {
                let _ = out.send(v);
            }
        }
    }
}
