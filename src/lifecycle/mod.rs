//! The harbor, started in phases (the caller has validated the config and
//! bound the listeners: [`launch`] sets up and serves the sockets, then
//! [`Launched::serve`] starts the apps) and stopped in phases
//! (`running → draining → stopping_apps → flushing → stopped`).
//!
//! [`run`] is the library entry point: tests and embedders pass port-0
//! listeners and their own shutdown future. [`Harbor`] is the same harbor
//! run in the background for a program that embeds it.

mod harbor;
pub mod reload;
mod replace;
mod report;
pub mod routing;
pub mod runtime_dir;
mod watch;

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admin::api::{Event, Health, Ready, ReloadResult, RuntimeInfo};
pub use crate::admin::HarborError;
use crate::admin::{self, Control};
use crate::config::Config;
use crate::gateway::Gateway;
use crate::supervisor::{reaper, Supervisor};
pub use harbor::{HarborCtx, Phase};
pub use runtime_dir::RuntimeDir;

/// Options that come from the command line rather than the config file.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Become a child subreaper (orphans are re-parented to us and reaped).
    /// The CLI turns it on; an embedding program decides for its own process.
    pub subreaper: bool,
    /// Reload when the config file changes.
    pub watch_config: bool,
    /// Start the guard process that stops every instance if this process
    /// is killed (`supervisor::guard`). Only the harbormaster binary can:
    /// the guard re-executes the current executable.
    pub guard: bool,
}

/// The sockets a harbor serves, bound before anything starts.
#[derive(Debug)]
pub struct Listeners {
    pub gateway: Vec<TcpListener>,
    pub admin: TcpListener,
}

/// Binds every `[gateway] listen` address and the admin address (std sets
/// SO_REUSEADDR, so a restart never sees EADDRINUSE from TIME_WAIT).
pub fn bind(config: &Config) -> anyhow::Result<Listeners> {
    let gateway = config
        .gateway
        .listen
        .iter()
        .map(|addr| {
            TcpListener::bind(addr)
                .with_context(|| format!("cannot listen on {addr} (gateway.listen)"))
        })
        .collect::<anyhow::Result<_>>()?;
    let addr = config.admin.listen;
    let admin = TcpListener::bind(addr)
        .with_context(|| format!("cannot listen on {addr} (admin.listen)"))?;
    Ok(Listeners { gateway, admin })
}

/// Runs the harbor until `shutdown` resolves (or `POST /v1/shutdown`), then
/// stops it in order (ARCHITECTURE.md, lifecycle semantics):
/// 1. `draining`: `/ready` answers 503; serving goes on for `drain_delay`;
///    listeners close; kept-alive HTTP/1 connections get `Connection: close`
///    and idle ones are closed; HTTP/2 gets GOAWAY; in-flight requests
///    finish, decided by counting, bounded by `drain_timeout`; SSE streams
///    end cleanly after `stream_grace`;
/// 2. `stopping_apps`: apps stop in reverse dependency order;
/// 3. `flushing`: background tasks end, runtime.json is removed and the
///    lock released; then `stopped`.
pub async fn run(
    config: Config,
    runtime: RuntimeDir,
    listeners: Listeners,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    launch(config, runtime, listeners, options)
        .await?
        .serve(shutdown)
        .await
}

/// A harbor whose sockets are served and whose runtime.json is written;
/// apps start when it is served.
pub struct Launched {
    harbor: Arc<HarborCtx>,
    runtime: RuntimeDir,
    watch_config: bool,
    /// Ends the forwarding of the apps' state changes, once they stopped.
    events: (CancellationToken, tokio::task::JoinHandle<()>),
}

