//! The harbor, started in phases (the caller has validated the config and
//! bound the listeners: [`launch`] sets up and serves the sockets, then
//! [`HarborCtx::serve`] starts the apps) and stopped in phases
//! (`running → draining → stopping_apps → flushing → stopped`).
//!
//! [`run`] is the library entry point: tests and embedders pass port-0
//! listeners and their own shutdown future. [`Harbor`] is the same harbor
//! run in the background for a program that embeds it.

mod harbor;
pub mod listeners;
mod mcp_glue;
mod reload;
mod replace;
mod report;
pub mod routing;
pub mod runtime_dir;
mod tls;
pub mod upgrade;

use std::future::Future;
use std::net::TcpListener;
use std::sync::Arc;

use anyhow::Context;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admin;
use crate::admin::api::RuntimeInfo;
pub use crate::admin::HarborError;
use crate::config::Config;
use crate::gateway::Gateway;
use crate::supervisor::Supervisor;
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
    /// Started by `harbormaster upgrade`: the old process's instances are
    /// alive, so there are no leftovers to sweep (`lifecycle::upgrade`).
    pub upgrading: bool,
}

/// The sockets a harbor serves, bound before anything starts.
#[derive(Debug)]
pub struct Listeners {
    pub gateway: Vec<TcpListener>,
    /// `[gateway.tls] listen`, served with TLS.
    pub tls: Vec<TcpListener>,
    pub admin: TcpListener,
    /// `admin.sock`, when handed over by an upgrade (else bound in the runtime dir).
    pub admin_socket: Option<std::os::unix::net::UnixListener>,
}

/// Binds every `[gateway] listen`, `[gateway.tls] listen` and the admin
/// address (std sets SO_REUSEADDR, so a restart never sees EADDRINUSE from
/// TIME_WAIT). Sockets handed over by systemd or an upgrade: `listeners`.
pub fn bind(config: &Config) -> anyhow::Result<Listeners> {
    listeners::bind_with(config, Vec::new())
}

/// Runs the harbor until `shutdown` resolves (or `POST /v1/shutdown`), then
/// stops it in order (ARCHITECTURE.md, lifecycle semantics):
/// 1. `draining`: `/ready` answers 503; serving goes on for `drain_delay`;
///    listeners close; kept-alive HTTP/1 connections get `Connection: close`
///    and idle ones are closed; HTTP/2 gets GOAWAY; in-flight requests
///    finish, decided by counting, bounded by `drain_timeout`; SSE streams
///    end cleanly after `stream_grace`;
/// 2. `stopping_apps`: apps stop in reverse dependency order;
/// 3. `flushing`: background tasks end, the audit queue is closed and
///    drained (`audit_drained`), runtime.json is removed and the lock
///    released; then `stopped`.
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

