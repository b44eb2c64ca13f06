//! The data plane: listeners, the route table, balancing, forwarding with
//! streaming bodies and upgrades, in-flight accounting and the gateway's own
//! error responses.
//!
//! The gateway never talks to the supervisor: it serves whatever
//! [`RouteTable`] it was last given (`update`), and the lifecycle layer
//! rebuilds that table from instance states.
//!
//! Threading: one worker thread per core, each with a current-thread tokio
//! runtime and its own upstream connection pool, all accepting on the same
//! listening socket. A request and its upstream connection then live on one
//! thread; on a work-stealing runtime each request crossed threads twice
//! (client task ⇄ pooled connection task), and the wake-ups cost half the
//! throughput (bench/RESULTS.md). The route table and counters are shared.

mod balance;
mod forward;
pub mod inflight;
mod pool;
mod responses;
pub mod routes;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{AppName, CircuitBreaker, GatewayConfig};
use crate::health::breaker::Breaker;
pub use inflight::Counter;
pub use routes::{AppShared, RouteTable, Upstream};

/// Bodies going both ways: streamed, never buffered whole.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

pub struct Gateway {
    table: ArcSwap<RouteTable>,
    connect_timeout: Duration,
    server: auto::Builder<TokioExecutor>,
    connections: Arc<Semaphore>,
    response_timeout: Duration,
    access_log: bool,
    /// Every request in flight, all apps.
    in_flight: Arc<Counter>,
    /// Per-app state kept across table snapshots.
    apps: Mutex<HashMap<AppName, Arc<AppShared>>>,
    /// Per-instance counters kept across snapshots, by label.
    upstreams: Mutex<HashMap<String, Arc<Counter>>>,
    /// Per-instance circuit breakers kept across snapshots, by label.
    breakers: Mutex<HashMap<String, Arc<Mutex<Breaker>>>>,
    /// Cancelled to end long-lived streams (SSE) cleanly during a drain.
    streams_end: CancellationToken,
    /// Instances a rolling restart is replacing, by label.
    retired: Mutex<HashMap<String, Arc<std::sync::atomic::AtomicBool>>>,
    /// Upgraded connections (WebSocket tunnels) outlive their HTTP
    /// connection; workers wait for them before their runtime goes away.
    tunnels: tokio_util::task::TaskTracker,
}

impl Gateway {
    pub fn new(cfg: &GatewayConfig) -> Arc<Self> {
        let mut server = auto::Builder::new(TokioExecutor::new());
        server
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(cfg.header_read_timeout)
            // hyper's floor is 8 KiB; the head is refused with 431 past it.
            .max_buf_size((cfg.max_header_bytes as usize).max(8192))
            .keep_alive(true);
        server
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(cfg.max_header_bytes);

        Arc::new(Self {
            table: ArcSwap::from_pointee(RouteTable::default()),
            connect_timeout: cfg.upstream_connect_timeout,
            server,
            connections: Arc::new(Semaphore::new(cfg.max_connections as usize)),
            response_timeout: cfg.upstream_response_timeout,
            access_log: cfg.access_log,
            in_flight: Arc::new(Counter::default()),
            apps: Mutex::new(HashMap::new()),
            upstreams: Mutex::new(HashMap::new()),
            breakers: Mutex::new(HashMap::new()),
            streams_end: CancellationToken::new(),
            retired: Mutex::new(HashMap::new()),
            tunnels: tokio_util::task::TaskTracker::new(),
        })
    }

    /// Swaps in a new route table; requests already routed keep their snapshot.
    pub fn update(&self, table: RouteTable) {
        self.table.store(Arc::new(table));
    }

    /// The per-app state to build tables with (created on first use).
    pub fn app_shared(&self, app: &AppName) -> Arc<AppShared> {
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        apps.entry(app.clone()).or_default().clone()
    }

    /// All per-app state, for building a table.
    pub fn apps_shared(
        &self,
        names: impl IntoIterator<Item = AppName>,
    ) -> HashMap<AppName, Arc<AppShared>> {
        names
            .into_iter()
            .map(|n| (n.clone(), self.app_shared(&n)))
            .collect()
    }

    /// The in-flight counter of an instance or external address, by label.
    pub fn upstream_counter(&self, label: &str) -> Arc<Counter> {
        let mut ups = self.upstreams.lock().unwrap_or_else(|p| p.into_inner());
        ups.entry(label.to_string()).or_default().clone()
    }

    /// The circuit breaker of an instance or external address, by label.
    pub fn upstream_breaker(&self, label: &str, cfg: &CircuitBreaker) -> Arc<Mutex<Breaker>> {
        let mut breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        breakers
            .entry(label.to_string())
            .or_insert_with(|| Arc::new(Mutex::new(Breaker::new(cfg.clone()))))
            .clone()
    }