/// Sets everything up and serves the sockets; no app is started yet.
pub async fn launch(
    config: Config,
    runtime: RuntimeDir,
    listeners: Listeners,
    options: Options,
) -> anyhow::Result<Launched> {
    let supervisor = Supervisor::with_dirs(runtime.path(), &config.runtime.state_dir)?;
    let gateway = Gateway::new(&config.gateway);
    let h = HarborCtx::new(config, supervisor.clone(), gateway);
    let config = h.config();
    if options.subreaper {
        reaper::become_subreaper().context("cannot become a child subreaper")?;
    }
    if reaper::adopts_orphans() {
        reaper::spawn(h.cancel.child_token()).context("cannot watch SIGCHLD")?;
        tracing::info!(pid = std::process::id(), "reaping adopted orphans");
    }
    for line in supervisor.clean_leftovers().await {
        tracing::warn!(event = "leftover_stopped", "{line}");
    }
    if options.guard {
        // Without it, instances still get their parent-death signal and the
        // next start's sweep: worth a warning, not a refusal to start.
        match supervisor.start_guard() {
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

    let nofile = crate::gateway::limits::raise_nofile();
    tracing::debug!(?nofile, "open-file limit");
    for (name, app) in &config.apps {
        h.start_monitors(name, app);
    }
    let bg = &h.background;
    bg.spawn(routing::keep_updated(
        h.router.clone(),
        h.cancel.child_token(),
    ));
    let events_done = CancellationToken::new();
    let forwarding = tokio::spawn(h.forward_events(events_done.clone()));
    let admin_addr = listeners.admin.local_addr()?;
    tracing::info!(event = "admin_listening", addr = %admin_addr);
    bg.spawn(admin::serve(
        listeners.admin,
        h.clone(),
        h.cancel.child_token(),
    ));
    let socket = runtime
        .bind_socket()
        .with_context(|| format!("cannot listen on {}", runtime.socket_path().display()))?;
    bg.spawn(admin::serve_socket(
        socket,
        h.clone(),
        h.cancel.child_token(),
    ));
    bg.spawn(announce_ready(h.clone()));

    let mut gateway_addrs = Vec::new();
    for listener in listeners.gateway {
        gateway_addrs.push(listener.local_addr()?.to_string());
        h.serve_listener(listener)?;
    }
    // Every listener is bound: "runtime.json exists" means "ports are held".
    runtime
        .publish(&RuntimeInfo {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").into(),
            started_at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            config: config.source.display().to_string(),
            gateway: gateway_addrs,
            admin: format!("http://{admin_addr}"),
            socket: runtime.socket_path().display().to_string(),
        })
        .context("cannot write runtime.json")?;
    tracing::info!(
        event = "starting",
        pid = std::process::id(),
        config = %config.source.display(),
        runtime_dir = %runtime.path().display(),
        apps = config.apps.len(),
    );
    Ok(Launched {
        harbor: h,
        runtime,
        watch_config: options.watch_config,
        events: (events_done, forwarding),
    })
}

impl Launched {
    /// The harbor, for embedders and tests (events, phases, status).
    pub fn harbor(&self) -> Arc<HarborCtx> {
        self.harbor.clone()
    }

    /// Starts the apps and serves until `shutdown` (or a shutdown request),
    /// then stops in order.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self {
            harbor: h,
            runtime,
            watch_config,
            events: (events_done, forwarding),
        } = self;
        if watch_config {
            let watching = watch::reload_on_change(h.clone(), h.cancel.child_token());
            h.background.spawn(watching);
        }
        h.background.spawn(reload_on_sighup(h.clone()));
        h.supervisor.start_all(&h.config());
        tracing::info!(
            event = "started",
            "every app was started or waits for its dependencies"
        );
        tokio::select! {
            _ = shutdown => {}
            _ = h.shutdown.cancelled() => {}
        }
        h.shutdown.cancel(); // a change under way stops at once
        let started = Instant::now();
        drain(&h).await;

        // With the config as reloads left it; a request still arriving on a
        // connection the deadline left open gets 503, not a 502.
        h.set_phase(Phase::StoppingApps);
        let _turn = h.changes.lock().await;
        h.gateway.refuse_requests();
        h.supervisor.stop_all(&h.config()).await;
        events_done.cancel();
        let _ = forwarding.await;

        h.set_phase(Phase::Flushing);
        h.cancel.cancel();
        h.background.close();
        h.background.wait().await;
        runtime.retire();
        tracing::info!(
            event = "shutdown_complete",
            duration_ms = started.elapsed().as_millis() as u64
        );
        h.set_phase(Phase::Stopped);
        Ok(())
    }
}

