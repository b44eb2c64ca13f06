//! One live JSON-RPC connection to an upstream server: newline-delimited
//! messages over a stdio child's pipes (or Streamable HTTP POSTs, see
//! `upstream_http.rs`), requests matched to responses by
//! id, progress tokens mapped back to the caller, cancellation on drop.
//!
//! Why our own line transport, and no `rmcp`: the gateway is a transparent
//! proxy. It forwards arbitrary tools, resources and prompts it does not
//! know at compile time, rewrites names and progress tokens, must own the
//! child process (process group, stop ladder, restart — rmcp's child-process
//! transport only closes stdin and kills), must skip non-JSON lines instead
//! of failing the session, and must keep the request ids it gives upstream.
//! rmcp's `RunningService` owns its transport and answers with typed
//! handlers, so every message would be decoded into rmcp's types and encoded
//! again, and unknown fields of newer revisions would be at risk. Messages
//! are therefore `serde_json::Value`; the few protocol constants (revisions,
//! `_meta` keys, error codes) are in `upstream.rs`, `hub.rs` and `errors.rs`.
//! Interoperability is tested against the official Python SDK (client) and
//! the reference TypeScript server, in both protocol eras.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

/// What an upstream answered: `Ok(result)` or `Err(error object)`.
pub type Answer = Result<Value, Value>;

/// Where a caller's progress notifications go, with the caller's own token.
pub struct ProgressRoute {
    pub to: mpsc::UnboundedSender<Value>,
    pub token: Value,
}

pub struct Conn {
    out: mpsc::UnboundedSender<String>,
    pending: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    progress: Mutex<HashMap<String, ProgressRoute>>,
    next: AtomicU64,
    /// `_meta` keys every request carries (2026-07-28 servers).
    envelope: Mutex<Option<serde_json::Map<String, Value>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The connection is gone (the server exited or is being replaced).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lost;

impl Conn {
    /// A connection writing lines to `out` (the stdin writer's queue).
    pub fn new(out: mpsc::UnboundedSender<String>) -> Arc<Self> {
        Arc::new(Self {
            out,
            pending: Mutex::default(),
            progress: Mutex::default(),
            next: AtomicU64::new(1),
            envelope: Mutex::default(),
        })
    }

    fn send(&self, msg: &Value) -> Result<(), Lost> {
        self.out.send(msg.to_string()).map_err(|_| Lost)
    }

    /// From now on every request carries these `_meta` keys (a stateless-era server).
    pub fn set_envelope(&self, meta: Value) {
        *lock(&self.envelope) = meta.as_object().cloned();
    }

    /// Our answer to a request the server sent us.
    pub fn reply(&self, msg: &Value) {
        let _ = self.send(msg);
    }

    pub fn notify(&self, method: &str, params: Value) {
        let _ = self.send(&json!({"jsonrpc": "2.0", "method": method, "params": params}));
    }

    /// Sends a request; the returned call answers it, and tells the server
    /// `notifications/cancelled` if dropped before the answer came.
    pub fn start(self: &Arc<Self>, method: &str, params: Value) -> Result<Call, Lost> {
        self.start_with(method, params, None)
    }

    /// Like [`Conn::start`]; with `progress`, the request's
    /// `_meta.progressToken` becomes ours and the server's progress for it
    /// goes to `progress.to` under the caller's token.
    pub fn start_with(
        self: &Arc<Self>,
        method: &str,
        mut params: Value,
        progress: Option<ProgressRoute>,
    ) -> Result<Call, Lost> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id, tx);
        let mut call = Call {
            conn: self.clone(),
            id,
            rx: Some(rx),
            progress: None,
        };
        if let Some(route) = progress {
            let token = format!("hm-{id}");
            params["_meta"]["progressToken"] = Value::String(token.clone());
            lock(&self.progress).insert(token.clone(), route);
            call.progress = Some(token);
        }
        if let Some(envelope) = lock(&self.envelope).as_ref() {
            if !params.is_object() {
                params = json!({});
            }
            if !params["_meta"].is_object() {
                params["_meta"] = json!({});
            }
            for (k, v) in envelope {
                params["_meta"][k] = v.clone();
            }
        }
        let msg = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        if self.send(&msg).is_err() {
            return Err(Lost);
        }
        Ok(call)
    }

    /// A request answered without cancellation handling (handshake, lists).
    pub async fn request(self: &Arc<Self>, method: &str, params: Value) -> Result<Answer, Lost> {
        self.start(method, params)?.answer().await
    }

    /// A response line from the server.
    pub fn answered(&self, msg: &Value) {
        let Some(id) = msg.get("id").and_then(Value::as_u64) else {
            tracing::debug!(%msg, "response with an id we never sent");
            return;
        };
        let Some(tx) = lock(&self.pending).remove(&id) else {
            return; // cancelled or timed out meanwhile
        };
        let answer = match (msg.get("result"), msg.get("error")) {
            (Some(r), _) => Ok(r.clone()),
            (None, Some(e)) => Err(e.clone()),
            (None, None) => Err(json!({"code": -32603, "message": "response without result"})),
        };
        let _ = tx.send(answer);
    }

    /// A `notifications/progress` from the server: to the caller who owns the token.
    pub fn progress(&self, params: &Value) {
        let Some(token) = params.get("progressToken").and_then(Value::as_str) else {
            return;
        };
        if let Some(route) = lock(&self.progress).get(token) {
            let mut params = params.clone();
            params["progressToken"] = route.token.clone();
            let _ = route.to.send(json!({
                "jsonrpc": "2.0", "method": "notifications/progress", "params": params
            }));
        }
    }

    /// Fails every pending request: the server is gone.
    pub fn close(&self) {
        lock(&self.pending).clear();
        lock(&self.progress).clear();
    }

    pub fn in_flight(&self) -> usize {
        lock(&self.pending).len()
    }
}

/// One request in flight upstream.
pub struct Call {
    conn: Arc<Conn>,
    pub id: u64,
    rx: Option<oneshot::Receiver<Answer>>,
    progress: Option<String>,
}

impl Call {
    pub async fn answer(mut self) -> Result<Answer, Lost> {
        let rx = self.rx.as_mut().expect("answered once");
        // Dropped while waiting: `rx` is still set, so Drop cancels upstream.
        let answer = rx.await.map_err(|_| Lost);
        self.rx = None;
        self.done();
        answer
    }

    fn done(&mut self) {
        if let Some(token) = self.progress.take() {
            lock(&self.conn.progress).remove(&token);
        }
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        self.done();
        if self.rx.is_some() && lock(&self.conn.pending).remove(&self.id).is_some() {
            // Not answered: the caller gave up (timeout, cancellation, gone).
            self.conn.notify(
                "notifications/cancelled",
                json!({"requestId": self.id, "reason": "cancelled by the gateway"}),
            );
        }
    }
}
