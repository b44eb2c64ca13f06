//! The harbor context: the one owner of the running config, the supervisor,
//! the gateway, route publishing, the change queue, the event stream and the
//! shutdown phases. Admin reaches it only through [`admin::Control`];
//! embedders through [`super::Harbor`]. A new front (MCP, audit, metrics)
//! is added here, once.
//!
//! Invariants: route tables are published only by `publish_routes` (under
//! its lock); reloads and restarts apply one at a time through `changes`, each
//! reading the config when its turn comes, so a restart queued behind a
//! reload restarts the new definition.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::api::{Event, EventKind, ReloadReport};
use crate::admin::{self, HarborError};
use crate::config::{AppConfig, AppKind, AppName, Config};
use crate::gateway::Gateway;
use crate::health::upstreams::ExternalHealth;
use crate::supervisor::state::State;
use crate::supervisor::Supervisor;

/// How long replacements may take to become ready, unless a restart says.
pub const READY_TIMEOUT: Duration = Duration::from_secs(120);

/// Where the harbor is in its life; published on a watch channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Running,
    /// `/ready` is 503, listeners close, in-flight work finishes.
    Draining,
    /// Apps stop in reverse dependency order.
    StoppingApps,
    /// Background tasks and servers end, runtime files go.
    Flushing,
    Stopped,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Draining => "draining",
            Self::StoppingApps => "stopping_apps",
            Self::Flushing => "flushing",
            Self::Stopped => "stopped",
        }
    }
}

pub struct HarborCtx {
    pub(super) config: ArcSwap<Config>,
    pub(super) supervisor: Supervisor,
    pub(super) gateway: Arc<Gateway>,
    pub(super) externals: Arc<ExternalHealth>,
    /// Held while a route table is built and published (`routing.rs`).
    pub(super) routes: Mutex<()>,
    events: broadcast::Sender<Event>,
    pub(super) phase: watch::Sender<Phase>,
    /// Cancelled to ask for the graceful shutdown.
    pub(super) shutdown_requested: CancellationToken,
    /// Ends background tasks (routing, monitors, admin, watchers).
    pub(super) cancel: CancellationToken,
    /// Parent of every listener's token.
    pub(super) stop_accepting: CancellationToken,
    /// The change queue: one reload or restart at a time.
    pub(super) changes: tokio::sync::Mutex<()>,
    /// Apps with a restart queued or under way (`None`), or why the last one failed.
    restarts: Mutex<HashMap<AppName, Option<String>>>,
    pub(super) last_reload: Mutex<Option<ReloadReport>>,
    listeners: Mutex<HashMap<SocketAddr, CancellationToken>>,
    /// Every gateway listener's task, also those a reload added.
    pub(super) serving: TaskTracker,
    pub(super) background: TaskTracker,
    pub(super) started: Instant,
    /// Held until the harbor has stopped; then runtime.json goes.
    pub(super) runtime: Mutex<Option<super::RuntimeDir>>,
    /// The audit log (`[audit]`), set once at launch; closed while flushing.
    pub(super) audit: std::sync::OnceLock<crate::audit::Audit>,
    /// `GET /metrics` (also an observer of the gateway).
    pub(super) metrics: Arc<crate::metrics::Metrics>,
    /// Dashboard logins and sessions (admin's; they end with the process).
    sessions: admin::session::Sessions,
    /// The MCP gateway, when the config has `[mcp]` (see `mcp_glue.rs`).
    pub(super) mcp: Option<Arc<crate::mcp::McpGateway>>,
    /// Cancelled when the MCP fronts stop (their streams end).
    pub(super) mcp_closing: CancellationToken,
    /// The MCP front on `admin.sock` (set at launch).
    pub(super) mcp_socket: std::sync::OnceLock<Arc<crate::mcp::front_http::HttpFront>>,
    /// What `harbormaster upgrade` hands to the new process.
    pub(super) handover: super::upgrade::Handover,
    /// TLS termination, when `[gateway.tls]` is configured (a reload may
    /// change its certificates).
    pub(super) tls: Mutex<Option<Arc<crate::gateway::tls::Terminator>>>,
}

