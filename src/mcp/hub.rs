//! The MCP gateway's core: the servers, the catalog built from the ready
//! ones, and the request dispatch every front shares. A front turns its
//! transport into [`Session`]s and JSON-RPC values and calls
//! [`McpGateway::handle`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, Notify};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::audit::{AuditSink, CallRecord, CallStatus, Caller, NoAudit};
use super::catalog;
use super::conn::{Lost, ProgressRoute};
use super::errors::{error_response, result_response, McpError};
use super::upstream::{ServerState, Upstream, SESSION_ERA, STATELESS_ERA};
use crate::config::{McpConfig, McpServer};
use crate::health::breaker::{Admission, BreakerState};

/// How long `initialize` waits for servers at their first start.
const SETTLE_LIMIT: Duration = Duration::from_secs(20);

/// Where a 2026-07-28 request names its protocol revision (`params._meta`).
pub const PROTOCOL_VERSION_META: &str = "io.modelcontextprotocol/protocolVersion";

/// Protocol revisions the fronts accept from clients.
pub const SUPPORTED: &[&str] = &[
    "2024-11-05",
    "2025-03-26",
    "2025-06-18",
    SESSION_ERA,
    STATELESS_ERA,
];

/// The policy stages before the breaker: kill switch → rate limit → access.
/// The default admits everything; the policy module plugs in its own with
/// [`McpGateway::set_policy`].
pub trait Policy: Send + Sync {
    /// May `caller` call `tool` (the exposed name) on `server` now?
    fn admit(&self, caller: &Caller, server: &str, tool: &str) -> Result<(), McpError>;

    /// Whether `caller` sees `tool` (exposed name) in `tools/list` (RBAC).
    fn visible(&self, _caller: &Caller, _tool: &str) -> bool {
        true
    }
}

pub struct AdmitAll;

impl Policy for AdmitAll {
    fn admit(&self, _: &Caller, _: &str, _: &str) -> Result<(), McpError> {
        Ok(())
    }
}

/// What clients are offered: every ready server's items, renamed.
#[derive(Debug, Default, PartialEq)]
pub struct Catalog {
    pub tools: Vec<Value>,
    pub resources: Vec<Value>,
    pub templates: Vec<Value>,
    pub prompts: Vec<Value>,
}

/// One client connection (stdio) or `Mcp-Session-Id` (HTTP).
pub struct Session {
    pub caller: Caller,
    /// Requests in flight, by JSON id, for `notifications/cancelled`.
    in_flight: Mutex<HashMap<String, CancellationToken>>,
    pub protocol: Mutex<Option<String>>,
}

impl Session {
    pub fn new(caller: Caller) -> Arc<Self> {
        Arc::new(Self {
            caller,
            in_flight: Mutex::default(),
            protocol: Mutex::default(),
        })
    }
}

struct Shared {
    config: RwLock<Arc<McpConfig>>,
    servers: RwLock<BTreeMap<String, Arc<Upstream>>>,
    catalog: RwLock<Arc<Catalog>>,
    /// `notifications/*/list_changed` for every session.
    notices: broadcast::Sender<Value>,
    /// Bumped on every change of any server.
    changes: tokio::sync::watch::Sender<u64>,
}

pub struct McpGateway {
    shared: Arc<Shared>,
    tasks: Mutex<HashMap<String, JoinHandle<()>>>,
    logs: std::path::PathBuf,
    policy: RwLock<Arc<dyn Policy>>,
    audit: RwLock<Arc<dyn AuditSink>>,
    accepting: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
}

