//! The MCP gateway's core: the servers, the catalog built from the ready
//! ones, and the request dispatch every front shares. A front turns its
//! transport into [`Session`]s and JSON-RPC values and calls
//! [`McpGateway::handle`].

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::audit::{AuditSink, Caller, NoAudit};
use super::catalog;
use super::errors::{error_response, result_response, McpError};
use super::upstream::{ServerState, Upstream, SESSION_ERA, STATELESS_ERA};
use crate::config::McpConfig;

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

    /// Engages (`engage`) or clears the kill switch `target` (`*`, `SERVER`,
    /// `SERVER__TOOL`); the switches now engaged, or why `target` is wrong.
    fn kill(&self, _target: &str, _engage: bool) -> Result<Vec<String>, String> {
        Err("this gateway has no kill switches".into())
    }

    /// The kill switches engaged now.
    fn engaged(&self) -> Vec<String> {
        Vec::new()
    }

    /// The config was reloaded: rebuild from it (engaged switches stay).
    fn reconfigure(&self, _config: &crate::config::McpConfig) -> Result<(), String> {
        Ok(())
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
    pub(super) in_flight: Mutex<HashMap<String, CancellationToken>>,
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

pub(super) struct Shared {
    pub(super) config: RwLock<Arc<McpConfig>>,
    pub(super) servers: RwLock<BTreeMap<String, Arc<Upstream>>>,
    pub(super) catalog: RwLock<Arc<Catalog>>,
    /// `notifications/*/list_changed` for every session.
    pub(super) notices: broadcast::Sender<Value>,
    /// Bumped on every change of any server.
    pub(super) changes: tokio::sync::watch::Sender<u64>,
}

pub struct McpGateway {
    pub(super) host: RwLock<super::upstream::Host>,
    pub(super) shared: Arc<Shared>,
    pub(super) tasks: Mutex<HashMap<String, JoinHandle<()>>>,
    pub(super) logs: std::path::PathBuf,
    pub(super) policy: RwLock<Arc<dyn Policy>>,
    pub(super) audit: RwLock<Arc<dyn AuditSink>>,
    pub(super) accepting: AtomicBool,
    pub(super) in_flight: AtomicUsize,
    pub(super) idle: Notify,
}

pub(super) fn read<T: ?Sized>(l: &RwLock<Arc<T>>) -> Arc<T> {
    l.read().unwrap_or_else(|p| p.into_inner()).clone()
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counts a call in flight until dropped.
pub(super) struct InFlight<'a>(pub(super) &'a McpGateway);

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
    pub(super) fn rebuild(&self) {
        // Held while the snapshots are read: two servers changing at once
        // must not let the older view be written last.
        let mut current = self.catalog.write().unwrap_or_else(|p| p.into_inner());
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
            host: RwLock::default(),
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

    /// The policy stages in use (kill switches for the admin API).
    pub fn policy(&self) -> Arc<dyn Policy> {
        read(&self.policy)
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

    pub(super) fn server(&self, name: &str) -> Option<Arc<Upstream>> {
        self.shared
            .servers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
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
