//! The harbor: one running configuration — supervisor, gateway and the
//! cancellation tree — started in phases (the caller has validated the config
//! and bound the listeners) and stopped in order.
//!
//! [`run`] is the library entry point: tests and embedders pass port-0
//! listeners and their own shutdown future.

pub mod reload;
pub mod rolling;
pub mod routing;
pub mod runtime_dir;
mod watch;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;

use anyhow::Context;
use std::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admin;
use crate::admin::api::RuntimeInfo;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::health::upstreams::ExternalHealth;
use crate::supervisor::{reaper, Supervisor};
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
/// 1. `/ready` answers 503; serving goes on for `drain_delay`;
/// 2. listeners close; kept-alive HTTP/1 connections get `Connection: close`
///    and idle ones are closed; HTTP/2 gets GOAWAY;
/// 3. in-flight requests finish, decided by counting, bounded by
///    `drain_timeout`; SSE streams end cleanly after `stream_grace`;
/// 4. apps stop in reverse dependency order with their stop sequence;
/// 5. runtime.json is removed and the lock released.
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
    reloader: Arc<reload::Reloader>,
    watch_config: bool,
    config: Arc<ArcSwap<Config>>,
    runtime: RuntimeDir,
    supervisor: Supervisor,
    gateway: Arc<Gateway>,
    view: Arc<admin::View>,
    cancel: CancellationToken,
    stop_accepting: CancellationToken,
    shutting_down: Arc<AtomicBool>,
    routing: tokio::task::JoinHandle<()>,
    admin_server: tokio::task::JoinHandle<std::io::Result<()>>,
    socket_server: tokio::task::JoinHandle<std::io::Result<()>>,
    servers: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// Sets everything up and serves the sockets; no app is started yet.
