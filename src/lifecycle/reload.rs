//! Hot reload: apply exactly the change between the running config and the
//! file, and nothing more. Triggered by SIGHUP, `harbormaster reload`
//! (`POST /v1/reload`) and a debounced watch of the config file.
//!
//! Order: validate (the same code as `check`; invalid → nothing changes) →
//! plan (`config::diff`) → bind new listeners → route with a transition
//! config (the new apps plus the removed ones, draining) → start added apps,
//! replace changed ones (`replace.rs`) → drain removed apps by count → stop them
//! → route with the new config. Unchanged apps and listeners are never
//! touched. Reloads and restarts take turns (the harbor's change queue);
//! none during shutdown. Every table goes out through the `Router`.

use std::sync::Arc;

use tokio::time::Instant;

use super::harbor::{lock, HarborCtx, Phase, READY_TIMEOUT};
use crate::admin::api::{EventKind, ReloadReport, ReloadResult};
use crate::config::diff;
use crate::config::{self, AppConfig, AppKind, AppName, Config, LoadError};

impl HarborCtx {
    /// Reloads the file the running config came from.
    pub async fn reload_file(&self) -> ReloadResult {
        let path = self.config.load().source.clone();
        let result = match config::load(&path) {
            Ok(new) => tokio::select! {
                applied = self.apply(new) => applied,
                _ = self.shutdown.cancelled() => refused("harbormaster is shutting down; the reload was interrupted"),
            },
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
        let at = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
        self.emit(
            None,
            None,
            EventKind::Reload {
                ok,
                message: message.clone(),
            },
        );
        *lock(&self.last_reload) = Some(ReloadReport { at, ok, message });
        result
    }

    /// Applies `new` (already valid).
    pub async fn apply(&self, new: Config) -> ReloadResult {
        // The change queue: one reload or restart at a time.
        let _turn = self.changes.lock().await;
        if *self.phase.borrow() != Phase::Running {
            return refused("harbormaster is shutting down; a reload is not possible now");
        }
        let old = self.config.load_full();
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
            self.close_listener(addr);
        }

        // Transition: the new config, plus removed apps (draining) until they are gone.
        let mut transition = new.clone();
        for name in &plan.removed {
            transition.apps.insert(name.clone(), old.apps[name].clone());
            self.gateway.set_draining(name, true);
            tracing::info!(event = "app_drain_start", app = %name, in_flight = self.gateway.app_in_flight(name));
        }
        self.config.store(Arc::new(transition));
        self.router.rebuild();

        // Added apps start (in dependency order) and are routed once ready.
        for name in new
            .start_order()
            .into_iter()
            .filter(|n| plan.added.contains(n))
        {
            let app = &new.apps[&name];
            match &app.kind {
                AppKind::Managed(_) => self.supervisor.start_app(app),
                AppKind::External { .. } => self.start_monitors(&name, app),
            }
            tracing::info!(event = "app_added", app = %name);
        }
        // Changed apps: blue-green (a change of kind stops the old kind first).
        let deadline = Instant::now() + READY_TIMEOUT;
        for name in &plan.replaced {
            let (before, after) = (&old.apps[name], &new.apps[name]);
            if std::mem::discriminant(&before.kind) != std::mem::discriminant(&after.kind) {
                self.stop(name, before).await;
            }
            if let Err(why) = self.replace(after, deadline, false).await {
                failed.push(format!("{name}: {why}"));
                // Keep serving with the old definition.
                let mut kept = (**self.config.load()).clone();
                kept.apps.insert(name.clone(), before.clone());
                self.config.store(Arc::new(kept));
                self.router.rebuild();
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
        let running = self.config.load_full();
        for name in &plan.replaced {
            if running.apps.get(name) == old.apps.get(name) {
                final_config
                    .apps
                    .insert(name.clone(), old.apps[name].clone());
            }
        }
        self.config.store(Arc::new(final_config));
        self.router.rebuild();
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

    async fn stop(&self, name: &AppName, app: &AppConfig) {
        match &app.kind {
            AppKind::Managed(_) => self.supervisor.stop_app(name).await,
            AppKind::External { .. } => self.stop_monitors(name),
        }
    }
}

fn refused(why: &str) -> ReloadResult {
    ReloadResult {
        status: "refused".into(),
        plan: None,
        errors: vec![why.into()],
        failed: Vec::new(),
    }
}