fn read<T: ?Sized>(l: &RwLock<Arc<T>>) -> Arc<T> {
    l.read().unwrap_or_else(|p| p.into_inner()).clone()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts a call in flight until dropped.
struct InFlight<'a>(&'a McpGateway);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Shared {
    /// Rebuilds the catalog from the servers' snapshots; tells sessions
    /// which lists changed. Synchronous, so no change is coalesced away.
    fn rebuild(&self) {
        let config = read(&self.config);
        let sep = config.separator.as_str();
        let mut next = Catalog::default();
        for (name, server) in self
            .servers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let snap = server.snapshot();
            if snap.state != ServerState::Ready {
                continue;
            }
            let allow = &server.config.tools;
            next.tools
                .extend(catalog::rename_items(&snap.lists.tools, name, sep, allow));
            next.prompts
                .extend(catalog::rename_items(&snap.lists.prompts, name, sep, &[]));
            next.resources.extend(catalog::rename_resources(
                &snap.lists.resources,
                name,
                "uri",
            ));
            next.templates.extend(catalog::rename_resources(
                &snap.lists.templates,
                name,
                "uriTemplate",
            ));
        }
        let mut current = self.catalog.write().unwrap_or_else(|p| p.into_inner());
        let mut changed = Vec::new();
        if current.tools != next.tools {
            changed.push("notifications/tools/list_changed");
        }
        if current.prompts != next.prompts {
            changed.push("notifications/prompts/list_changed");
        }
        if current.resources != next.resources || current.templates != next.templates {
            changed.push("notifications/resources/list_changed");
        }
        *current = Arc::new(next);
        drop(current);
        self.changes.send_modify(|v| *v += 1);
        for method in changed {
            tracing::info!(event = "mcp_catalog_changed", list = method);
            let _ = self
                .notices
                .send(json!({"jsonrpc": "2.0", "method": method}));
        }
    }
}

impl McpGateway {
    /// A gateway for `config` (servers not started yet); server logs go to `logs`.
    pub fn new(config: McpConfig, logs: &std::path::Path) -> Arc<Self> {
        Arc::new(Self {
            shared: Arc::new(Shared {
                config: RwLock::new(Arc::new(config)),
                servers: RwLock::default(),
                catalog: RwLock::default(),
                notices: broadcast::channel(256).0,
                changes: tokio::sync::watch::channel(0).0,
            }),
            tasks: Mutex::default(),
            logs: logs.to_path_buf(),
            policy: RwLock::new(Arc::new(AdmitAll)),
            audit: RwLock::new(Arc::new(NoAudit)),
            accepting: AtomicBool::new(true),
            in_flight: AtomicUsize::new(0),
            idle: Notify::new(),
        })
    }

    pub fn config(&self) -> Arc<McpConfig> {
        read(&self.shared.config)
    }