/// Sets everything up and serves the sockets (runtime.json is written); no
/// app is started until [`HarborCtx::serve`].
pub async fn launch(
    config: Config,
    runtime: RuntimeDir,
    listeners: Listeners,
    options: Options,
) -> anyhow::Result<Arc<HarborCtx>> {
    let supervisor = Supervisor::with_dirs(runtime.path(), &config.runtime.state_dir)?;
    // Before the gateway: its default max_connections follows the limit.
    let nofile = crate::gateway::limits::raise_nofile();
    tracing::debug!(?nofile, "open-file limit");
    let events = tokio::sync::broadcast::channel(1024).0;
    let breakers = Arc::new(harbor::BreakerEvents(events.clone()));
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let gateway = Gateway::observed(&config.gateway, vec![breakers, metrics.clone()]);
    let audit = match &config.audit {
        Some(a) => Some(crate::audit::Audit::open(a).await?),
        None => None,
    };
    // Subscribed now: no event of the apps' start is missed.
    let counted = events.subscribe();
    let h = HarborCtx::new(config, supervisor.clone(), gateway, events, metrics);
    if let Some(audit) = audit {
        let _ = h.audit.set(audit);
    }
    let config = h.config();
    supervisor
        .take_charge(
            options.subreaper,
            options.guard,
            !options.upgrading,
            h.cancel.child_token(),
        )
        .await?;
    for (name, app) in &config.apps {
        h.externals.watch_app(name, app, &h.cancel);
    }
    let bg = &h.background;
    let (metrics, cancel) = (h.metrics.clone(), h.cancel.child_token());
    bg.spawn(async move { metrics.follow(counted, cancel).await });
    bg.spawn(routing::keep_updated(h.clone(), h.cancel.child_token()));
    if options.watch_config {
        let (file, this) = (config.source.clone(), h.clone());
        bg.spawn(crate::config::watch::on_change(
            file,
            h.cancel.child_token(),
            move || {
                tracing::info!(event = "reload_requested", via = "config file change");
                let this = this.clone();
                async move { drop(this.reload().await) }
            },
        ));
    }
    bg.spawn(reload_on_sighup(h.clone()));
    bg.spawn(crate::systemd::watchdog(h.cancel.child_token()));
    let admin_addr = listeners.admin.local_addr()?;
    h.handover.keep("admin", &listeners.admin);
    tracing::info!(event = "admin_listening", addr = %admin_addr);
    bg.spawn(admin::serve(
        listeners.admin,
        h.clone(),
        h.cancel.child_token(),
    ));
    let socket = match listeners.admin_socket {
        Some(handed) => handed,
        None => runtime
            .bind_socket()
            .with_context(|| format!("cannot listen on {}", runtime.socket_path().display()))?,
    };
    h.handover.keep(listeners::ADMIN_SOCKET, &socket);
    if let Some(lock) = runtime.lock_file() {
        h.handover.keep(listeners::LOCK, lock);
    }
    bg.spawn(admin::serve_socket(
        socket,
        h.clone(),
        h.cancel.child_token(),
    ));
    bg.spawn(announce_ready(h.clone()));
    h.plug_mcp_policy_and_audit()?;
    h.mount_mcp();

    let mut gateway_addrs = Vec::new();
    for listener in listeners.gateway {
        gateway_addrs.push(listener.local_addr()?.to_string());
        h.serve_listener(listener)?;
    }
    if let Some(tls) = &config.gateway.tls {
        gateway_addrs.extend(h.start_tls(tls, listeners.tls)?);
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
    *harbor::lock(&h.runtime) = Some(runtime);
    Ok(h)
}

impl HarborCtx {
    /// Starts the apps and serves until `shutdown` (or a shutdown request),
    /// then stops in order.
    pub async fn serve(self: Arc<Self>, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let h = self;
        // Forwarded until the apps have stopped, then ended (`events_done`).
        let events_done = CancellationToken::new();
        let forwarding = tokio::spawn(h.forward_events(events_done.clone()));
        h.supervisor.start_all(&h.config());
        h.start_mcp();
        tracing::info!(
            event = "started",
            "every app was started or waits for its dependencies"
        );
        tokio::select! {
            _ = shutdown => {}
            _ = h.shutdown_requested.cancelled() => {}
        }
        crate::systemd::stopping();
        h.shutdown(); // a change under way stops at once
        let started = Instant::now();
        drain(&h).await;

        // With the config as reloads left it; a request still arriving on a
        // connection the deadline left open gets 503, not a 502.
        h.set_phase(Phase::StoppingApps);
        let _turn = h.changes.lock().await;
        h.gateway.refuse_requests();
        h.stop_mcp_servers().await;
        h.supervisor.stop_all(&h.config()).await;
        events_done.cancel();
        let _ = forwarding.await;

        h.set_phase(Phase::Flushing);
        h.cancel.cancel();
        h.background.close();
        h.background.wait().await;
        // Admin has stopped taking calls: close the queue, drain, checkpoint.
        if let Some(audit) = h.audit.get() {
            audit.close(h.config().gateway.drain_timeout).await;
        }
        if let Some(runtime) = harbor::lock(&h.runtime).take() {
            runtime.retire();
        }
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
    // Our copies for an upgrade must not keep closed listeners open.
    h.handover.clear();
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
        (idle, mcp_idle) = futures_util::future::join(h.gateway.wait_idle(deadline), h.drain_mcp(deadline)) => idle && mcp_idle,
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
    h.mcp_closing.cancel();
    h.serving.close();
    if tokio::time::timeout_at(deadline, h.serving.wait())
        .await
        .is_err()
    {
        tracing::warn!("connections still open at the drain deadline were closed");
    }
}

/// A running harbor, for programs that embed harbormaster (a desktop app
/// supervising its own local server). Everything [`HarborCtx`] offers —
/// events, phases, health, drain, resume, restart, reload, shutdown — is
/// reached through it; [`Harbor::wait`] awaits the end of the shutdown.
pub struct Harbor {
    harbor: Arc<HarborCtx>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl std::ops::Deref for Harbor {
    type Target = HarborCtx;

    fn deref(&self) -> &HarborCtx {
        &self.harbor
    }
}

impl Harbor {
    /// Takes the runtime dir, binds every listener, and starts the apps in
    /// the background. Fails at once (nothing started) if any of that fails.
    pub async fn start(config: Config, options: Options) -> anyhow::Result<Self> {
        let dir = runtime_dir::locate(None, config.runtime.dir.as_deref(), &config.source);
        let runtime = RuntimeDir::acquire(&dir)?;
        let listeners = bind(&config)?;
        let harbor = launch(config, runtime, listeners, options).await?;
        let task = tokio::spawn(harbor.clone().serve(std::future::pending()));
        Ok(Self { harbor, task })
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
                h.reload().await;
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
            upgrade::tell_ready();
            crate::systemd::ready(&format!(
                "serving {} app(s); every required app is ready",
                h.config().apps.len()
            ));
            return;
        }
        tokio::select! {
            _ = events.recv() => {}
            _ = upstreams.changed() => {}
            _ = h.cancel.cancelled() => return,
        }
    }
}
