//! The supervisor owns every managed process: it starts apps in dependency
//! order, restarts them by policy, stops them (reverse order) without leaving
//! a process or a port behind, and publishes each instance's state.
//!
//! Its state is what the gateway routes by, what `status` shows and what an
//! embedding app subscribes to (`subscribe()`), so every change goes through
//! the pure state machine in `state.rs`.

pub mod descendants;
pub mod guard;
mod hooks;
mod instance;
pub mod leftovers;
pub mod output;
pub mod ports;
pub mod process_group;
pub mod reaper;
pub mod restart;
mod spawn;
pub mod state;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use instance::Instance;
pub use instance::{DeathRecord, InstanceId, InstanceStatus, StateChange};
use output::{AppLog, LogRing};
pub(crate) use spawn::die_with_parent;
use state::State;

use crate::config::{AppConfig, AppKind, AppName, Config, DependsOn};

/// A running instance as the supervisor holds it.
pub struct InstanceHandle {
    pub status: watch::Receiver<InstanceStatus>,
    pub output: Arc<LogRing>,
    probes: watch::Sender<crate::health::monitor::Probes>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

struct Inner {
    /// Private: crash-recovery records (`pids/`).
    runtime_dir: PathBuf,
    /// This run's records (`pids/RUN/`): what its guard sweeps.
    pids_dir: PathBuf,
    /// Logs (`logs/`).
    state_dir: PathBuf,
    events: broadcast::Sender<StateChange>,
    guard: Mutex<Option<guard::Guard>>,
    run_id: String,
    apps: Mutex<BTreeMap<AppName, Vec<InstanceHandle>>>,
    /// Apps waiting for their dependencies, with the reason.
    waiting: watch::Sender<BTreeMap<AppName, String>>,
    waiters: Mutex<std::collections::HashMap<AppName, CancellationToken>>,
    /// Failed probes of every instance (`harbormaster_probe_failures_total`).
    probe_failures: crate::health::failures::ProbeFailures,
}

/// A replacement (or a started app) that did not become ready.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{id} did not become ready ({reason})")]
pub struct NotReady {
    pub id: InstanceId,
    pub reason: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The probes an app's instances run.
fn probes_of(app: &AppConfig) -> crate::health::monitor::Probes {
    let (startup, liveness) = match &app.kind {
        AppKind::Managed(m) => (m.startup.clone(), m.liveness.clone()),
        AppKind::External { .. } => (None, None),
    };
    crate::health::monitor::Probes {
        startup,
        readiness: app
            .readiness
            .clone()
            .unwrap_or_else(crate::health::monitor::default_readiness),
        liveness,
        assume_ready: false,
    }
}

/// Cheap to clone; all clones share the same processes.
#[derive(Clone)]
pub struct Supervisor(Arc<Inner>);

impl Supervisor {
    /// A supervisor keeping its logs and pid records under `dir`.
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        Self::with_dirs(dir, dir)
    }