/// The gateway's breaker changes, as harbor events.
pub struct BreakerEvents(pub broadcast::Sender<Event>);

impl crate::observe::Observer for BreakerEvents {
    fn breaker(&self, c: &crate::observe::BreakerChange<'_>) {
        let what = EventKind::Breaker {
            from: c.from.into(),
            to: c.to.into(),
        };
        let event = Event::new(Some(c.app.into()), Some(c.instance.into()), what);
        let _ = self.0.send(event);
    }

    fn observes_requests(&self) -> bool {
        false
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HarborCtx {
    /// `events`: where the harbor's events go; made first so the gateway
    /// can be built to report into it too ([`BreakerEvents`]).
    pub fn new(
        config: Config,
        supervisor: Supervisor,
        gateway: Arc<Gateway>,
        events: broadcast::Sender<Event>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Arc<Self> {
        let externals = Arc::new(ExternalHealth::default());
        let cancel = CancellationToken::new();
        let mcp = super::mcp_glue::gateway_for(&config);
        Arc::new(Self {
            mcp,
            mcp_closing: CancellationToken::new(),
            mcp_socket: std::sync::OnceLock::new(),
            routes: Mutex::default(),
            config: ArcSwap::from_pointee(config),
            supervisor,
            gateway,
            externals,
            events,
            phase: watch::channel(Phase::Running).0,
            shutdown_requested: CancellationToken::new(),
            stop_accepting: cancel.child_token(),
            cancel,
            changes: tokio::sync::Mutex::new(()),
            restarts: Mutex::default(),
            last_reload: Mutex::default(),
            listeners: Mutex::default(),
            serving: TaskTracker::new(),
            background: TaskTracker::new(),
            started: Instant::now(),
            runtime: Mutex::default(),
            audit: std::sync::OnceLock::new(),
            metrics,
            sessions: Default::default(),
            handover: Default::default(),
            tls: Mutex::default(),
        })
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// Every event from now on: the same events as `GET /v1/events`.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The shutdown phase, as it changes.
    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    /// Asks for the ordered graceful shutdown.
    pub fn shutdown(&self) {
        self.shutdown_requested.cancel();
    }

    /// Stop routing new requests to `app` (503 + Retry-After).
    pub fn drain(&self, app: &str) -> Result<(), HarborError> {
        self.switch(app, true)
    }

    /// Undo [`HarborCtx::drain`].
    pub fn resume(&self, app: &str) -> Result<(), HarborError> {
        self.switch(app, false)
    }

    fn switch(&self, app: &str, draining: bool) -> Result<(), HarborError> {
        let (name, _) = self.known_app(app)?;
        self.gateway.set_draining(&name, draining);
        if draining {
            tracing::info!(event = "app_drain_start", app = %name, in_flight = self.gateway.app_in_flight(&name));
        } else {
            tracing::info!(event = "app_resumed", app = %name);
        }
        self.emit(Some(&name), None, EventKind::Drain { draining });
        Ok(())
    }

    pub(super) fn emit(&self, app: Option<&AppName>, instance: Option<String>, what: EventKind) {
        let _ = self
            .events
            .send(Event::new(app.map(|a| a.to_string()), instance, what));
    }

    pub(super) fn set_phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
        crate::systemd::status(phase.name());
        tracing::info!(event = "shutdown_phase", phase = phase.name());
        let phase = phase.name().to_string();
        self.emit(None, None, EventKind::Shutdown { phase });
    }

    /// Serves `listener` until a reload removes it or the harbor stops;
    /// shutdown waits for its connections (`serving`).
    pub fn serve_listener(&self, listener: std::net::TcpListener) -> std::io::Result<()> {
        let addr = listener.local_addr()?;
        let token = self.stop_accepting.child_token();
        lock(&self.listeners).insert(addr, token.clone());
        self.handover.keep("gateway", &listener);
        tracing::info!(event = "listening", %addr);
        self.spawn_serving(addr, self.gateway.clone().serve(listener, token));
        Ok(())
    }

    /// [`HarborCtx::serve_listener`] for a `[gateway.tls]` listener.
    pub fn serve_tls_listener(
        &self,
        listener: std::net::TcpListener,
        tls: Arc<crate::gateway::tls::Terminator>,
    ) -> std::io::Result<()> {
        let addr = listener.local_addr()?;
        let token = self.stop_accepting.child_token();
        lock(&self.listeners).insert(addr, token.clone());
        self.handover.keep("tls", &listener);
        tracing::info!(event = "listening", %addr, tls = true);
        self.spawn_serving(addr, self.gateway.clone().serve_tls(listener, tls, token));
        Ok(())
    }

    fn spawn_serving(
        &self,
        addr: SocketAddr,
        serving: impl std::future::Future<Output = std::io::Result<()>> + Send + 'static,
    ) {
        self.serving.spawn(async move {
            if let Err(e) = serving.await {
                tracing::error!(%addr, error = %e, "listener failed");
            }
        });
    }

    pub(super) fn close_listener(&self, addr: &SocketAddr) {
        self.handover.forget(addr);
        if let Some(token) = lock(&self.listeners).remove(addr) {
            token.cancel();
            tracing::info!(event = "listener_closed", %addr);
        }
    }

    fn known_app(&self, app: &str) -> Result<(AppName, AppConfig), HarborError> {
        let config = self.config.load();
        AppName::new(app)
            .ok()
            .and_then(|n| config.apps.get(&n).map(|a| (n, a.clone())))
            .ok_or_else(|| HarborError::UnknownApp(app.into()))
    }

    /// Marks a rolling restart of `app` as queued (`Busy` if one already is).
    fn begin_restart(&self, app: &str) -> Result<AppName, HarborError> {
        let (name, cfg) = self.known_app(app)?;
        if !matches!(cfg.kind, AppKind::Managed(_)) {
            return Err(HarborError::External(app.into()));
        }
        if *self.phase.borrow() != Phase::Running {
            return Err(HarborError::ShuttingDown);
        }
        let mut restarts = lock(&self.restarts);
        if matches!(restarts.get(&name), Some(None)) {
            return Err(HarborError::Busy(app.into()));
        }
        restarts.insert(name.clone(), None);
        Ok(name)
    }

    /// Runs a queued restart when its turn comes: the app's current
    /// definition, replaced blue-green; every instance gets a fresh budget.
    async fn run_restart(
        &self,
        name: AppName,
        timeout: Option<Duration>,
    ) -> Result<(), HarborError> {
        let run = async {
            let _turn = self.changes.lock().await;
            let app = self.known_app(name.as_str())?.1;
            let started = Instant::now();
            tracing::info!(event = "restart_started", app = %name);
            self.emit(Some(&name), None, restart_outcome("started", None));
            let deadline = started + timeout.unwrap_or(READY_TIMEOUT);
            self.replace(&app, deadline, true).await?;
            tracing::info!(event = "restart_complete", app = %name, duration_ms = started.elapsed().as_millis() as u64);
            Ok(())
        };
        let result = tokio::select! {
            result = run => result,
            _ = self.shutdown_requested.cancelled() => Err(HarborError::ShuttingDown),
        };
        let error = result.as_ref().err().map(|e| e.to_string());
        if let Some(e) = &error {
            tracing::error!(event = "restart_failed", app = %name, reason = %e);
        }
        let outcome = if error.is_some() { "failed" } else { "done" };
        self.emit(Some(&name), None, restart_outcome(outcome, error.clone()));
        match error {
            Some(e) => lock(&self.restarts).insert(name, Some(e)),
            None => lock(&self.restarts).remove(&name),
        };
        result
    }

    /// Rolling restart of a managed app, waited for: the new instances are
    /// ready before the old ones drain and stop; `timeout` bounds the wait
    /// for readiness (default 120s).
    pub async fn restart(&self, app: &str, timeout: Option<Duration>) -> Result<(), HarborError> {
        let name = self.begin_restart(app)?;
        self.run_restart(name, timeout).await
    }

    pub(super) fn restart_state(&self, app: &AppName) -> (bool, Option<String>) {
        match lock(&self.restarts).get(app) {
            Some(None) => (true, None),
            Some(Some(e)) => (false, Some(e.clone())),
            None => (false, None),
        }
    }

    /// Turns supervisor state changes and waiting apps into events until
    /// `done`, after forwarding what is pending then (the apps' last state
    /// changes come before the `flushing` phase). Subscribed before the task
    /// runs: nothing falls between.
    pub(super) fn forward_events(
        self: &Arc<Self>,
        done: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send {
        let mut changes = self.supervisor.subscribe();
        let mut waiting = self.supervisor.waiting();
        let this = self.clone();
        async move {
            let mut seen = waiting.borrow_and_update().clone();
            loop {
                tokio::select! {
                    biased;
                    change = changes.recv() => match change {
                        Ok(c) => {
                            let (app, id) = (Some(&c.id.app), Some(c.id.to_string()));
                            let ready = (c.from == State::Ready, c.to == State::Ready);
                            this.emit(app, id.clone(), EventKind::StateChange {
                                from: c.from.name().into(),
                                to: c.to.name().into(),
                                reason: c.reason,
                            });
                            if ready.0 != ready.1 {
                                this.emit(app, id, EventKind::Readiness { ready: ready.1 });
                            }
                        }
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(broadcast::error::RecvError::Closed) => return,
                    },
                    changed = waiting.changed() => {
                        if changed.is_err() { return }
                        let now = waiting.borrow_and_update().clone();
                        let apps: std::collections::BTreeSet<_> = now.keys().chain(seen.keys()).collect();
                        for app in apps.into_iter().filter(|a| now.get(*a) != seen.get(*a)) {
                            let reason = now.get(app).cloned();
                            this.emit(Some(app), None, EventKind::Waiting { reason });
                        }
                        seen = now;
                    }
                    _ = done.cancelled() => return,
                }
            }
        }
    }
}

fn restart_outcome(outcome: &str, error: Option<String>) -> EventKind {
    EventKind::Restart {
        outcome: outcome.into(),
        error,
    }
}

impl admin::Control for HarborCtx {
    fn health(&self) -> admin::api::Health {
        self.health()
    }

    fn readiness(&self) -> admin::api::Ready {
        self.readiness()
    }

    fn config(&self) -> Arc<Config> {
        self.config()
    }

    fn request_shutdown(&self) {
        self.shutdown();
    }

    fn reload(&self) -> impl std::future::Future<Output = admin::api::ReloadResult> + Send {
        self.reload()
    }

    fn set_draining(&self, app: &str, draining: bool) -> Result<(), HarborError> {
        self.switch(app, draining)
    }

    fn restart(self: &Arc<Self>, app: &str, timeout: Option<Duration>) -> Result<(), HarborError> {
        let name = self.begin_restart(app)?;
        let this = self.clone();
        self.background.spawn(async move {
            let _ = this.run_restart(name, timeout).await;
        });
        Ok(())
    }

    fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.subscribe()
    }

    fn audit(&self) -> Option<crate::audit::Audit> {
        self.audit.get().cloned()
    }

    fn metrics(&self, openmetrics: bool) -> String {
        let health = self.health();
        let mut probe_failures = self.supervisor.probe_failures().snapshot();
        probe_failures.extend(self.externals.probe_failures.snapshot());
        let scrape = crate::metrics::Scrape {
            health: &health,
            connections: self.gateway.connections(),
            probe_failures,
        };
        self.metrics.render(&scrape, openmetrics)
    }

    fn sessions(&self) -> &admin::session::Sessions {
        &self.sessions
    }

    fn log_tail(&self, app: &str, lines: usize) -> Result<Vec<String>, HarborError> {
        let (name, _) = self.known_app(app)?;
        let dir = self.config().runtime.state_dir.join("logs");
        let path = crate::supervisor::output::AppLog::path_for(&dir, name.as_str());
        Ok(crate::supervisor::output::tail_file(&path, lines))
    }

    fn mcp(&self) -> Option<Arc<crate::mcp::McpGateway>> {
        self.mcp.clone()
    }

    fn mcp_socket_front(&self) -> Option<Arc<crate::mcp::front_http::HttpFront>> {
        HarborCtx::mcp_socket_front(self)
    }

    fn upgrade(
        self: &Arc<Self>,
        binary: std::path::PathBuf,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<u32, String>> + Send {
        super::upgrade::run(self.clone(), binary, timeout)
    }
}
