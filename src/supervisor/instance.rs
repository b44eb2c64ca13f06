//! The executor of one instance: it does the I/O (spawn, wait, signal) and
//! feeds what happened through the pure `state::next`. Every state change is
//! published on the instance's watch channel, broadcast to subscribers and
//! logged as an `app`/`instance`/`from`/`to`/`reason` event.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

use super::descendants::Target;
use super::leftovers::{self, PidRecord};
use super::output::{self, AppLog, LogRing, Stream};
use super::restart::{Decision, End, RestartTracker};
use super::state::{self, Event, Exit, State};
use super::{hooks, ports, spawn};
use crate::children::{self, Tracked};
use crate::config::{AppName, ManagedApp, Probe};
use crate::health::monitor::{self, HealthEvent, Probes};
use crate::health::probe::{self, ProbeOutcome};

/// Death records kept per instance.
const DEATHS_KEPT: usize = 10;
/// Output lines kept in a death record.
const DEATH_LINES: usize = 20;

/// Which instance: its app and its index, shown as `app#index`. Built once
/// per instance; the gateway's per-upstream state is keyed by its Display.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId {
    pub app: AppName,
    pub index: u32,
}

impl std::fmt::Display for InstanceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}#{}", self.app, self.index)
    }
}

/// What `status` and the gateway see of one instance.
#[derive(Debug, Clone)]
pub struct InstanceStatus {
    pub id: InstanceId,
    pub state: State,
    /// `HARBORMASTER_INSTANCE` of the current (or last) process.
    pub instance_id: Option<String>,
    pub pid: Option<u32>,
    pub port: Option<u16>,
    /// Restarts since harbormaster started this instance.
    pub restarts: u32,
    /// When the current process started.
    pub started_at: Option<Instant>,
    /// The most recent deaths, oldest first.
    pub deaths: VecDeque<DeathRecord>,
    /// The last readiness probe result.
    pub last_probe: Option<ProbeOutcome>,
}

impl InstanceStatus {
    /// Live processes of the instance: its group plus the descendants that
    /// left it (found by `HARBORMASTER_INSTANCE`).
    pub fn processes(&self) -> usize {
        match (self.pid, &self.instance_id) {
            (Some(pid), Some(id)) => super::descendants::Target {
                pgid: pid as i32,
                instance_id: id,
            }
            .members()
            .len(),
            _ => 0,
        }
    }

    /// What the state name alone does not say: why it failed or how it exited.
    pub fn detail(&self) -> Option<String> {
        match &self.state {
            State::Failed { reason } => Some(reason.clone()),
            State::Exited(exit) => Some(exit.to_string()),
            _ => None,
        }
    }

    /// How long the current process has run, while it runs.
    pub fn uptime(&self) -> Option<Duration> {
        self.started_at
            .filter(|_| self.state.is_up())
            .map(|t| t.elapsed())
    }
}

/// Why and how a process ended on its own.
#[derive(Debug, Clone)]
pub struct DeathRecord {
    pub at: SystemTime,
    /// `None`: it could not be started, or a probe failure stopped it.
    pub exit: Option<Exit>,
    pub uptime: Duration,
    pub reason: String,
    pub last_lines: Vec<String>,
}

/// One state change, as broadcast to subscribers.
#[derive(Debug, Clone)]
pub struct StateChange {
    pub id: InstanceId,
    pub from: State,
    pub to: State,
    pub reason: String,
    pub at: SystemTime,
}

pub(crate) struct Instance {
    pub app: AppName,
    pub index: u32,
    pub id: InstanceId,
    pub managed: Arc<ManagedApp>,
    /// Current probe settings (a reload may change them in place).
    pub probes: watch::Receiver<Probes>,
    pub pids_dir: PathBuf,
    pub status: watch::Sender<InstanceStatus>,
    pub events: broadcast::Sender<StateChange>,
    pub ring: Arc<LogRing>,
    pub log: Arc<AppLog>,
    /// Distinguishes this harbormaster run in instance ids.
    pub run_id: String,
    pub starts: u32,
    pub probe_failures: crate::health::failures::ProbeFailures,
}