    /// A routable upstream with the counters, breaker and retirement flag
    /// kept for `label` across table snapshots.
    pub fn upstream(
        &self,
        label: &str,
        addr: std::net::SocketAddr,
        cfg: &CircuitBreaker,
    ) -> Upstream {
        let retired = {
            let mut flags = self.retired.lock().unwrap_or_else(|p| p.into_inner());
            flags.entry(label.to_string()).or_default().clone()
        };
        Upstream::new(
            label.to_string(),
            addr,
            self.upstream_counter(label),
            self.upstream_breaker(label, cfg),
        )
        .with_retired(retired)
    }

    /// No new request goes to `label` from now on; then waits until its
    /// in-flight requests are done (true) or `deadline` passes (false).
    pub async fn retire(&self, label: &str, deadline: Instant) -> bool {
        {
            let mut flags = self.retired.lock().unwrap_or_else(|p| p.into_inner());
            flags
                .entry(label.to_string())
                .or_default()
                .store(true, Ordering::SeqCst);
        }
        self.upstream_counter(label).wait_idle(deadline).await
    }

    /// Forgets a stopped instance's per-label state.
    pub fn forget_upstream(&self, label: &str) {
        self.retired
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(label);
        self.upstreams
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(label);
        self.breakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(label);
    }

    /// An instance's breaker state now (`closed` when it never saw a request).
    pub fn breaker_state(&self, label: &str) -> &'static str {
        let breakers = self.breakers.lock().unwrap_or_else(|p| p.into_inner());
        breakers.get(label).map_or("closed", |b| {
            b.lock()
                .unwrap_or_else(|p| p.into_inner())
                .state(Instant::now())
                .name()
        })
    }

    /// In flight to one instance, by label.
    pub fn upstream_in_flight(&self, label: &str) -> usize {
        self.upstream_counter(label).get()
    }

    /// Whether an app is draining.
    pub fn is_draining(&self, app: &AppName) -> bool {
        self.app_shared(app).draining.load(Ordering::Acquire)
    }

    /// Draining apps answer new requests 503 + Retry-After + Connection: close.
    pub fn set_draining(&self, app: &AppName, draining: bool) {
        self.app_shared(app)
            .draining
            .store(draining, Ordering::Release);
    }

    /// Ends every open SSE stream cleanly (after the drain's `stream_grace`).
    pub fn end_streams(&self) {
        self.streams_end.cancel();
    }

    /// Requests in flight across all apps.
    pub fn in_flight(&self) -> usize {
        self.in_flight.get()
    }

    /// Requests in flight for one app.
    pub fn app_in_flight(&self, app: &AppName) -> usize {
        self.app_shared(app).in_flight.get()
    }

    /// Waits until nothing is in flight (true) or `deadline` passes (false).
    pub async fn wait_idle(&self, deadline: Instant) -> bool {
        self.in_flight.wait_idle(deadline).await
    }

    /// Serves `listener` on one worker thread per core until `shutdown`;
    /// then every worker stops accepting (the socket closes with the last
    /// one) and asks open connections to finish: `Connection: close` for
    /// HTTP/1, GOAWAY for HTTP/2. Resolves once every connection has closed.
    pub async fn serve(
        self: Arc<Self>,
        listener: std::net::TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        listener.set_nonblocking(true)?;
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut finished = Vec::with_capacity(workers);
        for i in 0..workers {
            let listener = listener.try_clone()?;
            let (gw, shutdown) = (self.clone(), shutdown.clone());
            let (done, rx) = tokio::sync::oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("gateway-{i}"))
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt.block_on(gw.worker(listener, shutdown)),
                        Err(e) => tracing::error!(error = %e, "cannot start a gateway worker"),
                    }
                    let _ = done.send(());
                })?;
            finished.push(rx);
        }
        drop(listener);
        for rx in finished {
            let _ = rx.await;
        }
        Ok(())
    }

    async fn worker(self: Arc<Self>, listener: std::net::TcpListener, shutdown: CancellationToken) {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot register the listener");
                return;
            }
        };
        let upstreams = pool::Pool::new(self.connect_timeout);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            let permit = tokio::select! {
                p = self.connections.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = shutdown.cancelled() => break,
            };
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // EMFILE and friends: back off briefly instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            let _ = stream.set_nodelay(true);
            let (gw, upstreams) = (self.clone(), upstreams.clone());
            // X-Forwarded-For for this connection, made once.
            let client = hyper::header::HeaderValue::from_str(&peer.ip().to_string())
                .unwrap_or_else(|_| hyper::header::HeaderValue::from_static("unknown"));
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let (gw, upstreams, client) = (gw.clone(), upstreams.clone(), client.clone());
                async move { Ok::<_, Infallible>(forward::handle(gw, upstreams, req, &client).await) }
            });
            let conn = self
                .server
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                drop(permit);
            });
        }
        drop(listener);
        graceful.shutdown().await;
        // Tunnels end by themselves or at the drain's stream_grace.
        self.tunnels.close();
        self.tunnels.wait().await;
    }
}

/// One worker's pool of upstream connections (cheap to clone: shared).
pub(crate) type Upstreams = pool::Pool;