pub async fn launch(
    config: Config,
    runtime: RuntimeDir,
    listeners: Listeners,
    options: Options,
) -> anyhow::Result<Launched> {
    let current = Arc::new(ArcSwap::from_pointee(config));
    let config = current.load_full();
    let runtime_dir = runtime.path().to_path_buf();
    let supervisor = Supervisor::with_dirs(&runtime_dir, &config.runtime.state_dir)?;
    let cancel = CancellationToken::new();
    if options.subreaper {
        reaper::become_subreaper().context("cannot become a child subreaper")?;
    }
    if reaper::adopts_orphans() {
        reaper::spawn(cancel.child_token()).context("cannot watch SIGCHLD")?;
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
    let gateway = Gateway::new(&config.gateway);
    let externals = Arc::new(ExternalHealth::default());
    let stop_accepting = cancel.child_token();
    let shutting_down = Arc::new(AtomicBool::new(false));
    let last_reload = Arc::new(std::sync::Mutex::new(None));
    let router = Arc::new(routing::Router::new(
        current.clone(),
        supervisor.clone(),
        externals.clone(),
        gateway.clone(),
    ));
    let reloader = Arc::new(reload::Reloader::new(
        router.clone(),
        current.clone(),
        supervisor.clone(),
        gateway.clone(),
        externals.clone(),
        shutting_down.clone(),
        cancel.child_token(),
        stop_accepting.clone(),
        last_reload.clone(),
    ));
    for (name, app) in &config.apps {
        reloader.start_monitors(name, app);
    }
    let routing = tokio::spawn(routing::keep_updated(router.clone(), cancel.child_token()));
    let view = Arc::new(admin::View {
        config: current.clone(),
        supervisor: supervisor.clone(),
        gateway: gateway.clone(),
        externals: externals.clone(),
        started: Instant::now(),
        shutting_down: shutting_down.clone(),
        shutdown: CancellationToken::new(),
        restarting: Default::default(),
        restart_errors: Default::default(),
        last_reload,
        reload: {
            let reloader = reloader.clone();
            Arc::new(move || {
                let reloader = reloader.clone();
                Box::pin(async move { reloader.reload_file().await })
            })
        },
        restart: {
            let router = router.clone();
            Arc::new(move |app| Box::pin(rolling::restart(router.clone(), app)))
        },
    });
    let admin_addr = listeners.admin.local_addr()?;
    tracing::info!(event = "admin_listening", addr = %admin_addr);
    let admin_server = tokio::spawn(admin::serve(
        listeners.admin,
        view.clone(),
        cancel.child_token(),
    ));
    let socket = runtime
        .bind_socket()
        .with_context(|| format!("cannot listen on {}", runtime.socket_path().display()))?;
    let socket_server = tokio::spawn(admin::serve_socket(
        socket,
        view.clone(),
        cancel.child_token(),
    ));
    tokio::spawn(announce_ready(view.clone(), cancel.child_token()));

    let mut servers = Vec::new();
    let mut gateway_addrs = Vec::new();
    for listener in listeners.gateway {
        gateway_addrs.push(listener.local_addr()?.to_string());
        servers.push(reloader.serve_listener(listener)?);
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
        runtime_dir = %runtime_dir.display(),
        apps = config.apps.len(),
    );
    Ok(Launched {
        reloader,
        watch_config: options.watch_config,
        config: current,
        runtime,
        supervisor,
        gateway,
        view,
        cancel,
        stop_accepting,
        shutting_down,
        routing,
        admin_server,
        socket_server,
        servers,
    })
}

impl Launched {
    /// Starts the apps and serves until `shutdown` (or a shutdown request),
    /// then stops in order.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let Self {
            reloader,
            watch_config,
            config: current,
            runtime,
            supervisor,
            gateway,
            view,
            cancel,
            stop_accepting,
            shutting_down,
            routing,
            admin_server,
            socket_server,
            servers,
        } = self;
        let config = current.load_full();
        if watch_config {
            tokio::spawn(watch::reload_on_change(
                reloader.clone(),
                cancel.child_token(),
            ));
        }
        tokio::spawn(reload_on_sighup(reloader, cancel.child_token()));
        let requested = view.shutdown.clone();
        let shutdown = async move {
            tokio::select! {
                _ = shutdown => {}
                _ = requested.cancelled() => {}
            }
        };
        tokio::pin!(shutdown);
        tokio::select! {
            _ = supervisor.start_all(&config) => {
                tracing::info!(event = "started", "every app was started");
                shutdown.await;
            }
            _ = &mut shutdown => {}
        }

        // 1.
        let started = Instant::now();
        shutting_down.store(true, Ordering::Release);
        tracing::info!(event = "shutdown_started", in_flight = gateway.in_flight());
        tokio::time::sleep(config.gateway.drain_delay).await;
        // 2.
        stop_accepting.cancel();
        let drain_start = Instant::now();
        let deadline = drain_start + config.gateway.drain_timeout;
        // 3.
        let streams = {
            let (gateway, grace) = (gateway.clone(), config.gateway.stream_grace);
            tokio::spawn(async move {
                tokio::time::sleep(grace).await;
                gateway.end_streams();
            })
        };
        let in_flight = gateway.in_flight();
        if gateway.wait_idle(deadline).await {
            tracing::info!(
                event = "shutdown_drained",
                in_flight,
                duration_ms = drain_start.elapsed().as_millis() as u64
            );
        } else {
            tracing::warn!(
                event = "shutdown_timeout_reached",
                in_flight,
                cut = gateway.in_flight(),
                "in-flight requests cut at drain_timeout"
            );
        }
        streams.abort();
        gateway.end_streams();
        for server in servers {
            if tokio::time::timeout_at(deadline, server).await.is_err() {
                tracing::warn!("connections still open at the drain deadline were closed");
            }
        }
        // 4. (with the config as reloads left it); a request still arriving
        // on a connection the deadline left open gets 503, not a 502.
        gateway.refuse_requests();
        supervisor.stop_all(&current.load_full()).await;
        cancel.cancel();
        let _ = routing.await;
        let _ = admin_server.await;
        let _ = socket_server.await;
        // 5.
        runtime.retire();
        tracing::info!(
            event = "shutdown_complete",
            duration_ms = started.elapsed().as_millis() as u64
        );
        Ok(())
    }
}