struct Process {
    child: Tracked,
    pid: u32,
    instance_id: String,
    port: u16,
    started: Instant,
    output: [JoinHandle<()>; 2],
}

enum Supervised {
    Ended {
        end: End,
        uptime: Duration,
        why: String,
    },
    Stopped,
}

impl Instance {
    pub fn initial_status(id: InstanceId) -> InstanceStatus {
        InstanceStatus {
            id,
            state: State::Starting,
            instance_id: None,
            pid: None,
            port: None,
            restarts: 0,
            started_at: None,
            deaths: VecDeque::new(),
            last_probe: None,
        }
    }

    /// Moves the state machine; an illegal move is a bug, logged and ignored.
    fn apply(&self, event: Event, reason: impl Into<String>) {
        let reason = reason.into();
        self.status.send_modify(|st| {
            let Some(to) = state::next(&st.state, event.clone()) else {
                tracing::error!(app = %self.app, instance = %self.id, state = %st.state, ?event, "illegal state transition");
                return;
            };
            let from = std::mem::replace(&mut st.state, to.clone());
            tracing::info!(
                event = "state_change",
                app = %self.app,
                instance = %self.id,
                from = from.name(),
                to = to.name(),
                reason = %reason,
            );
            let _ = self.events.send(StateChange {
                id: self.id.clone(),
                from,
                to,
                reason,
                at: SystemTime::now(),
            });
        });
    }

    /// Runs the instance until `stop` is cancelled and its stop is confirmed.
    pub async fn run(mut self, stop: CancellationToken) {
        let mut tracker = RestartTracker::new(self.managed.restart.clone());
        loop {
            let (end, uptime, why, process) = match self.start() {
                Err(why) => (End::NotStarted, Duration::ZERO, why, None),
                Ok(mut process) => match self.supervise(&mut process, &stop).await {
                    Supervised::Stopped => return,
                    Supervised::Ended { end, uptime, why } => (end, uptime, why, Some(process)),
                },
            };
            let summary = match end {
                End::NotStarted => why.clone(),
                _ => format!("{why} after {}", fmt_duration(uptime)),
            };
            // Decide and publish at once, so routing stops before any cleanup.
            let decision = tracker.after_exit(end, uptime, Instant::now(), fastrand::f64());
            let restart_at = match &decision {
                Decision::Restart { attempt, delay } => {
                    self.status.send_modify(|s| s.restarts += 1);
                    let at = Instant::now() + *delay;
                    self.apply(
                        Event::WillRestart {
                            attempt: *attempt,
                            at,
                        },
                        format!("{summary}; restart {attempt} in {}", fmt_duration(*delay)),
                    );
                    Some(at)
                }
                Decision::Leave => {
                    match end {
                        End::Exited(exit) => self.apply(
                            Event::Ended(exit),
                            format!("{summary}; restart policy: no restart"),
                        ),
                        End::NotStarted | End::Unhealthy => self.apply(
                            Event::GaveUp {
                                reason: summary.clone(),
                            },
                            summary.clone(),
                        ),
                    }
                    None
                }
                Decision::GiveUp { reason } => {
                    let reason = format!("{reason}; last: {summary}");
                    self.apply(
                        Event::GaveUp {
                            reason: reason.clone(),
                        },
                        reason,
                    );
                    None
                }
            };
            if let Some(mut p) = process {
                // The leader is gone; what it left (in its group or escaped
                // from it) must not keep the port.
                let cfg = &self.managed.stop;
                let survivors = p.target().terminate(cfg.signal, cfg.timeout).await;
                self.warn_survivors(p.pid, &survivors);
                self.finish(&mut p).await;
            }
            self.record_death(end, uptime, &why);
            let Some(at) = restart_at else {
                if let Decision::GiveUp { reason } = &decision {
                    let lines: Vec<String> = self
                        .ring
                        .tail(DEATH_LINES)
                        .into_iter()
                        .map(|l| l.text)
                        .collect();
                    tracing::error!(app = %self.app, instance = %self.id, reason = %reason, last = %summary, last_lines = ?lines, "instance failed");
                }
                stop.cancelled().await;
                self.apply(Event::StopRequested, "stop requested");
                return;
            };
            tokio::select! {
                _ = tokio::time::sleep_until(at) => self.apply(Event::RestartDue, "restart delay elapsed"),
                _ = stop.cancelled() => {
                    self.apply(Event::StopRequested, "stop requested while waiting to restart");
                    return;
                }
            }
        }
    }