    /// A supervisor keeping pid records under `runtime_dir` (private) and
    /// app logs under `state_dir/logs`.
    pub fn with_dirs(runtime_dir: &Path, state_dir: &Path) -> std::io::Result<Self> {
        let created = |dir: PathBuf| {
            std::fs::create_dir_all(&dir).map_err(|e| {
                std::io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))
            })
        };
        created(state_dir.join("logs"))?;
        created(runtime_dir.join("pids"))?;
        let (events, _) = broadcast::channel(1024);
        let run_id = format!("{:x}", fastrand::u32(..));
        Ok(Self(Arc::new(Inner {
            pids_dir: runtime_dir.join("pids").join(&run_id),
            runtime_dir: runtime_dir.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
            events,
            guard: Mutex::new(None),
            run_id,
            apps: Mutex::new(BTreeMap::new()),
            waiting: watch::channel(BTreeMap::new()).0,
            waiters: Mutex::new(Default::default()),
            probe_failures: Default::default(),
        })))
    }

    /// Failed probes of every instance so far.
    pub fn probe_failures(&self) -> &crate::health::failures::ProbeFailures {
        &self.0.probe_failures
    }

    /// This run's crash-recovery records (`RUNTIME/pids/RUN/`), for other
    /// processes harbormaster supervises (MCP servers) to be swept too.
    pub fn pids_dir(&self) -> &Path {
        &self.0.pids_dir
    }

    /// Every state change of every instance from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.0.events.subscribe()
    }

    /// Starts the guard process that stops every instance if this process
    /// dies without doing it (see `guard.rs`). Only for the harbormaster
    /// binary: it re-executes the current executable.
    pub fn start_guard(&self) -> std::io::Result<u32> {
        let guard = guard::spawn(&self.0.pids_dir)?;
        let pid = guard.pid;
        *self.0.guard.lock().unwrap_or_else(|p| p.into_inner()) = Some(guard);
        Ok(pid)
    }

    /// Takes charge of this process's children before any app starts:
    /// become a child subreaper (`subreaper`), reap adopted orphans until
    /// `cancel`, stop what a killed harbormaster left behind (unless
    /// `sweep_leftovers` is off: an upgrade's old process is alive), and start the
    /// guard (`guard`; a guard that cannot start is a warning: instances
    /// still get their parent-death signal and the next start's sweep).
    pub async fn take_charge(
        &self,
        subreaper: bool,
        guard: bool,
        sweep_leftovers: bool,
        cancel: CancellationToken,
    ) -> std::io::Result<()> {
        let context = |what: &str| {
            let what = what.to_string();
            move |e: std::io::Error| std::io::Error::new(e.kind(), format!("{what}: {e}"))
        };
        if subreaper {
            reaper::become_subreaper()
                .map_err(std::io::Error::from)
                .map_err(context("cannot become a child subreaper"))?;
        }
        if reaper::adopts_orphans() {
            reaper::spawn(cancel.clone()).map_err(context("cannot watch SIGCHLD"))?;
            if std::process::id() == 1 {
                let this = self.clone();
                let pids = move || this.snapshot().iter().filter_map(|s| s.pid).collect();
                reaper::forward_signals(pids, cancel).map_err(context("cannot handle signals"))?;
            }
            tracing::info!(pid = std::process::id(), "reaping adopted orphans");
        }
        let leftovers = if sweep_leftovers {
            self.clean_leftovers().await
        } else {
            Vec::new()
        };
        for line in leftovers {
            tracing::warn!(event = "leftover_stopped", "{line}");
        }
        if guard {
            match self.start_guard() {
                Ok(pid) => tracing::info!(
                    event = "guard_started",
                    pid,
                    "instances are stopped even if harbormaster is killed"
                ),
                Err(e) => {
                    tracing::warn!(event = "guard_failed", error = %e, "cannot start the guard process; if harbormaster is killed, its instances are stopped only at the next start")
                }
            }
        }
        Ok(())
    }

    /// Stops processes left behind by a harbormaster that was killed.
    pub async fn clean_leftovers(&self) -> Vec<String> {
        leftovers::clean(&self.0.runtime_dir.join("pids")).await
    }

    fn apps(&self) -> std::sync::MutexGuard<'_, BTreeMap<AppName, Vec<InstanceHandle>>> {
        lock(&self.0.apps)
    }

    /// Status watchers of an app's instances (empty for external or unknown apps).
    pub fn watch(&self, app: &AppName) -> Vec<watch::Receiver<InstanceStatus>> {
        self.apps()
            .get(app)
            .map(|v| v.iter().map(|i| i.status.clone()).collect())
            .unwrap_or_default()
    }

    /// The current status of every instance.
    pub fn snapshot(&self) -> Vec<InstanceStatus> {
        self.apps()
            .values()
            .flatten()
            .map(|i| i.status.borrow().clone())
            .collect()
    }

    /// The current status of an app's instances.
    pub fn snapshot_of(&self, app: &AppName) -> Vec<InstanceStatus> {
        self.watch(app)
            .iter()
            .map(|rx| rx.borrow().clone())
            .collect()
    }

    /// Output rings of an app's instances.
    pub fn output(&self, app: &AppName) -> Vec<Arc<LogRing>> {
        self.apps()
            .get(app)
            .map(|v| v.iter().map(|i| i.output.clone()).collect())
            .unwrap_or_default()
    }

    /// Starts `app` once its dependencies meet their conditions (at once if
    /// they do now); external apps need nothing. Until then the app is
    /// *waiting*, with the reason in [`Supervisor::waiting`]. A dependency
    /// that recovers later, however (backoff, reload, restart), starts it
    /// then: no state needs a stop and start to recover.
    pub fn start_app(&self, app: &AppConfig) {
        if !matches!(app.kind, AppKind::Managed(_)) {
            return;
        }
        self.cancel_waiter(&app.name);
        // Subscribed before the first check: no change falls between the two.
        let mut changes = self.subscribe();
        if !self.still_waits(app) {
            self.spawn_all(app);
            return;
        }
        let token = CancellationToken::new();
        lock(&self.0.waiters).insert(app.name.clone(), token.clone());
        let (this, app) = (self.clone(), app.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    change = changes.recv() => if matches!(change, Err(broadcast::error::RecvError::Closed)) { return },
                    _ = token.cancelled() => return,
                }
                if !this.still_waits(&app) {
                    break;
                }
            }
            // Under the waiters' lock: a stop that cancelled us wins.
            let mut waiters = lock(&this.0.waiters);
            if !token.is_cancelled() {
                waiters.remove(&app.name);
                this.spawn_all(&app);
            }
        });
    }

    /// Starts `instances` copies of `app` now, whatever its dependencies
    /// (`restart` of a waiting app), each with a fresh restart budget.
    pub fn start_now(&self, app: &AppConfig) -> Vec<InstanceId> {
        self.cancel_waiter(&app.name);
        self.spawn_all(app)
    }

    fn spawn_all(&self, app: &AppConfig) -> Vec<InstanceId> {
        let AppKind::Managed(managed) = &app.kind else {
            return Vec::new();
        };
        self.0
            .waiting
            .send_if_modified(|w| w.remove(&app.name).is_some());
        (0..managed.instances.get())
            .map(|_| self.add_instance(app).0)
            .collect()
    }

    /// Whether `app` must (still) wait for a dependency; if so, says what
    /// for in [`Supervisor::waiting`] at once, so an app depending on this
    /// one never mistakes it for started.
    fn still_waits(&self, app: &AppConfig) -> bool {
        let unmet = self.unmet(app);
        if unmet.is_empty() {
            return false;
        }
        let reason = format!("waiting for {}", unmet.join(", "));
        self.0.waiting.send_if_modified(|w| {
            w.insert(app.name.clone(), reason.clone()).as_ref() != Some(&reason)
        });
        true
    }

    /// The dependencies of `app` that do not meet their condition now.
    fn unmet(&self, app: &AppConfig) -> Vec<String> {
        app.depends_on
            .iter()
            .filter(|(dep, cond)| !self.meets(dep, **cond))
            .map(|(dep, cond)| match cond {
                DependsOn::Started => format!("{dep} to be started"),
                DependsOn::Ready => format!("{dep} to be ready"),
            })
            .collect()
    }

    fn meets(&self, dep: &AppName, cond: DependsOn) -> bool {
        if self.0.waiting.borrow().contains_key(dep) {
            return false;
        }
        let apps = self.apps();
        let Some(list) = apps.get(dep) else {
            return true; // external: nothing to wait for until health checks exist
        };
        list.iter().any(|h| match (cond, &h.status.borrow().state) {
            (DependsOn::Started, s) => matches!(s, State::Running | State::Ready),
            (DependsOn::Ready, s) => *s == State::Ready,
        })
    }

    /// Apps waiting for their dependencies, with the reason.
    pub fn waiting(&self) -> watch::Receiver<BTreeMap<AppName, String>> {
        self.0.waiting.subscribe()
    }

    fn cancel_waiter(&self, app: &AppName) {
        if let Some(token) = lock(&self.0.waiters).remove(app) {
            token.cancel();
        }
        self.0.waiting.send_if_modified(|w| w.remove(app).is_some());
    }

    /// Starts one more instance of `app` with the next free index (a
    /// replacement); returns its id and status watcher.
    pub fn add_instance(&self, app: &AppConfig) -> (InstanceId, watch::Receiver<InstanceStatus>) {
        let mut apps = self.apps();
        let list = apps.entry(app.name.clone()).or_default();
        let index = list
            .iter()
            .map(|h| h.status.borrow().id.index + 1)
            .max()
            .unwrap_or(0);
        let id = InstanceId {
            app: app.name.clone(),
            index,
        };
        let handle = self.spawn_instance(app, id.clone());
        let rx = handle.status.clone();
        list.push(handle);
        (id, rx)
    }

    /// Ids of an app's current instances.
    pub fn ids(&self, app: &AppName) -> Vec<InstanceId> {
        self.watch(app)
            .iter()
            .map(|rx| rx.borrow().id.clone())
            .collect()
    }

    /// Waits until every instance in `ids` is ready. Fails as soon as one
    /// ends (failed, exited, stopped) or at `deadline`.
    pub async fn wait_ready(&self, ids: &[InstanceId], deadline: Instant) -> Result<(), NotReady> {
        let not_ready = |id: &InstanceId, reason: String| NotReady {
            id: id.clone(),
            reason,
        };
        for id in ids {
            let rx = self
                .watch(&id.app)
                .into_iter()
                .find(|rx| rx.borrow().id == *id);
            let Some(mut rx) = rx else {
                return Err(not_ready(id, "it was stopped".into()));
            };
            loop {
                let state = rx.borrow_and_update().state.clone();
                match state {
                    State::Ready => break,
                    State::Failed { .. } | State::Exited(_) | State::Stopped => {
                        return Err(not_ready(id, state.to_string()))
                    }
                    _ => {}
                }
                match tokio::time::timeout_at(deadline, rx.changed()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => return Err(not_ready(id, "it was stopped".into())),
                    Err(_) => return Err(not_ready(id, format!("still {state} at the deadline"))),
                }
            }
        }
        Ok(())
    }

    /// Stops one instance and waits until it is confirmed stopped.
    pub async fn stop_instance(&self, id: &InstanceId) {
        let handle = {
            let mut apps = self.apps();
            let Some(list) = apps.get_mut(&id.app) else {
                return;
            };
            let Some(pos) = list.iter().position(|h| h.status.borrow().id == *id) else {
                return;
            };
            list.remove(pos)
        };
        handle.stop.cancel();
        let _ = handle.task.await;
    }

    fn spawn_instance(&self, app: &AppConfig, id: InstanceId) -> InstanceHandle {
        let AppKind::Managed(managed) = &app.kind else {
            unreachable!("only managed apps have instances")
        };
        let managed = Arc::new((**managed).clone());
        let (probes_tx, probes) = watch::channel(probes_of(app));
        let log = Arc::new(AppLog::new(
            &self.0.state_dir.join("logs"),
            app.name.as_str(),
        ));
        let (status, rx) = watch::channel(Instance::initial_status(id.clone()));
        let ring = Arc::new(LogRing::default());
        let instance = Instance {
            app: app.name.clone(),
            index: id.index,
            id,
            managed,
            probes,
            pids_dir: self.0.pids_dir.clone(),
            status,
            events: self.0.events.clone(),
            ring: ring.clone(),
            log,
            run_id: self.0.run_id.clone(),
            starts: 0,
            probe_failures: self.0.probe_failures.clone(),
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(instance.run(stop.clone()));
        InstanceHandle {
            status: rx,
            output: ring,
            probes: probes_tx,
            stop,
            task,
        }
    }

    /// Gives running instances of `app` new probe settings (a reload that
    /// changed only probes): no process restarts, readiness carries over.
    pub fn update_probes(&self, app: &AppConfig) {
        if let Some(list) = self.apps().get(&app.name) {
            for h in list {
                h.probes.send_replace(probes_of(app));
            }
        }
    }

    /// Starts every app; each one waits (visibly) until the apps it
    /// depends on meet their condition.
    pub fn start_all(&self, config: &Config) {
        for name in config.start_order() {
            self.start_app(&config.apps[&name]);
        }
    }

    /// Stops an app's instances (in parallel) and waits until each is confirmed stopped.
    pub async fn stop_app(&self, app: &AppName) {
        self.cancel_waiter(app);
        let handles = self.apps().remove(app).unwrap_or_default();
        for h in &handles {
            h.stop.cancel();
        }
        for h in handles {
            let _ = h.task.await;
        }
    }

    /// Stops every app, dependents before their dependencies.
    pub async fn stop_all(&self, config: &Config) {
        // Nothing waiting starts while the rest stops.
        for (_, token) in lock(&self.0.waiters).drain() {
            token.cancel();
        }
        let mut order = config.start_order();
        order.reverse();
        // Apps started outside `config` (none today) are stopped last.
        let rest: Vec<AppName> = self
            .apps()
            .keys()
            .filter(|a| !order.contains(a))
            .cloned()
            .collect();
        for name in order.iter().chain(&rest) {
            self.stop_app(name).await;
            tracing::info!(event = "app_stopped", app = %name);
        }
    }
}