/// A running harbor, for programs that embed harbormaster (a desktop app
/// supervising its own local server): subscribe to state changes, drain or
/// resume apps, ask for a graceful shutdown and await its completion.
pub struct Harbor {
    supervisor: Supervisor,
    view: Arc<admin::View>,
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
        let (supervisor, view) = (launched.supervisor.clone(), launched.view.clone());
        let task = tokio::spawn(launched.serve(std::future::pending()));
        Ok(Self {
            supervisor,
            view,
            task,
        })
    }

    /// Every instance state change from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<crate::supervisor::StateChange> {
        self.supervisor.subscribe()
    }

    /// What `GET /health` answers: apps, instances, states, breakers, in-flight.
    pub fn status(&self) -> admin::api::Health {
        self.view.health()
    }

    /// Whether every required app is ready (what `GET /ready` answers).
    pub fn readiness(&self) -> admin::api::Ready {
        self.view.readiness()
    }

    /// Stop routing new requests to `app` (503 + Retry-After); `false` if unknown.
    pub fn drain(&self, app: &str) -> bool {
        self.switch(app, true)
    }

    /// Undo [`Harbor::drain`]; `false` if the app is unknown.
    pub fn resume(&self, app: &str) -> bool {
        self.switch(app, false)
    }

    fn switch(&self, app: &str, draining: bool) -> bool {
        match crate::config::AppName::new(app)
            .ok()
            .filter(|a| self.view.config.load().apps.contains_key(a))
        {
            Some(name) => {
                self.view.gateway.set_draining(&name, draining);
                true
            }
            None => false,
        }
    }

    /// Rolling restart of a managed app: each new instance is ready before
    /// the old one drains and stops.
    pub async fn restart(&self, app: &str) -> Result<(), String> {
        let name =
            crate::config::AppName::new(app).map_err(|e| format!("invalid app name: {e}"))?;
        (self.view.restart)(name).await
    }

    /// Reloads the config file: applies exactly the change, or nothing if it is invalid.
    pub async fn reload(&self) -> admin::api::ReloadResult {
        (self.view.reload)().await
    }

    /// Asks for the ordered graceful shutdown; [`Harbor::wait`] sees it end.
    pub fn shutdown(&self) {
        self.view.shutdown.cancel();
    }

    /// Waits until the harbor has stopped.
    pub async fn wait(self) -> anyhow::Result<()> {
        self.task.await.context("the harbor task panicked")?
    }
}

/// SIGHUP reloads the config file (errors are logged; nothing changes then).
async fn reload_on_sighup(reloader: Arc<reload::Reloader>, cancel: CancellationToken) {
    let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) else {
        tracing::warn!("cannot handle SIGHUP; reload with `harbormaster reload`");
        return;
    };
    loop {
        tokio::select! {
            _ = hup.recv() => {
                tracing::info!(event = "reload_requested", via = "SIGHUP");
                reloader.reload_file().await;
            }
            _ = cancel.cancelled() => return,
        }
    }
}

/// Logs one `ready` event when every required app first has a ready instance.
async fn announce_ready(view: Arc<admin::View>, cancel: CancellationToken) {
    let mut states = view.supervisor.subscribe();
    let mut upstreams = view.externals.changes();
    loop {
        if view.readiness().reasons.is_empty() {
            tracing::info!(event = "ready", "every required app is ready");
            return;
        }
        tokio::select! {
            _ = states.recv() => {}
            _ = upstreams.changed() => {}
            _ = cancel.cancelled() => return,
        }
    }
}
