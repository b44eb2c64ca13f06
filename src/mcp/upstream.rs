//! An upstream stdio MCP server, supervised like an app: its own process
//! group, stderr to `state_dir/logs/mcp-NAME.log`, restart by `restart`
//! policy with backoff and budget (`supervisor::restart`), and the stop
//! ladder close stdin → `stop.timeout` → SIGTERM to the group → the same
//! again → SIGKILL (`supervisor::process_group`).
//!
//! A line on its stdout that is not JSON is logged and skipped. At each
//! start the era is detected (`server/discover`, falling back to
//! `initialize` on an error), then tools, resources and prompts are listed;
//! the server is `ready` once that is done. Every state change pokes
//! `changed`, which rebuilds the catalog (`hub.rs`).

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::conn::Conn;
use crate::config::{McpServer, McpTransport, StdioServer};
use crate::health::breaker::Breaker;
use crate::supervisor::output::{AppLog, LogLine, Stream};
use crate::supervisor::process_group;
use crate::supervisor::restart::{Decision, End, RestartTracker};
use crate::supervisor::state::Exit;

/// The newest protocol revision of the sessionful era, which we speak to
/// servers that do not know `server/discover`.
pub const SESSION_ERA: &str = "2025-11-25";
/// The stateless era (`server/discover`).
pub const STATELESS_ERA: &str = "2026-07-28";
/// How long a server may take to answer its handshake and first lists.
pub(super) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long an old server may take to refuse `server/discover`.
const DISCOVER_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerState {
    Starting,
    Ready,
    Restarting,
    /// Not restarted any more (policy or budget); `reason` says why.
    Failed,
    Stopping,
    Stopped,
}

impl ServerState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Restarting => "restarting",
            Self::Failed => "failed",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
        }
    }
}

/// What the server offers while it is ready.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Lists {
    pub tools: Vec<Value>,
    pub resources: Vec<Value>,
    pub templates: Vec<Value>,
    pub prompts: Vec<Value>,
}

#[derive(Debug, Clone)]
pub struct Snapshot {
    pub state: ServerState,
    pub lists: Arc<Lists>,
    /// The protocol revision agreed on at the last start.
    pub protocol: Option<String>,
    pub pid: Option<i32>,
    pub restarts: u32,
    pub reason: Option<String>,
}

pub struct Upstream {
    pub config: McpServer,
    log: AppLog,
    state: watch::Sender<Snapshot>,
    pub(super) conn: Mutex<Option<Arc<Conn>>>,
    pub breaker: Mutex<Breaker>,
    pub(super) stop: CancellationToken,
    changed: OnChange,
    /// What the harbor lends: ready instances of apps, pid records.
    host: Host,
}

/// What a server gets from the harbor it runs in (nothing when the MCP
/// gateway is used as a library on its own).
#[derive(Clone, Default)]
pub struct Host {
    /// Finds a ready instance's port for an `app` server.
    pub apps: Option<AppResolver>,
    /// Where the supervisor's crash records go, so the guard (and the next
    /// start) stop a server that outlived a killed harbormaster.
    pub pids_dir: Option<std::path::PathBuf>,
}

/// A ready instance's port of a managed app, if it has one now.
pub type AppResolver = Arc<dyn Fn(&crate::config::AppName) -> Option<u16> + Send + Sync>;