    /// Plugs in the policy stages (kill switch, rate limit, RBAC).
    pub fn set_policy(&self, policy: Arc<dyn Policy>) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = policy;
    }

    /// Plugs in where call records go.
    pub fn set_audit(&self, sink: Arc<dyn AuditSink>) {
        *self.audit.write().unwrap_or_else(|p| p.into_inner()) = sink;
    }

    /// List-changed notices for sessions, from now on.
    pub fn notices(&self) -> broadcast::Receiver<Value> {
        self.shared.notices.subscribe()
    }

    pub fn catalog(&self) -> Arc<Catalog> {
        read(&self.shared.catalog)
    }

    pub fn servers(&self) -> Vec<Arc<Upstream>> {
        self.shared
            .servers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn server(&self, name: &str) -> Option<Arc<Upstream>> {
        self.shared
            .servers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }

    /// Starts every configured server.
    pub fn start(&self) {
        let config = self.config();
        for server in config.servers.values() {
            self.add_server(server.clone());
        }
    }

    fn add_server(&self, config: McpServer) {
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        let on_change = Arc::new(move || {
            if let Some(shared) = weak.upgrade() {
                shared.rebuild();
            }
        });
        let name = config.name.to_string();
        let upstream = Upstream::new(config, &self.logs, on_change);
        self.shared
            .servers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), upstream.clone());
        let task = tokio::spawn(upstream.run());
        lock(&self.tasks).insert(name, task);
    }

    /// Stops one server (its in-flight calls answered -32015) and waits.
    async fn remove_server(&self, name: &str) {
        let upstream = self
            .shared
            .servers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if let Some(u) = upstream {
            u.stop();
        }
        self.shared.rebuild();
        let task = lock(&self.tasks).remove(name);
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Applies a reloaded `[mcp]`: removed servers stop (after their calls
    /// in flight finish, bounded by `drain`), added ones start, changed ones
    /// are replaced. Returns (added, removed, replaced).
    pub async fn reload(
        &self,
        next: McpConfig,
        drain: Duration,
    ) -> (Vec<String>, Vec<String>, Vec<String>) {
        let old = self.config();
        *self
            .shared
            .config
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(next.clone());
        let (mut added, mut removed, mut replaced) = (Vec::new(), Vec::new(), Vec::new());
        for (name, server) in &old.servers {
            match next.servers.get(name) {
                None => removed.push(name.to_string()),
                Some(new) if new != server => replaced.push(name.to_string()),
                Some(_) => {}
            }
        }
        for name in next.servers.keys() {
            if !old.servers.contains_key(name) {
                added.push(name.to_string());
            }
        }
        for name in removed.iter().chain(&replaced) {
            if let Some(u) = self.server(name) {
                let deadline = Instant::now() + drain;
                while u.conn().is_some_and(|c| c.in_flight() > 0) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            self.remove_server(name).await;
        }
        for name in added.iter().chain(&replaced) {
            let server = next
                .servers
                .values()
                .find(|s| s.name.as_str() == name)
                .cloned();
            if let Some(server) = server {
                self.add_server(server);
            }
        }
        self.shared.rebuild();
        (added, removed, replaced)
    }

    /// Shutdown, first half: refuse new calls, wait for those in flight
    /// (at most until `deadline`). Returns whether they all finished.
    pub async fn drain(&self, deadline: Instant) -> bool {
        self.accepting.store(false, Ordering::Release);
        loop {
            let idle = self.idle.notified();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                return true;
            }
            tokio::select! {
                _ = idle => {}
                _ = tokio::time::sleep_until(deadline) => return self.in_flight.load(Ordering::Acquire) == 0,
            }
        }
    }

    /// Shutdown, second half: stop every server (stop ladders in parallel).
    pub async fn stop_servers(&self) {
        for server in self.servers() {
            server.stop();
        }
        let tasks: Vec<_> = lock(&self.tasks).drain().map(|(_, t)| t).collect();
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Waits (at most `limit`) until no server is still at its first
    /// start, so a client that lists tools right after connecting sees
    /// every server that can start.
    pub async fn settled(&self, limit: Duration) {
        let mut changes = self.shared.changes.subscribe();
        let deadline = Instant::now() + limit;
        loop {
            let first_start = self.servers().iter().any(|s| {
                let snap = s.snapshot();
                snap.state == ServerState::Starting && snap.restarts == 0
            });
            if !first_start {
                return;
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// Why `/ready` must wait: required servers that are not ready.
    pub fn not_ready(&self) -> Vec<String> {
        self.servers()
            .iter()
            .filter(|s| s.config.required)
            .filter_map(|s| {
                let snap = s.snapshot();
                (snap.state != ServerState::Ready)
                    .then(|| format!("mcp server {} is {}", s.name(), snap.state.name()))
            })
            .collect()
    }

    /// The data behind `GET /v1/mcp`.
    pub fn status(&self) -> Value {
        let config = self.config();
        let now = Instant::now();
        let servers: Vec<Value> = self
            .servers()
            .iter()
            .map(|s| {
                let snap = s.snapshot();
                let breaker = lock(&s.breaker).state(now);
                let tools = catalog::rename_items(&snap.lists.tools, s.name(), &config.separator, &s.config.tools);
                json!({
                    "name": s.name(),
                    "transport": match &s.config.transport {
                        crate::config::McpTransport::Stdio(_) => "stdio",
                        crate::config::McpTransport::Http { .. } => "http",
                        crate::config::McpTransport::App { .. } => "app",
                    },
                    "state": snap.state.name(),
                    "required": s.config.required,
                    "breaker": breaker.name(),
                    "tools": tools.len(),
                    "tool_names": tools.iter().filter_map(|t| t["name"].as_str()).collect::<Vec<_>>(),
                    "restarts": snap.restarts,
                    "pid": snap.pid,
                    "protocol": snap.protocol,
                    "in_flight": s.conn().map_or(0, |c| c.in_flight()),
                    "reason": snap.reason,
                    "killed": s.config.killed,
                })
            })
            .collect();
        json!({
            "servers": servers,
            "kill_switch": config.kill_switch,
            "in_flight": self.in_flight.load(Ordering::Acquire),
            "accepting": self.accepting.load(Ordering::Acquire),
        })
    }

    /// One message from a client. Returns the response to send, if any;
    /// `out` carries messages about this request (progress) before it.
    pub async fn handle(
        &self,
        session: &Session,
        msg: Value,
        out: &mpsc::UnboundedSender<Value>,
    ) -> Option<Value> {
        let Some(obj) = msg.as_object() else {
            return Some(error_response(
                &Value::Null,
                &McpError::invalid_request("not a JSON-RPC object"),
            ));
        };
        let id = obj.get("id").cloned();
        let Some(method) = obj.get("method").and_then(Value::as_str) else {
            return None; // a response to us: we send clients no requests
        };
        let params = obj.get("params").cloned().unwrap_or(json!({}));
        let Some(id) = id else {
            self.notification(session, method, &params);
            return None;
        };
        let modern = params["_meta"][PROTOCOL_VERSION_META].as_str() == Some(STATELESS_ERA)
            || lock(&session.protocol).as_deref() == Some(STATELESS_ERA);
        let cacheable = matches!(
            method,
            "server/discover"
                | "tools/list"
                | "prompts/list"
                | "resources/list"
                | "resources/templates/list"
        );
        let key = id.to_string();
        let cancel = CancellationToken::new();
        lock(&session.in_flight).insert(key.clone(), cancel.clone());
        let answer = tokio::select! {
            a = self.request(session, method, params, out) => Some(a),
            _ = cancel.cancelled() => None,
        };
        lock(&session.in_flight).remove(&key);
        answer.map(|a| match a {
            Ok(mut result) => {
                if modern && result.is_object() {
                    // 2026-07-28: every result says whether it is complete;
                    // list results carry caching directives.
                    if result.get("resultType").is_none() {
                        result["resultType"] = json!("complete");
                    }
                    if cacheable {
                        result["ttlMs"] = json!(0);
                        result["cacheScope"] = json!("private");
                    }
                }
                result_response(&id, result)
            }
            Err(e) => error_response(&id, &e),
        })
    }

    fn notification(&self, session: &Session, method: &str, params: &Value) {
        if method == "notifications/cancelled" {
            let key = params
                .get("requestId")
                .map(Value::to_string)
                .unwrap_or_default();
            if let Some(token) = lock(&session.in_flight).get(&key) {
                tracing::debug!(request = %key, "cancelled by the client");
                token.cancel();
            }
        }
    }

    async fn request(
        &self,
        session: &Session,
        method: &str,
        params: Value,
        out: &mpsc::UnboundedSender<Value>,
    ) -> Result<Value, McpError> {
        let catalog = self.catalog();
        match method {
            "initialize" => {
                self.settled(SETTLE_LIMIT).await;
                let asked = params["protocolVersion"].as_str().unwrap_or(SESSION_ERA);
                let version = if SUPPORTED.contains(&asked) && asked != STATELESS_ERA {
                    asked
                } else {
                    SESSION_ERA
                };
                *lock(&session.protocol) = Some(version.to_string());
                Ok(json!({
                    "protocolVersion": version,
                    "capabilities": capabilities(),
                    "serverInfo": server_info(),
                    "instructions": "Tools of every MCP server behind this harbormaster, named SERVER__TOOL.",
                }))
            }
            "server/discover" => {
                self.settled(SETTLE_LIMIT).await;
                Ok(json!({
                "supportedVersions": SUPPORTED,
                "capabilities": capabilities(),
                "serverInfo": server_info(),
                }))
            }
            "ping" => Ok(json!({})),
            "logging/setLevel" => Ok(json!({})),
            "tools/list" => {
                no_cursor(&params)?;
                let tools: Vec<Value> = catalog
                    .tools
                    .iter()
                    .filter(|t| {
                        let name = t["name"].as_str().unwrap_or("");
                        read(&self.policy).visible(&session.caller, name)
                    })
                    .cloned()
                    .collect();
                Ok(json!({ "tools": tools }))
            }
            "prompts/list" => no_cursor(&params).map(|_| json!({ "prompts": catalog.prompts })),
            "resources/list" => {
                no_cursor(&params).map(|_| json!({ "resources": catalog.resources }))
            }
            "resources/templates/list" => {
                no_cursor(&params).map(|_| json!({ "resourceTemplates": catalog.templates }))
            }
            "tools/call" => self.call_tool(session, params, out).await,
            "prompts/get" => {
                let sep = self.config().separator.clone();
                let name = params["name"].as_str().unwrap_or("");
                let (server, prompt) = catalog::split(name, &sep)
                    .ok_or_else(|| McpError::invalid_params(format!("unknown prompt: {name}")))?;
                let mut params = params.clone();
                params["name"] = json!(prompt);
                self.forward(server, "prompts/get", params, out).await
            }
            "resources/read" => {
                let uri = params["uri"].as_str().unwrap_or("");
                let (server, inner) = catalog::split_uri(uri)
                    .ok_or_else(|| McpError::invalid_params(format!("unknown resource: {uri}")))?;
                let mut params = params.clone();
                params["uri"] = json!(inner);
                let mut result = self.forward(server, "resources/read", params, out).await?;
                for c in result["contents"].as_array_mut().into_iter().flatten() {
                    if let Some(u) = c["uri"].as_str() {
                        c["uri"] = json!(catalog::expose_uri(server, u));
                    }
                }
                Ok(result)
            }
            other => Err(McpError::method_not_found(other)),
        }
    }

    /// A request to one server as it is (names already mapped back).
    async fn forward(
        &self,
        server: &str,
        method: &str,
        params: Value,
        out: &mpsc::UnboundedSender<Value>,
    ) -> Result<Value, McpError> {
        let upstream = self
            .server(server)
            .ok_or_else(|| McpError::invalid_params(format!("unknown server: {server}")))?;
        let conn = upstream
            .conn()
            .ok_or_else(|| McpError::unavailable(server, upstream.snapshot().state.name()))?;
        let timeout = self.config().call_timeout;
        let progress = progress_route(&params, out);
        let call = conn
            .start_with(method, params, progress)
            .map_err(|Lost| McpError::unavailable(server, "connection lost"))?;
        match tokio::time::timeout(timeout, call.answer()).await {
            Err(_) => Err(McpError::timed_out(server, timeout)),
            Ok(Err(Lost)) => Err(McpError::unavailable(server, "connection lost")),
            Ok(Ok(Ok(result))) => Ok(result),
            Ok(Ok(Err(e))) => Err(McpError::upstream(&e)),
        }
    }

    /// Where the policy stages run, in order: kill switch → rate limit →
    /// access. Called before the breaker.
    pub fn admit(&self, caller: &Caller, server: &str, tool: &str) -> Result<(), McpError> {
        read(&self.policy).admit(caller, server, tool)
    }

    async fn call_tool(
        &self,
        session: &Session,
        params: Value,
        out: &mpsc::UnboundedSender<Value>,
    ) -> Result<Value, McpError> {
        let started = Instant::now();
        let request_bytes = params.to_string().len() as u64;
        let name = params["name"].as_str().unwrap_or("").to_string();
        let mut server_name = String::new();
        let result = if self.accepting.load(Ordering::Acquire) {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
            let _counted = InFlight(self);
            self.call_tool_inner(session, &name, params, out, &mut server_name)
                .await
        } else {
            Err(McpError::unavailable("harbormaster", "shutting down"))
        };
        let (status, response_bytes, error) = match &result {
            Ok(r) if r["isError"].as_bool() == Some(true) => {
                (CallStatus::ToolError, r.to_string().len() as u64, None)
            }
            Ok(r) => (CallStatus::Ok, r.to_string().len() as u64, None),
            Err(e) => (e.status(), 0, Some(e.message.clone())),
        };
        // The audit record: one per call, also the refused ones.
        let record = CallRecord {
            ts: SystemTime::now(),
            client: session.caller.client.clone(),
            front: session.caller.front,
            session: session.caller.session.clone(),
            server: server_name,
            tool: name,
            status,
            latency: started.elapsed(),
            request_bytes,
            response_bytes,
            error,
        };
        let sink = read(&self.audit);
        sink.record(record).await;
        result
    }

    async fn call_tool_inner(
        &self,
        session: &Session,
        name: &str,
        params: Value,
        out: &mpsc::UnboundedSender<Value>,
        server_name: &mut String,
    ) -> Result<Value, McpError> {
        let config = self.config();
        let (server, tool) =
            catalog::split(name, &config.separator).ok_or_else(|| McpError::unknown_tool(name))?;
        let upstream = self
            .server(server)
            .ok_or_else(|| McpError::unknown_tool(name))?;
        *server_name = server.to_string();
        if !catalog::allowed(&upstream.config.tools, tool) {
            return Err(McpError::unknown_tool(name));
        }
        self.admit(&session.caller, server, name)?;
        let snap = upstream.snapshot();
        if snap.state != ServerState::Ready {
            return Err(McpError::unavailable(server, snap.state.name()));
        }
        if !snap.lists.tools.iter().any(|t| t["name"] == tool) {
            return Err(McpError::unknown_tool(name));
        }
        let now = Instant::now();
        let (admission, transition) = lock(&upstream.breaker).admit(now);
        log_transition(server, transition);
        if let Admission::Deny { retry_after } = admission {
            return Err(McpError::circuit_open(server, retry_after));
        }
        let Some(conn) = upstream.conn() else {
            return Err(McpError::unavailable(server, "restarting"));
        };
        let mut params = params;
        params["name"] = json!(tool);
        let progress = progress_route(&params, out);
        let timeout = config.call_timeout;
        let outcome = match conn.start_with("tools/call", params, progress) {
            Err(Lost) => Err(McpError::unavailable(server, "connection lost")),
            // Dropping the call on timeout sends notifications/cancelled upstream.
            Ok(call) => match tokio::time::timeout(timeout, call.answer()).await {
                Err(_) => Err(McpError::timed_out(server, timeout)),
                Ok(Err(Lost)) => Err(McpError::unavailable(
                    server,
                    "the server exited during the call",
                )),
                Ok(Ok(Ok(result))) => Ok(result),
                Ok(Ok(Err(e))) => Err(McpError::upstream(&e)),
            },
        };
        // Transport errors and timeouts count against the breaker.
        let failed = matches!(&outcome, Err(e) if e.code == super::errors::TIMED_OUT || e.code == super::errors::UNAVAILABLE);
        let transition = lock(&upstream.breaker).record(!failed, Instant::now());
        log_transition(server, transition);
        outcome
    }
}

fn log_transition(server: &str, t: Option<crate::health::breaker::Transition>) {
    if let Some(t) = t {
        let level_open = matches!(t.to, BreakerState::Open { .. });
        if level_open {
            tracing::warn!(
                event = "mcp_breaker",
                server,
                from = t.from.name(),
                to = t.to.name()
            );
        } else {
            tracing::info!(
                event = "mcp_breaker",
                server,
                from = t.from.name(),
                to = t.to.name()
            );
        }
    }
}

fn progress_route(params: &Value, out: &mpsc::UnboundedSender<Value>) -> Option<ProgressRoute> {
    let token = params.get("_meta")?.get("progressToken")?;
    Some(ProgressRoute {
        to: out.clone(),
        token: token.clone(),
    })
}

/// Lists are one page; a cursor can only be one we never gave.
fn no_cursor(params: &Value) -> Result<(), McpError> {
    match params.get("cursor") {
        Some(c) if !c.is_null() => Err(McpError::invalid_params("invalid cursor")),
        _ => Ok(()),
    }
}

fn capabilities() -> Value {
    json!({
        "tools": { "listChanged": true },
        "prompts": { "listChanged": true },
        "resources": { "listChanged": true },
        "logging": {},
    })
}

fn server_info() -> Value {
    json!({ "name": "harbormaster", "version": env!("CARGO_PKG_VERSION") })
}
