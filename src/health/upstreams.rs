//! Readiness of external upstreams (apps with `upstreams`): each address is
//! probed with the app's readiness probe (a TCP connect when none is set) and
//! takes traffic only after its first success, like a managed instance.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::monitor::{self, HealthEvent, Probes};
use super::probe::{self, ProbeOutcome};
use crate::config::{AppConfig, AppKind, AppName, Config, Probe};

#[derive(Debug, Clone, Default)]
pub struct UpstreamHealth {
    pub ready: bool,
    pub last_probe: Option<ProbeOutcome>,
}

/// Readiness of every external upstream, by label (`app@addr`).
#[derive(Debug)]
pub struct ExternalHealth {
    states: Mutex<HashMap<String, UpstreamHealth>>,
    /// Bumped on every readiness flip, so routing can follow.
    version: watch::Sender<u64>,
    /// Ends the monitors of each app (`watch_app`, `forget_app`).
    apps: Mutex<HashMap<AppName, CancellationToken>>,
    /// Failed probes (`harbormaster_probe_failures_total`).
    pub probe_failures: super::failures::ProbeFailures,
}

impl Default for ExternalHealth {
    fn default() -> Self {
        Self {
            states: Mutex::default(),
            version: watch::channel(0).0,
            apps: Mutex::default(),
            probe_failures: Default::default(),
        }
    }
}

impl ExternalHealth {
    pub fn label(app: &str, addr: SocketAddr) -> String {
        format!("{app}@{addr}")
    }

    pub fn get(&self, label: &str) -> UpstreamHealth {
        self.lock().get(label).cloned().unwrap_or_default()
    }

    /// Changes whenever an upstream becomes ready or unready.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, UpstreamHealth>> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, label: &str, f: impl FnOnce(&mut UpstreamHealth)) {
        f(self.lock().entry(label.to_string()).or_default());
    }

    /// Starts one readiness monitor per external upstream, until `cancel`.
    pub fn spawn_monitors(self: &Arc<Self>, config: &Config, cancel: CancellationToken) {
        for (name, app) in &config.apps {
            self.spawn_app_monitors(name, app, cancel.clone());
        }
    }

    /// (Re)starts the monitors of `app` (nothing for a managed app) until
    /// `forget_app` or `parent` is cancelled; its previous monitors end.
    pub fn watch_app(
        self: &Arc<Self>,
        name: &AppName,
        app: &AppConfig,
        parent: &CancellationToken,
    ) {
        let token = parent.child_token();
        self.spawn_app_monitors(name, app, token.clone());
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = apps.insert(name.clone(), token) {
            old.cancel();
        }
    }

    /// Ends the monitors of `app` (removed by a reload); it is not ready then.
    pub fn forget_app(&self, name: &AppName) {
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(token) = apps.remove(name) {
            token.cancel();
        }
    }

    /// The monitors of one external app, until `cancel` (then it is not ready).
    pub fn spawn_app_monitors(
        self: &Arc<Self>,
        name: &AppName,
        app: &AppConfig,
        cancel: CancellationToken,
    ) {
        let AppKind::External { upstreams } = &app.kind else {
            return;
        };
        let readiness = app
            .readiness
            .clone()
            .unwrap_or_else(monitor::default_readiness);
        for addr in upstreams {
            let label = Self::label(name.as_str(), *addr);
            let (registry, cancel, readiness, addr, app) = (
                self.clone(),
                cancel.clone(),
                readiness.clone(),
                *addr,
                name.to_string(),
            );
            tokio::spawn(async move {
                tokio::select! {
                    _ = registry.follow(app, label.clone(), addr, readiness) => {}
                    _ = cancel.cancelled() => registry.update(&label, |h| h.ready = false),
                }
            });
        }
    }

    async fn follow(&self, app: String, label: String, addr: SocketAddr, readiness: Probe) {
        let (tx, mut rx) = mpsc::channel(16);
        let assume_ready = self.get(&label).ready;
        let probes = Probes {
            startup: None,
            readiness,
            liveness: None,
            assume_ready,
        };
        let failures = self.probe_failures.clone();
        let check = move |p: Probe| {
            let (failures, app) = (failures.clone(), app.clone());
            async move {
                let outcome = probe::check(&p.kind, addr, p.timeout).await;
                if !outcome.ok {
                    failures.record(&app, &p);
                }
                outcome
            }
        };
        let watcher = monitor::watch(probes, check, tx);
        let events = async {
            while let Some(event) = rx.recv().await {
                match event {
                    HealthEvent::Probed(outcome) => {
                        self.update(&label, |h| h.last_probe = Some(outcome))
                    }
                    HealthEvent::Ready(outcome) | HealthEvent::Unready(outcome) => {
                        let ready = outcome.ok;
                        self.update(&label, |h| h.ready = ready);
                        tracing::info!(event = if ready { "upstream_ready" } else { "upstream_unready" }, upstream = %label, probe = %outcome);
                        self.version.send_modify(|v| *v += 1);
                    }
                    _ => {}
                }
            }
        };
        tokio::join!(watcher, events);
    }
}
