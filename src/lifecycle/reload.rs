//! Hot reload: apply exactly the change between the running config and the
//! file, and nothing more. Triggered by SIGHUP, `harbormaster reload`
//! (`POST /v1/reload`) and a debounced watch of the config file.
//!
//! Order: validate (the same code as `check`; invalid → nothing changes) →
//! plan (`config::diff`) → bind new listeners → route with a transition
//! config (the new apps plus the removed ones, draining) → start added apps,
//! replace changed ones blue-green → drain removed apps by count → stop them
//! → route with the new config. Unchanged apps and listeners are never
//! touched. One reload at a time; none during shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::routing;
use crate::admin::api::{ReloadReport, ReloadResult};
use crate::config::diff::{self, Plan};
use crate::config::{self, AppConfig, AppKind, AppName, Config, LoadError};
use crate::gateway::Gateway;
use crate::health::upstreams::ExternalHealth;
use crate::supervisor::state::State;
use crate::supervisor::Supervisor;

/// How long a replacement instance may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Reloader {
    pub router: Arc<routing::Router>,
    pub current: Arc<ArcSwap<Config>>,
    pub supervisor: Supervisor,
    pub gateway: Arc<Gateway>,
    pub externals: Arc<ExternalHealth>,
    pub shutting_down: Arc<AtomicBool>,
    /// Parent of the external-upstream monitors' tokens.
    pub cancel: CancellationToken,
    /// Parent of every listener's token.
    pub stop_accepting: CancellationToken,
    pub last: Arc<Mutex<Option<ReloadReport>>>,
    one_at_a_time: tokio::sync::Mutex<()>,
    listeners: Mutex<HashMap<SocketAddr, CancellationToken>>,
    monitors: Mutex<HashMap<AppName, CancellationToken>>,
}