/// Called (synchronously) after every change of a server's snapshot, so no
/// change is coalesced away: clients see a server leave and come back even
/// when the restart is quick.
pub type OnChange = Arc<dyn Fn() + Send + Sync>;

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Upstream {
    /// A server (not started yet); `changed` is notified on every change.
    pub fn new(
        config: McpServer,
        logs: &std::path::Path,
        changed: OnChange,
        host: Host,
    ) -> Arc<Self> {
        let log = AppLog::new(logs, &format!("mcp-{}", config.name));
        let breaker = Breaker::new(config.circuit_breaker.clone());
        Arc::new(Self {
            config,
            log,
            state: watch::channel(Snapshot {
                state: ServerState::Starting,
                lists: Arc::default(),
                protocol: None,
                pid: None,
                restarts: 0,
                reason: None,
            })
            .0,
            conn: Mutex::default(),
            breaker: Mutex::new(breaker),
            stop: CancellationToken::new(),
            changed,
            host,
        })
    }

    pub fn name(&self) -> &str {
        self.config.name.as_str()
    }

    pub fn snapshot(&self) -> Snapshot {
        self.state.borrow().clone()
    }

    pub fn watch(&self) -> watch::Receiver<Snapshot> {
        self.state.subscribe()
    }

    /// The live connection, while the server is ready.
    pub fn conn(&self) -> Option<Arc<Conn>> {
        lock(&self.conn).clone()
    }

    pub(super) fn update(&self, f: impl FnOnce(&mut Snapshot)) {
        self.state.send_modify(f);
        (self.changed)();
    }

    pub(super) fn set_state(&self, state: ServerState, reason: Option<String>) {
        self.update(|s| self.enter(s, state, reason));
    }

    fn enter(&self, s: &mut Snapshot, state: ServerState, reason: Option<String>) {
        if s.state != state {
            tracing::info!(event = "mcp_server_state", server = %self.name(), from = s.state.name(), to = state.name(), reason = reason.as_deref().unwrap_or(""));
        }
        s.state = state;
        if state != ServerState::Ready {
            s.lists = Arc::default();
        }
        if reason.is_some() || state == ServerState::Ready {
            s.reason = reason;
        }
    }

    /// Asks the server to stop (the stop ladder runs in its task).
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Supervises the server until [`Upstream::stop`]; returns once it is stopped.
    pub async fn run(self: Arc<Self>) {
        let restart = match &self.config.transport {
            McpTransport::Stdio(s) => s.restart.clone(),
            McpTransport::Http { .. } | McpTransport::App { .. } => {
                super::upstream_http::RECONNECT.clone()
            }
        };
        let mut tracker = RestartTracker::new(restart);
        loop {
            self.set_state(ServerState::Starting, None);
            let started = Instant::now();
            let end = match &self.config.transport {
                McpTransport::Stdio(stdio) => self.run_once(stdio).await,
                McpTransport::Http { url, headers } => self.run_http(url, headers).await,
                McpTransport::App { app, path } => self.run_app(app, path).await,
            };
            if self.stop.is_cancelled() {
                break;
            }
            let why = match end {
                End::Exited(exit) => format!("exited: {exit}"),
                End::NotStarted => self
                    .snapshot()
                    .reason
                    .unwrap_or_else(|| "did not start".into()),
                End::Unhealthy => "handshake failed or connection lost".into(),
            };
            match tracker.after_exit(end, started.elapsed(), Instant::now(), fastrand::f64()) {
                Decision::Restart { attempt, delay } => {
                    self.set_state(ServerState::Restarting, Some(why.clone()));
                    tracing::warn!(event = "mcp_server_restart", server = %self.name(), attempt, delay_ms = delay.as_millis() as u64, reason = %why);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = self.stop.cancelled() => break,
                    }
                    self.update(|s| s.restarts += 1);
                }
                Decision::Leave => {
                    self.set_state(ServerState::Failed, Some(why));
                    self.stop.cancelled().await;
                    break;
                }
                Decision::GiveUp { reason } => {
                    self.set_state(ServerState::Failed, Some(format!("{why}; {reason}")));
                    self.stop.cancelled().await;
                    break;
                }
            }
        }
        self.set_state(ServerState::Stopped, None);
    }

    pub(super) fn log_line(&self, stream: Stream, text: String) {
        let line = LogLine {
            at: SystemTime::now(),
            stream,
            text,
        };
        self.log.write(self.name(), &line);
    }

    /// One run of the process: spawn, handshake, serve, and the stop ladder.
    async fn run_once(self: &Arc<Self>, stdio: &StdioServer) -> End {
        let instance_id = format!("mcp-{}-{:08x}", self.name(), fastrand::u32(..));
        let mut cmd = tokio::process::Command::new(&stdio.command[0]);
        cmd.args(&stdio.command[1..])
            .current_dir(&stdio.working_dir)
            .envs(&stdio.env)
            .env("HARBORMASTER_MCP_SERVER", self.name())
            .env("HARBORMASTER_INSTANCE", &instance_id)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        crate::supervisor::die_with_parent(&mut cmd, nix::sys::signal::Signal::SIGTERM);
        let mut tracked = match crate::children::spawn_tracked(&mut cmd) {
            Ok(t) => t,
            Err(e) => {
                let why = format!("cannot start {}: {e}", stdio.command[0]);
                tracing::error!(event = "mcp_server_spawn_failed", server = %self.name(), error = %why);
                self.update(|s| s.reason = Some(why));
                return End::NotStarted;
            }
        };
        let pgid = tracked.pid;
        self.update(|s| s.pid = Some(pgid));
        let record = self.host.pids_dir.as_ref().map(|dir| {
            let rec = crate::supervisor::leftovers::PidRecord {
                app: format!("mcp-{}", self.name()),
                index: 0,
                instance_id: instance_id.clone(),
                pid: pgid,
                pgid,
                signal: "SIGTERM".into(),
                timeout_ms: stdio.stop_timeout.as_millis() as u64,
            };
            if let Err(e) = crate::supervisor::leftovers::record(dir, &rec) {
                tracing::warn!(server = %self.name(), error = %e, "cannot record pid for crash recovery");
            }
            dir.clone()
        });
        let (stdin, stdout, stderr) = (
            tracked.child.stdin.take().expect("piped"),
            tracked.child.stdout.take().expect("piped"),
            tracked.child.stderr.take().expect("piped"),
        );
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = Conn::new(tx);
        let close_stdin = CancellationToken::new();
        tokio::spawn(write_lines(stdin, rx, close_stdin.clone()));
        let this = self.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                this.log_line(Stream::Stderr, line);
            }
        });
        let reader = tokio::spawn(self.clone().read_lines(stdout, conn.clone()));

        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.handshake(&conn));
        let ended = tokio::select! {
            result = handshake => match result {
                Ok(Ok((protocol, lists))) => {
                    self.ready(&conn, protocol, lists);
                    None
                }
                Ok(Err(why)) => Some(self.unhealthy(why)),
                Err(_) => Some(self.unhealthy("no answer to the handshake within 30s".into())),
            },
            status = tracked.child.wait() => Some(End::Exited(status.map(Exit::from_status).unwrap_or(Exit::Code(-1)))),
            _ = self.stop.cancelled() => None,
        };
        let end = match ended {
            Some(End::Exited(exit)) => End::Exited(exit),
            Some(other) => {
                // Handshake failed: the process goes, the restart policy decides.
                close_stdin.cancel();
                process_group::terminate(
                    pgid,
                    nix::sys::signal::Signal::SIGTERM,
                    stdio.stop_timeout,
                )
                .await;
                let _ = tracked.child.wait().await;
                other
            }
            None => {
                tokio::select! {
                    status = tracked.child.wait() => End::Exited(status.map(Exit::from_status).unwrap_or(Exit::Code(-1))),
                    _ = self.stop.cancelled() => {
                        self.set_state(ServerState::Stopping, None);
                        self.stop_ladder(&mut tracked.child, pgid, stdio.stop_timeout, &close_stdin).await;
                        End::Exited(Exit::Code(0))
                    }
                }
            }
        };
        // Whatever the server started in its group goes with it.
        if !process_group::members(pgid).is_empty() {
            process_group::kill(pgid).await;
        }
        lock(&self.conn).take();
        conn.close();
        close_stdin.cancel();
        let _ = reader.await;
        if let Some(dir) = record {
            crate::supervisor::leftovers::forget(&dir, &instance_id);
        }
        if let End::Exited(exit) = end {
            if !self.stop.is_cancelled() {
                tracing::warn!(event = "mcp_server_exited", server = %self.name(), %exit);
            }
        }
        self.update(|s| s.pid = None);
        end
    }

    /// An `app` server: Streamable HTTP to one of the app's ready
    /// instances; when that instance goes (restart, rollout), the
    /// connection is lost and the next run picks a ready one.
    async fn run_app(self: &Arc<Self>, app: &crate::config::AppName, path: &str) -> End {
        let port = self.host.apps.as_ref().and_then(|find| find(app));
        let Some(port) = port else {
            let why = format!("app {app} has no ready instance");
            self.update(|s| s.reason = Some(why));
            return End::NotStarted;
        };
        let url = format!("http://127.0.0.1:{port}{path}");
        self.run_http(&url, &Default::default()).await
    }

    /// The handshake is done: calls go to `conn` from now on.
    pub(super) fn ready(&self, conn: &Arc<Conn>, protocol: String, lists: Lists) {
        *lock(&self.conn) = Some(conn.clone());
        // One change: whoever waits for the first start (`settled`) must
        // never see the protocol agreed while the server is not ready yet.
        self.update(|s| {
            s.protocol = Some(protocol);
            self.enter(s, ServerState::Ready, None);
            s.lists = Arc::new(lists);
        });
    }

    pub(super) fn unhealthy(&self, why: String) -> End {
        tracing::error!(event = "mcp_server_handshake_failed", server = %self.name(), reason = %why);
        self.update(|s| s.reason = Some(why));
        End::Unhealthy
    }

    /// close stdin → wait → SIGTERM to the group → wait → SIGKILL.
    async fn stop_ladder(
        &self,
        child: &mut tokio::process::Child,
        pgid: i32,
        timeout: Duration,
        close_stdin: &CancellationToken,
    ) {
        close_stdin.cancel();
        if tokio::time::timeout(timeout, child.wait()).await.is_err() {
            tracing::info!(event = "mcp_server_sigterm", server = %self.name(), "did not exit after stdin closed");
            let left =
                process_group::terminate(pgid, nix::sys::signal::Signal::SIGTERM, timeout).await;
            if !left.is_empty() {
                tracing::error!(server = %self.name(), ?left, "processes survived SIGKILL");
            }
        }
        let _ = child.wait().await;
        tracing::info!(event = "mcp_server_stopped", server = %self.name());
    }

    /// Era detection, then the lists.
    pub(super) async fn handshake(&self, conn: &Arc<Conn>) -> Result<(String, Lists), String> {
        let lost = |_| "exited during the handshake".to_string();
        let discover = tokio::time::timeout(
            DISCOVER_TIMEOUT,
            conn.request("server/discover", json!({ "_meta": client_meta() })),
        )
        .await;
        let (protocol, capabilities) = match discover {
            Ok(Ok(Ok(result))) => {
                conn.set_envelope(client_meta());
                (STATELESS_ERA.to_string(), result["capabilities"].clone())
            }
            Ok(Err(e)) => return Err(lost(e)),
            // -32601 (or no answer): an older server; initialize it.
            Ok(Ok(Err(_))) | Err(_) => {
                let params = json!({
                    "protocolVersion": SESSION_ERA,
                    "capabilities": {},
                    "clientInfo": { "name": "harbormaster", "version": env!("CARGO_PKG_VERSION") },
                });
                let result = conn
                    .request("initialize", params)
                    .await
                    .map_err(lost)?
                    .map_err(|e| format!("initialize failed: {e}"))?;
                conn.notify("notifications/initialized", json!({}));
                let version = result["protocolVersion"]
                    .as_str()
                    .unwrap_or(SESSION_ERA)
                    .to_string();
                (version, result["capabilities"].clone())
            }
        };
        let lists = fetch_lists(conn, &capabilities).await.map_err(lost)?;
        Ok((protocol, lists))
    }

    /// Reads the server's stdout until it closes.
    async fn read_lines(self: Arc<Self>, stdout: tokio::process::ChildStdout, conn: Arc<Conn>) {
        let mut lines = BufReader::new(stdout).lines();
        loop {
            let line = match lines.next_line().await {
                Ok(Some(line)) => line,
                Ok(None) => return,
                Err(e) => {
                    // Not UTF-8: skip it like any other garbage.
                    tracing::warn!(event = "mcp_server_garbage", server = %self.name(), error = %e, "unreadable line on stdout skipped");
                    continue;
                }
            };
            if line.trim().is_empty() {
                continue;
            }
            let msg: Value = match serde_json::from_str(&line) {
                Ok(v @ Value::Object(_)) => v,
                _ => {
                    tracing::warn!(event = "mcp_server_garbage", server = %self.name(), "non-JSON line on stdout skipped");
                    self.log_line(Stream::Stdout, line);
                    continue;
                }
            };
            self.dispatch(&conn, msg);
        }
    }

    pub(super) fn dispatch(self: &Arc<Self>, conn: &Arc<Conn>, msg: Value) {
        let method = msg.get("method").and_then(Value::as_str);
        match (method, msg.get("id")) {
            (None, Some(_)) => conn.answered(&msg),
            (Some(method), Some(id)) => {
                // A request from the server to us (the client).
                let reply = match method {
                    "ping" => json!({"jsonrpc": "2.0", "id": id, "result": {}}),
                    "roots/list" => json!({"jsonrpc": "2.0", "id": id, "result": {"roots": []}}),
                    _ => {
                        json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": format!("the gateway does not offer {method}")}})
                    }
                };
                conn.reply(&reply);
            }
            (Some("notifications/progress"), None) => conn.progress(&msg["params"]),
            (
                Some(
                    "notifications/tools/list_changed"
                    | "notifications/resources/list_changed"
                    | "notifications/prompts/list_changed",
                ),
                None,
            ) => {
                let (this, conn) = (self.clone(), conn.clone());
                tokio::spawn(async move { this.refresh(&conn).await });
            }
            (Some("notifications/message"), None) => {
                self.log_line(Stream::Stdout, format!("log: {}", msg["params"]));
            }
            _ => tracing::debug!(server = %self.name(), %msg, "notification ignored"),
        }
    }

    /// Lists again after the server said they changed.
    async fn refresh(&self, conn: &Arc<Conn>) {
        let caps = json!({"tools": {}, "resources": {}, "prompts": {}});
        if let Ok(lists) = fetch_lists(conn, &caps).await {
            if self.state.borrow().state == ServerState::Ready {
                self.update(|s| s.lists = Arc::new(lists));
            }
        }
    }
}

