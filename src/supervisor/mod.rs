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
use tokio_util::sync::CancellationToken;

use instance::Instance;
pub use instance::{DeathRecord, InstanceStatus, StateChange};
use output::{AppLog, LogRing};
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
        })))
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

    /// Stops processes left behind by a harbormaster that was killed.
    pub async fn clean_leftovers(&self) -> Vec<String> {
        leftovers::clean(&self.0.runtime_dir.join("pids")).await
    }

    fn apps(&self) -> std::sync::MutexGuard<'_, BTreeMap<AppName, Vec<InstanceHandle>>> {
        self.0.apps.lock().unwrap_or_else(|p| p.into_inner())
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

    /// Output rings of an app's instances.
    pub fn output(&self, app: &AppName) -> Vec<Arc<LogRing>> {
        self.apps()
            .get(app)
            .map(|v| v.iter().map(|i| i.output.clone()).collect())
            .unwrap_or_default()
    }

    /// Starts `instances` copies of a managed app; external apps need nothing.
    pub fn start_app(&self, app: &AppConfig) {
        let AppKind::Managed(managed) = &app.kind else {
            return;
        };
        let handles = (0..managed.instances.get())
            .map(|index| self.spawn_instance(app, index))
            .collect();
        self.apps().insert(app.name.clone(), handles);
    }

    /// Starts one more instance of `app` (a rolling restart's replacement),
    /// with the next free index; returns its index and status watcher.
    pub fn add_instance(&self, app: &AppConfig) -> Option<(u32, watch::Receiver<InstanceStatus>)> {
        let mut apps = self.apps();
        let list = apps.get_mut(&app.name)?;
        let index = list
            .iter()
            .map(|h| h.status.borrow().index + 1)
            .max()
            .unwrap_or(0);
        let handle = self.spawn_instance(app, index);
        let rx = handle.status.clone();
        list.push(handle);
        Some((index, rx))
    }

    /// Indexes of an app's current instances.
    pub fn indexes(&self, app: &AppName) -> Vec<u32> {
        self.watch(app).iter().map(|rx| rx.borrow().index).collect()
    }

    /// Stops one instance and waits until it is confirmed stopped.
    pub async fn stop_instance(&self, app: &AppName, index: u32) {
        let handle = {
            let mut apps = self.apps();
            let Some(list) = apps.get_mut(app) else {
                return;
            };
            let Some(pos) = list.iter().position(|h| h.status.borrow().index == index) else {
                return;
            };
            list.remove(pos)
        };
        handle.stop.cancel();
        let _ = handle.task.await;
    }

    fn spawn_instance(&self, app: &AppConfig, index: u32) -> InstanceHandle {
        let AppKind::Managed(managed) = &app.kind else {
            unreachable!("only managed apps have instances")
        };
        let managed = Arc::new((**managed).clone());
        let (probes_tx, probes) = watch::channel(probes_of(app));
        let log = Arc::new(AppLog::new(
            &self.0.state_dir.join("logs"),
            app.name.as_str(),
        ));
        let (status, rx) = watch::channel(Instance::initial_status(&app.name, index));
        let ring = Arc::new(LogRing::default());
        let instance = Instance {
            app: app.name.clone(),
            index,
            label: format!("{}#{index}", app.name),
            managed,
            probes,
            pids_dir: self.0.pids_dir.clone(),
            status,
            events: self.0.events.clone(),
            ring: ring.clone(),
            log,
            run_id: self.0.run_id.clone(),
            starts: 0,
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

    /// Starts every app, each after the apps it depends on meet their
    /// condition. An app whose dependency fails is not started (logged).
    pub async fn start_all(&self, config: &Config) {
        for name in config.start_order() {
            let app = &config.apps[&name];
            let mut blocked = None;
            for (dep, cond) in &app.depends_on {
                if let Err(why) = self.wait_for(dep, *cond).await {
                    blocked = Some(format!("dependency `{dep}` {why}"));
                    break;
                }
            }
            match blocked {
                Some(why) => tracing::error!(app = %name, reason = %why, "app not started"),
                None => self.start_app(app),
            }
        }
    }

    /// Waits until one instance of `app` is up (`started`) or ready (`ready`).
    /// Fails when no instance can get there any more.
    pub async fn wait_for(&self, app: &AppName, cond: DependsOn) -> Result<(), String> {
        let mut rxs = self.watch(app);
        if rxs.is_empty() {
            return Ok(()); // external: nothing to wait for until health checks exist
        }
        loop {
            let states: Vec<State> = rxs.iter().map(|rx| rx.borrow().state.clone()).collect();
            let met = states.iter().any(|s| match cond {
                DependsOn::Started => matches!(s, State::Running | State::Ready),
                DependsOn::Ready => *s == State::Ready,
            });
            if met {
                return Ok(());
            }
            if let Some(end) = states
                .iter()
                .find(|s| matches!(s, State::Failed { .. } | State::Exited(_) | State::Stopped))
            {
                if states
                    .iter()
                    .all(|s| matches!(s, State::Failed { .. } | State::Exited(_) | State::Stopped))
                {
                    return Err(format!("is {end}"));
                }
            }
            let changed =
                futures_util::future::select_all(rxs.iter_mut().map(|rx| Box::pin(rx.changed())));
            if changed.await.0.is_err() {
                return Err("is gone".into());
            }
        }
    }

    /// Stops an app's instances (in parallel) and waits until each is confirmed stopped.
    pub async fn stop_app(&self, app: &AppName) {
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
