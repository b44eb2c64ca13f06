//! `/ready` and `/health` (also `status`), built from the supervisor, the
//! gateway and the external upstreams' health. The one-time `ready` log
//! event uses the same readiness.

use std::collections::BTreeMap;

use super::harbor::{lock, HarborCtx, Phase};
use crate::admin::api::*;
use crate::config::AppKind;
use crate::health::probe::ProbeOutcome;
use crate::health::upstreams::ExternalHealth;
use crate::supervisor::state::State;

impl HarborCtx {
    /// Ready when no shutdown is under way, nothing required is draining and
    /// every required app has a ready instance.
    pub fn readiness(&self) -> Ready {
        let mut reasons = Vec::new();
        if *self.phase.borrow() != Phase::Running {
            reasons.push("shutting down".to_string());
        }
        let config = self.config.load();
        let waiting = self.supervisor.waiting().borrow().clone();
        for (name, app) in &config.apps {
            if !app.required {
                continue;
            }
            if self.gateway.is_draining(name) {
                reasons.push(format!("app {name} is draining"));
                continue;
            }
            match &app.kind {
                AppKind::Managed(_) if waiting.contains_key(name) => {
                    reasons.push(format!("app {name} is {}", waiting[name]));
                }
                AppKind::Managed(_) => {
                    let states: Vec<State> = self
                        .supervisor
                        .snapshot_of(name)
                        .into_iter()
                        .map(|s| s.state)
                        .collect();
                    let all_failed = states.iter().all(|s| matches!(s, State::Failed { .. }));
                    reasons.push(match states.first() {
                        _ if states.contains(&State::Ready) => continue,
                        None => format!("app {name} is not running"),
                        Some(State::Failed { reason }) if all_failed => {
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
        if let Some(mcp) = &self.mcp {
            reasons.extend(mcp.not_ready());
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
        let status = if *self.phase.borrow() != Phase::Running {
            "shutting_down"
        } else if ready.reasons.is_empty() {
            "ok"
        } else {
            "degraded"
        };
        let mut apps = BTreeMap::new();
        let config = self.config.load();
        let waiting = self.supervisor.waiting().borrow().clone();
        for (name, app) in &config.apps {
            let (restarting, restart_error) = self.restart_state(name);
            let instances: Vec<InstanceHealth> = match &app.kind {
                AppKind::Managed(_) => self
                    .supervisor
                    .snapshot_of(name)
                    .iter()
                    .map(|st| {
                        let id = st.id.to_string();
                        InstanceHealth {
                            state: st.state.name().into(),
                            detail: st.detail(),
                            pid: st.pid,
                            port: st.port,
                            processes: Some(st.processes()),
                            ready: st.state == State::Ready,
                            breaker: self.gateway.breaker_state(&id).into(),
                            in_flight: self.gateway.upstream_in_flight(&id),
                            restarts: st.restarts,
                            uptime_s: st.uptime().map(|d| d.as_secs()),
                            last_probe: st.last_probe.as_ref().map(probe_report),
                            last_death: st.deaths.back().map(death),
                            deaths: st
                                .deaths
                                .iter()
                                .rev()
                                .skip(1)
                                .rev()
                                .map(|d| DeathReport {
                                    last_lines: Vec::new(),
                                    ..death(d)
                                })
                                .collect(),
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
                            port: Some(addr.port()),
                            ready: h.ready,
                            breaker: self.gateway.breaker_state(&id).into(),
                            in_flight: self.gateway.upstream_in_flight(&id),
                            last_probe: h.last_probe.as_ref().map(probe_report),
                            id,
                            ..Default::default()
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
                    restarting,
                    restart_error,
                    waiting: waiting.get(name).cloned(),
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
            uptime_s: self.started.elapsed().as_secs(),
            status: status.into(),
            in_flight: self.gateway.in_flight(),
            apps,
            last_reload: lock(&self.last_reload).clone(),
            audit: self.audit.get().map(|a| a.stats()),
        }
    }
}

fn probe_report(p: &ProbeOutcome) -> ProbeReport {
    ProbeReport {
        ok: p.ok,
        latency_ms: p.latency.as_millis() as u64,
        latency_us: p.latency.as_micros() as u64,
        detail: p.detail.clone(),
    }
}

fn death(d: &crate::supervisor::DeathRecord) -> DeathReport {
    DeathReport {
        at: humantime::format_rfc3339_millis(d.at).to_string(),
        exit: d.exit.map(|e| e.to_string()),
        uptime_s: d.uptime.as_secs(),
        uptime_ms: d.uptime.as_millis() as u64,
        reason: d.reason.clone(),
        last_lines: d.last_lines.clone(),
    }
}