/// `_meta` a stateless-era request carries (protocol version, client info).
fn client_meta() -> Value {
    json!({
        "io.modelcontextprotocol/protocolVersion": STATELESS_ERA,
        "io.modelcontextprotocol/clientInfo": { "name": "harbormaster", "version": env!("CARGO_PKG_VERSION") },
        "io.modelcontextprotocol/clientCapabilities": {},
    })
}

/// Every page of `method`'s `key` list.
async fn list_all(
    conn: &Arc<Conn>,
    method: &str,
    key: &str,
) -> Result<Vec<Value>, super::conn::Lost> {
    let mut items = Vec::new();
    let mut cursor: Option<Value> = None;
    for _ in 0..1000 {
        let params = match &cursor {
            Some(c) => json!({ "cursor": c }),
            None => json!({}),
        };
        let Ok(page) = conn.request(method, params).await? else {
            break; // not offered: an empty list
        };
        items.extend(page[key].as_array().cloned().unwrap_or_default());
        match page.get("nextCursor") {
            Some(c) if !c.is_null() => cursor = Some(c.clone()),
            _ => break,
        }
    }
    Ok(items)
}

async fn fetch_lists(conn: &Arc<Conn>, caps: &Value) -> Result<Lists, super::conn::Lost> {
    let mut lists = Lists::default();
    if caps.get("tools").is_some() {
        lists.tools = list_all(conn, "tools/list", "tools").await?;
    }
    if caps.get("resources").is_some() {
        lists.resources = list_all(conn, "resources/list", "resources").await?;
        lists.templates = list_all(conn, "resources/templates/list", "resourceTemplates").await?;
    }
    if caps.get("prompts").is_some() {
        lists.prompts = list_all(conn, "prompts/list", "prompts").await?;
    }
    Ok(lists)
}

/// Writes queued lines to the server's stdin until `close` (then stdin closes).
async fn write_lines(
    mut stdin: tokio::process::ChildStdin,
    mut rx: mpsc::UnboundedReceiver<String>,
    close: CancellationToken,
) {
    loop {
        let line = tokio::select! {
            line = rx.recv() => match line { Some(l) => l, None => return },
            _ = close.cancelled() => return,
        };
        let ok = stdin.write_all(line.as_bytes()).await.is_ok()
            && stdin.write_all(b"\n").await.is_ok()
            && stdin.flush().await.is_ok();
        if !ok {
            return;
        }
    }
}