impl Reloader {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        router: Arc<routing::Router>,
        current: Arc<ArcSwap<Config>>,
        supervisor: Supervisor,
        gateway: Arc<Gateway>,
        externals: Arc<ExternalHealth>,
        shutting_down: Arc<AtomicBool>,
        cancel: CancellationToken,
        stop_accepting: CancellationToken,
        last: Arc<Mutex<Option<ReloadReport>>>,
    ) -> Self {
        Self {
            router,
            current,
            supervisor,
            gateway,
            externals,
            shutting_down,
            cancel,
            stop_accepting,
            last,
            one_at_a_time: tokio::sync::Mutex::new(()),
            listeners: Mutex::new(HashMap::new()),
            monitors: Mutex::new(HashMap::new()),
        }
    }

    /// Serves `listener` until reloads remove it or the harbor stops.
    pub fn serve_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> std::io::Result<tokio::task::JoinHandle<std::io::Result<()>>> {
        let addr = listener.local_addr()?;
        let token = self.stop_accepting.child_token();
        lock(&self.listeners).insert(addr, token.clone());
        tracing::info!(event = "listening", %addr);
        Ok(tokio::spawn(self.gateway.clone().serve(listener, token)))
    }

    /// Starts the readiness monitors of an external app.
    pub fn start_monitors(&self, name: &AppName, app: &AppConfig) {
        let token = self.cancel.child_token();
        self.externals.spawn_app_monitors(name, app, token.clone());
        if let Some(old) = lock(&self.monitors).insert(name.clone(), token) {
            old.cancel();
        }
    }

    fn stop_monitors(&self, name: &AppName) {
        if let Some(token) = lock(&self.monitors).remove(name) {
            token.cancel();
        }
    }

    fn route(&self) {
        let config = self.current.load();
        self.gateway.update(routing::table(
            &config,
            &self.supervisor,
            &self.externals,
            &self.gateway,
        ));
    }

    /// Reloads the file the running config came from.
    pub async fn reload_file(&self) -> ReloadResult {
        let path = self.current.load().source.clone();
        let result = match config::load(&path) {
            Ok(new) => self.apply(new).await,
            Err(LoadError::Invalid(errors)) => ReloadResult {
                status: "invalid".into(),
                plan: None,
                errors: errors.iter().map(|e| e.to_string()).collect(),
                failed: Vec::new(),
            },
            Err(e) => ReloadResult {
                status: "invalid".into(),
                plan: None,
                errors: vec![e.to_string()],
                failed: Vec::new(),
            },
        };
        let ok = result.status == "applied" && result.failed.is_empty();
        let message = match result.status.as_str() {
            "applied" if result.failed.is_empty() => "applied".to_string(),
            "applied" => format!("applied with failures: {}", result.failed.join("; ")),
            _ => result.errors.join("\n"),
        };
        if ok {
            tracing::info!(event = "reload_applied", plan = %result.plan.as_ref().map(|p| p.to_string()).unwrap_or_default());
        } else {
            tracing::error!(event = "reload_failed", status = %result.status, message = %message, "the running config was kept where the reload failed");
        }
        *lock(&self.last) = Some(ReloadReport {
            at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            ok,
            message,
        });
        result
    }

    /// Applies `new` (already valid).
    pub async fn apply(&self, new: Config) -> ReloadResult {
        let refused = |why: &str| ReloadResult {
            status: "refused".into(),
            plan: None,
            errors: vec![why.into()],
            failed: Vec::new(),
        };
        // One at a time: a second reload waits for the first to finish.
        let _one = self.one_at_a_time.lock().await;
        if self.shutting_down.load(Ordering::Acquire) {
            return refused("harbormaster is shutting down; a reload is not possible now");
        }
        let old = self.current.load_full();
        let plan = diff::plan(&old, &new);
        let mut failed = Vec::new();

        // Listeners first: a port that cannot be bound fails the whole reload.
        let mut bound = Vec::new();
        for addr in &plan.listeners_added {
            match std::net::TcpListener::bind(addr) {
                Ok(l) => bound.push(l),
                Err(e) => {
                    return ReloadResult {
                        status: "invalid".into(),
                        plan: None,
                        errors: vec![format!(
                            "cannot listen on {addr} (gateway.listen): {e}; nothing was changed"
                        )],
                        failed,
                    }
                }
            }
        }
        for listener in bound {
            if let Err(e) = self.serve_listener(listener) {
                failed.push(format!("listener: {e}"));
            }
        }
        for addr in &plan.listeners_removed {
            if let Some(token) = lock(&self.listeners).remove(addr) {
                token.cancel();
                tracing::info!(event = "listener_closed", %addr);
            }
        }

        // Transition: the new config, plus removed apps (draining) until they are gone.
        let mut transition = new.clone();
        for name in &plan.removed {
            transition.apps.insert(name.clone(), old.apps[name].clone());
            self.gateway.set_draining(name, true);
            tracing::info!(event = "app_drain_start", app = %name, in_flight = self.gateway.app_in_flight(name));
        }
        self.current.store(Arc::new(transition));
        self.route();

        // Added apps start (in dependency order) and are routed once ready.
        for name in new
            .start_order()
            .into_iter()
            .filter(|n| plan.added.contains(n))
        {
            let app = &new.apps[&name];
            self.start(&name, app);
            tracing::info!(event = "app_added", app = %name);
        }
        // Changed apps: blue-green.
        for name in &plan.replaced {
            if let Err(why) = self.replace(name, &old.apps[name], &new.apps[name]).await {
                failed.push(why);
                // Keep serving with the old definition.
                let mut kept = (**self.current.load()).clone();
                kept.apps.insert(name.clone(), old.apps[name].clone());
                self.current.store(Arc::new(kept));
                self.route();
            }
        }
        // Probe settings changed in place: running instances switch probes.
        for name in &plan.in_place {
            let (before, after) = (&old.apps[name], &new.apps[name]);
            match &after.kind {
                AppKind::Managed(_) => self.supervisor.update_probes(after),
                AppKind::External { .. } if before.readiness != after.readiness => {
                    self.start_monitors(name, after)
                }
                AppKind::External { .. } => {}
            }
        }
        // Removed apps: wait for their in-flight work, then stop them.
        let deadline = Instant::now() + new.gateway.drain_timeout;
        for name in &plan.removed {
            let shared = self.gateway.app_shared(name);
            if shared.in_flight.wait_idle(deadline).await {
                tracing::info!(event = "app_drained", app = %name);
            } else {
                tracing::warn!(event = "app_drain_timeout", app = %name, cut = shared.in_flight.get());
            }
            self.stop(name, &old.apps[name]).await;
        }
        // Final: the new config, keeping old definitions where a replacement failed.
        let mut final_config = new.clone();
        let running = self.current.load_full();
        for name in &plan.replaced {
            if running.apps.get(name) == old.apps.get(name) {
                final_config
                    .apps
                    .insert(name.clone(), old.apps[name].clone());
            }
        }
        self.current.store(Arc::new(final_config));
        self.route();
        for name in &plan.removed {
            self.gateway.set_draining(name, false);
            tracing::info!(event = "app_removed", app = %name);
        }
        for what in &plan.not_applied {
            tracing::warn!(event = "reload_not_applied", setting = %what, "changed, but only a restart of harbormaster applies it");
        }
        ReloadResult {
            status: "applied".into(),
            plan: serde_json::to_value(&plan).ok(),
            errors: Vec::new(),
            failed,
        }
    }

    fn start(&self, name: &AppName, app: &AppConfig) {
        match &app.kind {
            AppKind::Managed(_) => self.supervisor.start_app(app),
            AppKind::External { .. } => self.start_monitors(name, app),
        }
    }

    async fn stop(&self, name: &AppName, app: &AppConfig) {
        match &app.kind {
            AppKind::Managed(_) => self.supervisor.stop_app(name).await,
            AppKind::External { .. } => self.stop_monitors(name),
        }
    }

    /// New instances with the new definition, ready and routed, before the
    /// old ones are retired (drained by count) and stopped.
    async fn replace(
        &self,
        name: &AppName,
        old: &AppConfig,
        new: &AppConfig,
    ) -> Result<(), String> {
        let (AppKind::Managed(_), AppKind::Managed(m)) = (&old.kind, &new.kind) else {
            // External (or a change of kind): swap the monitors / processes.
            self.stop(name, old).await;
            self.start(name, new);
            tracing::info!(event = "app_replaced", app = %name);
            return Ok(());
        };
        let old_indexes = self.supervisor.indexes(name);
        let mut fresh = Vec::new();
        for _ in 0..m.instances.get() {
            match self.supervisor.add_instance(new) {
                Some(added) => fresh.push(added),
                None => return Err(format!("{name}: not running")),
            }
        }
        let deadline = Instant::now() + READY_TIMEOUT;
        let indexes: Vec<u32> = fresh.iter().map(|(i, _)| *i).collect();
        for (index, status) in &mut fresh {
            let ready = loop {
                let state = status.borrow_and_update().state.clone();
                match state {
                    State::Ready => break Ok(()),
                    State::Failed { .. } | State::Exited(_) | State::Stopped => {
                        break Err(format!("{state}"))
                    }
                    _ => {}
                }
                match tokio::time::timeout_at(deadline, status.changed()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(_)) => break Err("disappeared".into()),
                    Err(_) => break Err("not ready in time".into()),
                }
            };
            if let Err(why) = ready {
                for i in &indexes {
                    self.supervisor.stop_instance(name, *i).await;
                }
                return Err(format!("{name}: new instance {name}#{index} did not become ready ({why}); the old instances keep serving"));
            }
        }
        self.route();
        let drain = Instant::now() + self.current.load().gateway.drain_timeout;
        for old in old_indexes {
            let label = format!("{name}#{old}");
            if !self.gateway.retire(&label, drain).await {
                tracing::warn!(event = "app_drain_timeout", app = %name, instance = %label, cut = self.gateway.upstream_in_flight(&label));
            }
            self.supervisor.stop_instance(name, old).await;
            self.gateway.forget_upstream(&label);
        }
        self.route();
        tracing::info!(event = "app_replaced", app = %name);
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Plans are also shown by `reload` in the CLI.
pub fn describe(plan: &Plan) -> String {
    let list = |v: &[AppName]| v.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ");
    let mut parts = Vec::new();
    for (what, apps) in [
        ("added", &plan.added),
        ("removed", &plan.removed),
        ("replaced", &plan.replaced),
        ("changed in place", &plan.in_place),
    ] {
        if !apps.is_empty() {
            parts.push(format!("{what}: {}", list(apps)));
        }
    }
    if parts.is_empty() {
        "no app changed".into()
    } else {
        parts.join("; ")
    }
}
