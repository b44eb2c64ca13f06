//! Building `/ready` and `/health` from the supervisor, the gateway and the
//! external upstreams' health. `lifecycle` uses the same readiness for its
//! one-time `ready` event.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::time::Instant;

use super::api::*;
use crate::config::{AppKind, Config};
use crate::gateway::Gateway;
use crate::health::probe::ProbeOutcome;
use crate::health::upstreams::ExternalHealth;
use crate::supervisor::state::State;
use crate::supervisor::Supervisor;

/// What the admin endpoints look at.
pub struct View {
    /// The running configuration (swapped by reloads).
    pub config: Arc<arc_swap::ArcSwap<Config>>,
    pub supervisor: Supervisor,
    pub gateway: Arc<Gateway>,
    pub externals: Arc<ExternalHealth>,
    pub started: Instant,
    pub shutting_down: Arc<AtomicBool>,
    /// Cancelled to ask for a graceful shutdown.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Apps with a rolling restart under way.
    pub restarting: std::sync::Mutex<std::collections::HashSet<crate::config::AppName>>,
    /// Why the last rolling restart of an app failed (cleared by the next one).
    pub restart_errors: std::sync::Mutex<std::collections::HashMap<crate::config::AppName, String>>,
    /// Runs a rolling restart (installed by the lifecycle).
    pub restart: RestartHook,
    /// The last reload's result.
    pub last_reload: Arc<std::sync::Mutex<Option<ReloadReport>>>,
    /// Reloads the config file (installed by the lifecycle).
    pub reload: ReloadHook,
}

/// A reload of the config file, as the lifecycle provides it.
pub type ReloadHook = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ReloadResult> + Send>>
        + Send
        + Sync,
>;

/// A rolling restart of one app, as the lifecycle provides it.
pub type RestartHook = Arc<
    dyn Fn(
            crate::config::AppName,
        )
            -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>
        + Send
        + Sync,
>;

impl View {
    /// Ready when no shutdown is under way, nothing required is draining and
    /// every required app has a ready instance.
    pub fn readiness(&self) -> Ready {
        let mut reasons = Vec::new();
        if self.shutting_down.load(Ordering::Acquire) {
            reasons.push("shutting down".to_string());
        }
        let config = self.config.load();
        for (name, app) in &config.apps {
            if !app.required {
                continue;
            }
            if self.gateway.is_draining(name) {
                reasons.push(format!("app {name} is draining"));
                continue;
            }
            match &app.kind {
                AppKind::Managed(_) => {
                    let states: Vec<State> = self
                        .supervisor
                        .watch(name)
                        .iter()
                        .map(|rx| rx.borrow().state.clone())
                        .collect();
                    if states.contains(&State::Ready) {
                        continue;
                    }
                    let failed = states.iter().find_map(|s| match s {
                        State::Failed { reason } => Some(reason.clone()),
                        _ => None,
                    });
                    reasons.push(match (states.is_empty(), failed) {
                        (true, _) => format!("app {name} is not running"),
                        (false, Some(reason))
                            if states.iter().all(|s| matches!(s, State::Failed { .. })) =>
                        {
                            format!("app {name} failed: {reason}")
                        }
                        _ => format!("app {name} has no ready instance"),
                    });
                }
                AppKind::External { upstreams } => {
                    let any = upstreams.iter().any(|a| {
                        self.externals
                            .get(&ExternalHealth::label(name.as_str(), *a))
                            .ready
                    });
                    if !any {
                        reasons.push(format!("app {name} has no ready upstream"));
                    }
                }
            }
        }
        Ready {
            status: if reasons.is_empty() {
                "ready"
            } else {
                "not_ready"
            }
            .into(),
            reasons,
        }
    }

    pub fn health(&self) -> Health {
        let ready = self.readiness();
        let status = if self.shutting_down.load(Ordering::Acquire) {
            "shutting_down"
        } else if ready.reasons.is_empty() {
            "ok"
        } else {
            "degraded"
        };
        let mut apps = BTreeMap::new();
        let config = self.config.load();
        for (name, app) in &config.apps {
            let instances: Vec<InstanceHealth> = match &app.kind {
                AppKind::Managed(_) => self
                    .supervisor
                    .watch(name)
                    .iter()
                    .map(|rx| {
                        let st = rx.borrow().clone();
                        let id = format!("{}#{}", st.app, st.index);
                        InstanceHealth {
                            state: st.state.name().into(),
                            detail: match &st.state {
                                State::Failed { reason } => Some(reason.clone()),
                                State::Exited(exit) => Some(exit.to_string()),
                                _ => None,
                            },
                            pid: st.pid,
                            port: st.port,
                            processes: Some(match (st.pid, &st.instance_id) {
                                (Some(pid), Some(id)) => crate::supervisor::descendants::Target {
                                    pgid: pid as i32,
                                    instance_id: id,
                                }
                                .members()
                                .len(),
                                _ => 0,
                            }),
                            ready: st.state == State::Ready,
                            breaker: self.gateway.breaker_state(&id).into(),
                            in_flight: self.gateway.upstream_in_flight(&id),
                            restarts: st.restarts,
                            uptime_s: st
                                .state
                                .is_up()
                                .then(|| st.started_at.map(|t| t.elapsed().as_secs_f64()))
                                .flatten(),
                            last_probe: st.last_probe.as_ref().map(probe_report),
                            last_death: st.deaths.back().map(|d| DeathReport {
                                at: humantime::format_rfc3339_millis(d.at).to_string(),
                                exit: d.exit.map(|e| e.to_string()),
                                uptime_s: d.uptime.as_secs_f64(),
                                reason: d.reason.clone(),
                                last_lines: d.last_lines.clone(),
                            }),
                            id,
                        }
                    })
                    .collect(),
                AppKind::External { upstreams } => upstreams
                    .iter()
                    .map(|addr| {
                        let id = ExternalHealth::label(name.as_str(), *addr);
                        let h = self.externals.get(&id);
                        InstanceHealth {
                            state: if h.ready { "ready" } else { "not_ready" }.into(),
                            detail: None,
                            pid: None,
                            port: Some(addr.port()),
                            processes: None,
                            ready: h.ready,
                            breaker: self.gateway.breaker_state(&id).into(),
                            in_flight: self.gateway.upstream_in_flight(&id),
                            restarts: 0,
                            uptime_s: None,
                            last_probe: h.last_probe.as_ref().map(probe_report),
                            last_death: None,
                            id,
                        }
                    })
                    .collect(),
            };
            apps.insert(
                name.to_string(),
                AppHealth {
                    kind: match app.kind {
                        AppKind::Managed(_) => "managed",
                        AppKind::External { .. } => "external",
                    }
                    .into(),
                    required: app.required,
                    restarting: self
                        .restarting
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .contains(name),
                    restart_error: self
                        .restart_errors
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get(name)
                        .cloned(),
                    ready: instances.iter().any(|i| i.ready),
                    draining: self.gateway.is_draining(name),
                    in_flight: self.gateway.app_in_flight(name),
                    instances,
                },
            );
        }
        Health {
            version: env!("CARGO_PKG_VERSION").into(),
            pid: std::process::id(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            status: status.into(),
            in_flight: self.gateway.in_flight(),
            apps,
            last_reload: self
                .last_reload
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

fn probe_report(p: &ProbeOutcome) -> ProbeReport {
    ProbeReport {
        ok: p.ok,
        latency_ms: p.latency.as_secs_f64() * 1000.0,
        detail: p.detail.clone(),
    }
}