/// The `draining` phase: `/ready` 503, `drain_delay`, listeners close,
/// in-flight work finishes by count (streams end after `stream_grace`).
async fn drain(h: &HarborCtx) {
    let config = h.config();
    h.set_phase(Phase::Draining);
    tracing::info!(
        event = "shutdown_started",
        in_flight = h.gateway.in_flight()
    );
    tokio::time::sleep(config.gateway.drain_delay).await;
    h.stop_accepting.cancel();
    let drain_start = Instant::now();
    let deadline = drain_start + config.gateway.drain_timeout;
    let in_flight = h.gateway.in_flight();
    let streams_ended = async {
        tokio::time::sleep(config.gateway.stream_grace).await;
        h.gateway.end_streams();
        std::future::pending::<()>().await
    };
    let idle = tokio::select! {
        idle = h.gateway.wait_idle(deadline) => idle,
        _ = streams_ended => unreachable!("pending"),
    };
    if idle {
        tracing::info!(
            event = "shutdown_drained",
            in_flight,
            duration_ms = drain_start.elapsed().as_millis() as u64
        );
    } else {
        let cut = h.gateway.in_flight();
        tracing::warn!(
            event = "shutdown_timeout_reached",
            in_flight,
            cut,
            "in-flight requests cut at drain_timeout"
        );
    }
    h.gateway.end_streams();
    h.serving.close();
    if tokio::time::timeout_at(deadline, h.serving.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open at the drain deadline were closed");
    }
}

/// A running harbor, for programs that embed harbormaster (a desktop app
/// supervising its own local server): subscribe to events and phases, drain
/// or resume apps, restart and reload, ask for a graceful shutdown and await
/// its completion.
pub struct Harbor {
    harbor: Arc<HarborCtx>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Harbor {
    /// Takes the runtime dir, binds every listener, and starts the apps in
    /// the background. Fails at once (nothing started) if any of that fails.
    pub async fn start(config: Config, options: Options) -> anyhow::Result<Self> {
        let dir = runtime_dir::locate(None, config.runtime.dir.as_deref(), &config.source);
        let runtime = RuntimeDir::acquire(&dir)?;
        let listeners = bind(&config)?;
        let launched = launch(config, runtime, listeners, options).await?;
        let harbor = launched.harbor();
        let task = tokio::spawn(launched.serve(std::future::pending()));
        Ok(Self { harbor, task })
    }

    /// Every event from now on: the same events as `GET /v1/events`.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.harbor.subscribe()
    }

    /// The shutdown phase, as it changes.
    pub fn phase(&self) -> tokio::sync::watch::Receiver<Phase> {
        self.harbor.phase()
    }

    /// What `GET /health` answers: apps, instances, states, breakers, in-flight.
    pub fn status(&self) -> Health {
        self.harbor.health()
    }

    /// Whether every required app is ready (what `GET /ready` answers).
    pub fn readiness(&self) -> Ready {
        self.harbor.readiness()
    }

    /// Stop routing new requests to `app` (503 + Retry-After).
    pub fn drain(&self, app: &str) -> Result<(), HarborError> {
        self.harbor.set_draining(app, true)
    }

    /// Undo [`Harbor::drain`].
    pub fn resume(&self, app: &str) -> Result<(), HarborError> {
        self.harbor.set_draining(app, false)
    }

    /// Rolling restart of a managed app: the new instances are ready before
    /// the old ones drain and stop; `timeout` bounds the wait for readiness.
    pub async fn restart(&self, app: &str, timeout: Option<Duration>) -> Result<(), HarborError> {
        self.harbor.restart_now(app, timeout).await
    }

    /// Reloads the config file: applies exactly the change, or nothing if it is invalid.
    pub async fn reload(&self) -> ReloadResult {
        self.harbor.reload_file().await
    }

    /// Asks for the ordered graceful shutdown; [`Harbor::wait`] sees it end.
    pub fn shutdown(&self) {
        self.harbor.request_shutdown();
    }

    /// Waits until the harbor has stopped.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("the harbor task panicked")?
    }
}

/// SIGHUP reloads the config file (errors are logged; nothing changes then).
async fn reload_on_sighup(h: Arc<HarborCtx>) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot handle SIGHUP; reload with `harbormaster reload`");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!(event = "reload_requested", via = "SIGHUP");
                h.reload_file().await;
            }
            _ = h.cancel.cancelled() => return,
        }
    }
}

/// Logs one `ready` event when every required app first has a ready instance.
async fn announce_ready(h: Arc<HarborCtx>) {
    let mut events = h.subscribe();
    let mut upstreams = h.externals.changes();
    loop {
        if h.readiness().reasons.is_empty() {
            tracing::info!(event = "ready", "every required app is ready");
            return;
        }
        tokio::select! {
            _ = events.recv() => {}
            _ = upstreams.changed() => {}
            _ = h.cancel.cancelled() => return,
        }
    }
}