    fn start(&mut self) -> Result<Process, String> {
        let port = match self.managed.port {
            0 => ports::free_loopback_port().map_err(|e| format!("cannot allocate a port: {e}"))?,
            fixed => {
                ports::ensure_free(fixed)?;
                fixed
            }
        };
        self.starts += 1;
        let instance_id = format!(
            "{}-{}-{}-{}",
            self.app, self.index, self.run_id, self.starts
        );
        let spec = spawn::SpawnSpec {
            app: &self.app,
            managed: &self.managed,
            port,
            instance_id: &instance_id,
        };
        let mut child = children::spawn_tracked(&mut spawn::command(&spec)?)
            .map_err(|e| format!("cannot start {}: {e}", program(&self.managed)))?;
        if child.pid == 0 {
            return Err("the process exited before it could be watched".into());
        }
        let pid = child.pid as u32;
        let record = PidRecord {
            app: self.app.to_string(),
            index: self.index,
            instance_id: instance_id.clone(),
            pid: pid as i32,
            pgid: pid as i32,
            signal: self.managed.stop.signal.as_str().into(),
            timeout_ms: self.managed.stop.timeout.as_millis() as u64,
        };
        if let Err(e) = leftovers::record(&self.pids_dir, &record) {
            tracing::warn!(app = %self.app, instance = %self.id, error = %e, "cannot record pid for crash recovery");
        }
        let capture = |stream, reader: Option<Box<dyn tokio::io::AsyncRead + Send + Unpin>>| {
            let (app, label, ring, log) = (
                self.app.to_string(),
                self.id.to_string(),
                self.ring.clone(),
                self.log.clone(),
            );
            tokio::spawn(async move {
                if let Some(reader) = reader {
                    output::capture(reader, stream, app, label, ring, log).await;
                }
            })
        };
        let output = [
            capture(
                Stream::Stdout,
                child.child.stdout.take().map(|r| Box::new(r) as _),
            ),
            capture(
                Stream::Stderr,
                child.child.stderr.take().map(|r| Box::new(r) as _),
            ),
        ];
        let started = Instant::now();
        self.status.send_modify(|s| {
            s.instance_id = Some(instance_id.clone());
            s.pid = Some(pid);
            s.port = Some(port);
            s.started_at = Some(started);
        });
        self.apply(Event::Spawned, format!("pid {pid}, port {port}"));
        Ok(Process {
            child,
            pid,
            instance_id,
            port,
            started,
            output,
        })
    }

