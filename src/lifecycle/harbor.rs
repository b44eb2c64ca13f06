//! The harbor context: the one owner of the running config, the supervisor,
//! the gateway, route publishing, the change queue, the event stream and the
//! shutdown phases. Admin reaches it only through [`admin::Control`];
//! embedders through [`super::Harbor`]. A new front (MCP, audit, metrics)
//! is added here, once.
//!
//! Invariants: route tables are published only by the [`Router`] (under its
//! lock); reloads and restarts apply one at a time through `changes`, each
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

use super::routing::Router;
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
    pub(super) config: Arc<ArcSwap<Config>>,
    pub(super) supervisor: Supervisor,
    pub(super) gateway: Arc<Gateway>,
    pub(super) externals: Arc<ExternalHealth>,
    pub(super) router: Arc<Router>,
    events: broadcast::Sender<Event>,
    pub(super) phase: watch::Sender<Phase>,
    /// Cancelled to ask for the graceful shutdown.
    pub(super) shutdown: CancellationToken,
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
    monitors: Mutex<HashMap<AppName, CancellationToken>>,
    /// Every gateway listener's task, also those a reload added.
    pub(super) serving: TaskTracker,
    pub(super) background: TaskTracker,
    pub(super) started: Instant,
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl HarborCtx {
    pub fn new(config: Config, supervisor: Supervisor, gateway: Arc<Gateway>) -> Arc<Self> {
        let config = Arc::new(ArcSwap::from_pointee(config));
        let externals = Arc::new(ExternalHealth::default());
        let router = Arc::new(Router::new(
            config.clone(),
            supervisor.clone(),
            externals.clone(),
            gateway.clone(),
        ));
        let cancel = CancellationToken::new();
        Arc::new(Self {
            router,
            config,
            supervisor,
            gateway,
            externals,
            events: broadcast::channel(1024).0,
            phase: watch::channel(Phase::Running).0,
            shutdown: CancellationToken::new(),
            stop_accepting: cancel.child_token(),
            cancel,
            changes: tokio::sync::Mutex::new(()),
            restarts: Mutex::default(),
            last_reload: Mutex::default(),
            listeners: Mutex::default(),
            monitors: Mutex::default(),
            serving: TaskTracker::new(),
            background: TaskTracker::new(),
            started: Instant::now(),
        })
    }

    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    pub fn phase(&self) -> watch::Receiver<Phase> {
        self.phase.subscribe()
    }

    pub(super) fn emit(&self, app: Option<&AppName>, instance: Option<String>, what: EventKind) {
        let _ = self
            .events
            .send(Event::new(app.map(|a| a.to_string()), instance, what));
    }

    pub(super) fn set_phase(&self, phase: Phase) {
        self.phase.send_replace(phase);
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
        tracing::info!(event = "listening", %addr);
        let serving = self.gateway.clone().serve(listener, token);
        self.serving.spawn(async move {
            if let Err(e) = serving.await {
                tracing::error!(%addr, error = %e, "listener failed");
            }
        });
        Ok(())
    }

    pub(super) fn close_listener(&self, addr: &SocketAddr) {
        if let Some(token) = lock(&self.listeners).remove(addr) {
            token.cancel();
            tracing::info!(event = "listener_closed", %addr);
        }
    }

    /// Starts the readiness monitors of an external app.
    pub fn start_monitors(&self, name: &AppName, app: &AppConfig) {
        let token = self.cancel.child_token();
        self.externals.spawn_app_monitors(name, app, token.clone());
        if let Some(old) = lock(&self.monitors).insert(name.clone(), token) {
            old.cancel();
        }
    }

    pub(super) fn stop_monitors(&self, name: &AppName) {
        if let Some(token) = lock(&self.monitors).remove(name) {
            token.cancel();
        }
    }

    fn known_app(&self, app: &str) -> Result<(AppName, AppConfig), HarborError> {
        let config = self.config.load();
        AppName::new(app)
            .ok()
            .and_then(|n| config.apps.get(&n).map(|a| (n, a.clone())))
            .ok_or_else(|| HarborError::UnknownApp(app.into()))
    }

    /// Marks a rolling restart of `app` as queued (409-style `Busy` if one is).
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
            _ = self.shutdown.cancelled() => Err(HarborError::ShuttingDown),
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

    /// A rolling restart, waited for (the embedding API).
    pub async fn restart_now(
        &self,
        app: &str,
        timeout: Option<Duration>,
    ) -> Result<(), HarborError> {
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
                        for (app, reason) in &now {
                            if seen.get(app) != Some(reason) {
                                this.emit(Some(app), None, EventKind::Waiting { reason: Some(reason.clone()) });
                            }
                        }
                        for app in seen.keys().filter(|a| !now.contains_key(*a)) {
                            this.emit(Some(app), None, EventKind::Waiting { reason: None });
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

    fn authorized(&self, given: &str) -> bool {
        // Constant time per candidate (`subtle`); how many tokens there are
        // is not a secret.
        let config = self.config.load();
        config.admin.tokens.iter().fold(false, |found, t| {
            found
                | bool::from(subtle::ConstantTimeEq::ct_eq(
                    given.as_bytes(),
                    t.as_bytes(),
                ))
        })
    }

    fn timeouts(&self) -> crate::gateway::conn::Timeouts {
        let gateway = &self.config.load().gateway;
        crate::gateway::conn::Timeouts {
            header: gateway.header_read_timeout,
            idle: gateway.client_idle_timeout,
        }
    }

    fn request_shutdown(&self) {
        self.shutdown.cancel();
    }

    fn reload(&self) -> impl std::future::Future<Output = admin::api::ReloadResult> + Send {
        self.reload_file()
    }

    fn set_draining(&self, app: &str, draining: bool) -> Result<(), HarborError> {
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
}
