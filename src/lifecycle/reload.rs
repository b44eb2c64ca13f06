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
use crate::config::{self, AppKind, AppName, Config, LoadError};

impl HarborCtx {
    /// Reloads the file the running config came from.
    pub async fn reload(&self) -> ReloadResult {
        let path = self.config.load().source.clone();
        crate::systemd::reloading();
        let result = match config::load(&path) {
            Ok(new) => tokio::select! {
                applied = self.apply(new) => applied,
                _ = self.shutdown_requested.cancelled() => refused("harbormaster is shutting down; the reload was interrupted"),
            },
            Err(LoadError::Invalid(errors)) => not_applied("invalid", errors.iter()),
            Err(e) => not_applied("invalid", [e]),
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
        crate::systemd::reloaded(&format!("reload: {}", message.lines().next().unwrap_or("")));
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
        let bound: Result<Vec<_>, String> = (plan.listeners_added.iter())
            .map(|addr| {
                std::net::TcpListener::bind(addr).map_err(|e| {
                    format!("cannot listen on {addr} (gateway.listen): {e}; nothing was changed")
                })
            })
            .collect();
        let bound = match bound {
            Ok(bound) => bound,
            Err(why) => return not_applied("invalid", [why]),
        };
        let tls_bound: Result<Vec<_>, String> = (plan.tls_listeners_added.iter())
            .map(|addr| {
                std::net::TcpListener::bind(addr).map_err(|e| {
                    format!(
                        "cannot listen on {addr} (gateway.tls.listen): {e}; nothing was changed"
                    )
                })
            })
            .collect();
        let tls_bound = match tls_bound {
            Ok(bound) => bound,
            Err(why) => return not_applied("invalid", [why]),
        };
        for listener in bound {
            if let Err(e) = self.serve_listener(listener) {
                failed.push(format!("listener: {e}"));
            }
        }
        for addr in &plan.listeners_removed {
            self.close_listener(addr);
        }
        self.apply_tls(&plan, new.gateway.tls.as_ref(), tls_bound, &mut failed);

        // Transition: the new config, plus removed apps (draining) until they are gone.
        let mut transition = new.clone();
        for name in &plan.removed {
            transition.apps.insert(name.clone(), old.apps[name].clone());
            self.gateway.set_draining(name, true);
            tracing::info!(event = "app_drain_start", app = %name, in_flight = self.gateway.app_in_flight(name));
        }
        self.use_config(transition);

        // Added apps start (in dependency order) and are routed once ready.
        for name in new
            .start_order()
            .into_iter()
            .filter(|n| plan.added.contains(n))
        {
            // Each does nothing for the other kind of app.
            self.supervisor.start_app(&new.apps[&name]);
            self.externals
                .watch_app(&name, &new.apps[&name], &self.cancel);
            tracing::info!(event = "app_added", app = %name);
        }
        // Changed apps: blue-green (a change of kind stops the old kind first).
        let (deadline, mut kept) = (Instant::now() + READY_TIMEOUT, Vec::new());
        for name in &plan.replaced {
            let (before, after) = (&old.apps[name], &new.apps[name]);
            if std::mem::discriminant(&before.kind) != std::mem::discriminant(&after.kind) {
                self.stop(name).await;
            }
            if let Err(why) = self.replace(after, deadline, false).await {
                failed.push(format!("{name}: {why}"));
                // Keep serving with the old definition.
                kept.push(name);
                let mut running = (*self.config()).clone();
                running.apps.insert(name.clone(), before.clone());
                self.use_config(running);
            }
        }
        // Probe settings changed in place: running instances switch probes.
        for name in &plan.in_place {
            let (before, after) = (&old.apps[name], &new.apps[name]);
            let waiting = self.supervisor.waiting().borrow().contains_key(name);
            match &after.kind {
                // A waiting app waits for its new dependencies from now on.
                AppKind::Managed(_) if waiting => self.supervisor.start_app(after),
                AppKind::Managed(_) => self.supervisor.update_probes(after),
                AppKind::External { .. } if before.readiness != after.readiness => {
                    self.externals.watch_app(name, after, &self.cancel)
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
            self.stop(name).await;
        }
        // Final: the new config, keeping old definitions where a replacement failed.
        let mut running = new.clone();
        for name in kept {
            running.apps.insert(name.clone(), old.apps[name].clone());
        }
        self.use_config(running);
        for name in &plan.removed {
            self.gateway.set_draining(name, false);
            tracing::info!(event = "app_removed", app = %name);
        }
        self.reload_mcp(&new).await;
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

    /// The running config from now on, routed at once.
    fn use_config(&self, config: Config) {
        self.config.store(Arc::new(config));
        self.publish_routes();
    }

    async fn stop(&self, name: &AppName) {
        self.supervisor.stop_app(name).await;
        self.externals.forget_app(name);
    }
}

fn refused(why: &str) -> ReloadResult {
    not_applied("refused", [why])
}

/// A reload that changed nothing: `invalid` or `refused`, and why.
fn not_applied<E: ToString>(status: &str, errors: impl IntoIterator<Item = E>) -> ReloadResult {
    ReloadResult {
        status: status.into(),
        plan: None,
        errors: errors.into_iter().map(|e| e.to_string()).collect(),
        failed: Vec::new(),
    }
}