    async fn supervise(&self, p: &mut Process, stop: &CancellationToken) -> Supervised {
        let (tx, mut health) = mpsc::channel(16);
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, p.port));
        let (failures, app) = (self.probe_failures.clone(), self.app.clone());
        let check = move |probe: Probe| {
            let (failures, app) = (failures.clone(), app.clone());
            async move {
                let outcome = probe::check(&probe.kind, addr, probe.timeout).await;
                if !outcome.ok {
                    failures.record(app.as_str(), &probe);
                }
                outcome
            }
        };
        let mut probes_rx = self.probes.clone();
        let mut probes = probes_rx.borrow_and_update().clone();
        let mut _monitor = AbortOnDropHandle::new(tokio::spawn(monitor::watch(
            probes.clone(),
            check.clone(),
            tx.clone(),
        )));
        let mut monitoring = true;
        let mut ready = false;
        loop {
            tokio::select! {
                changed = probes_rx.changed() => {
                    if changed.is_err() {
                        continue;
                    }
                    probes = probes_rx.borrow_and_update().clone();
                    let mut next = probes.clone();
                    next.assume_ready = ready;
                    _monitor = AbortOnDropHandle::new(tokio::spawn(monitor::watch(next, check.clone(), tx.clone())));
                    monitoring = true;
                    tracing::info!(event = "probes_updated", app = %self.app, instance = %self.id);
                }
                status = p.child.child.wait() => {
                    let exit = status.map(Exit::from_status).unwrap_or(Exit::Code(-1));
                    return Supervised::Ended { end: End::Exited(exit), uptime: p.started.elapsed(), why: exit.to_string() };
                }
                event = health.recv(), if monitoring => match event {
                    None => monitoring = false,
                    Some(HealthEvent::Probed(outcome)) => self.status.send_modify(|s| s.last_probe = Some(outcome)),
                    Some(HealthEvent::Started(outcome)) => {
                        tracing::info!(event = "startup_passed", app = %self.app, instance = %self.id, probe = %outcome);
                    }
                    Some(HealthEvent::Ready(outcome)) if !ready => {
                        ready = true;
                        self.apply(Event::BecameReady, format!("readiness passed: {outcome}"));
                    }
                    Some(HealthEvent::Ready(_)) => {}
                    Some(HealthEvent::Unready(outcome)) => {
                        ready = false;
                        self.apply(Event::BecameUnready, format!("readiness failed: {outcome}"));
                    }
                    Some(HealthEvent::StartupFailed(outcome) | HealthEvent::LivenessFailed(outcome)) => {
                        let what = if ready || probes.startup.is_none() { "liveness failed" } else { "startup probe failed" };
                        let why = format!("{what} (last probe: {outcome})");
                        tracing::warn!(app = %self.app, instance = %self.id, reason = %why, "stopping unhealthy instance");
                        if ready {
                            // Out of routing before the (maybe slow) stop.
                            self.apply(Event::BecameUnready, why.clone());
                        }
                        let how = self.stop_sequence(p).await;
                        return Supervised::Ended { end: End::Unhealthy, uptime: p.started.elapsed(), why: format!("{why}; {how}") };
                    }
                },
                _ = stop.cancelled() => {
                    self.apply(Event::StopRequested, "stop requested");
                    let how = self.stop_sequence(p).await;
                    self.finish(p).await;
                    self.apply(Event::StopConfirmed, how);
                    return Supervised::Stopped;
                }
            }
        }
    }

    /// Hooks → signal to the group and its escaped descendants → wait
    /// `stop.timeout` → SIGKILL → confirm no process of the instance is
    /// left. A hook with `expect_exit` that gets a 2xx replaces the signal:
    /// the app is given `stop.timeout` to exit by itself first. Returns how
    /// it went, for the event's reason.
    async fn stop_sequence(&self, p: &mut Process) -> String {
        let cfg = &self.managed.stop;
        let mut exiting = false;
        for hook in &cfg.hooks {
            match hooks::send(p.port, hook).await {
                Ok(code) => {
                    tracing::info!(app = %self.app, instance = %self.id, method = %hook.method, path = %hook.path, status = code, "stop hook sent");
                    exiting |= hook.expect_exit && (200..300).contains(&code);
                }
                Err(e) => {
                    tracing::warn!(app = %self.app, instance = %self.id, method = %hook.method, path = %hook.path, error = %e, "stop hook failed; continuing")
                }
            }
        }
        let id = p.instance_id.clone();
        let target = Target {
            pgid: p.pid as i32,
            instance_id: &id,
        };
        let mut deadline = Instant::now() + cfg.timeout;
        let mut how = String::new();
        if exiting {
            let exited = tokio::select! {
                status = p.child.child.wait() => status.ok(),
                _ = tokio::time::sleep_until(deadline) => None,
            };
            if exited.is_some() {
                how.push_str("exited after its stop hook");
                // What it leaves behind gets the usual ladder.
                if !target.members().is_empty() {
                    target.signal(cfg.signal);
                    how.push_str(&format!(", {} to what it left", cfg.signal.as_str()));
                }
            } else {
                tracing::warn!(app = %self.app, instance = %self.id, timeout = %fmt_duration(cfg.timeout), "did not exit after its stop hook in time; sending the stop signal");
                how.push_str("did not exit after its stop hook; ");
                deadline = Instant::now() + cfg.timeout;
            }
        }
        let mut exited = p.child.child.try_wait().ok().flatten();
        if exited.is_none() {
            target.signal(cfg.signal);
            how.push_str(&format!(
                "{} to process group {}",
                cfg.signal.as_str(),
                p.pid
            ));
            exited = tokio::select! {
                status = p.child.child.wait() => status.ok(),
                _ = tokio::time::sleep_until(deadline) => None,
            };
            if exited.is_none() {
                tracing::warn!(app = %self.app, instance = %self.id, timeout = %fmt_duration(cfg.timeout), "did not stop in time; sending SIGKILL to the process group");
                target.signal(nix::sys::signal::Signal::SIGKILL);
                let _ = p.child.child.wait().await;
                how.push_str(", then SIGKILL after the stop timeout");
            }
        }
        if !target.wait_gone(deadline).await.is_empty() {
            how.push_str(", SIGKILL to processes left behind");
            let survivors = target.kill().await;
            self.warn_survivors(p.pid, &survivors);
        }
        how.push_str("; no process of the instance left");
        how
    }

    fn warn_survivors(&self, pgid: u32, survivors: &[i32]) {
        if !survivors.is_empty() {
            tracing::error!(app = %self.app, instance = %self.id, pgid, ?survivors, "processes survived SIGKILL");
        }
    }

    /// After the process ended: forget it and collect the rest of its output.
    async fn finish(&self, p: &mut Process) {
        leftovers::forget(&self.pids_dir, &p.instance_id);
        for task in &mut p.output {
            // The pipes close once the group is gone; bound the wait anyway.
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
        self.status.send_modify(|s| s.pid = None);
    }

    fn record_death(&self, end: End, uptime: Duration, reason: &str) {
        let exit = match end {
            End::Exited(exit) => Some(exit),
            End::NotStarted | End::Unhealthy => None,
        };
        let last_lines = self
            .ring
            .tail(DEATH_LINES)
            .into_iter()
            .map(|l| l.text)
            .collect();
        self.status.send_modify(|s| {
            if s.deaths.len() == DEATHS_KEPT {
                s.deaths.pop_front();
            }
            s.deaths.push_back(DeathRecord {
                at: SystemTime::now(),
                exit,
                uptime,
                reason: reason.to_string(),
                last_lines,
            });
        });
    }
}

impl Process {
    /// Every process of this instance, in its group or escaped from it.
    fn target(&self) -> Target<'_> {
        Target {
            pgid: self.pid as i32,
            instance_id: &self.instance_id,
        }
    }
}

fn program(managed: &ManagedApp) -> String {
    match &managed.command {
        crate::config::Command::Argv(argv) => argv.first().cloned().unwrap_or_default(),
        crate::config::Command::Shell(_) => "/bin/sh".into(),
    }
}

pub(crate) fn fmt_duration(d: Duration) -> String {
    // Millisecond precision reads better than humantime's nanoseconds.
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}
