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
//! throughput (bench/RESULTS.md). Each worker routes with its own copy of
//! the route table (`published`) and counts in its own shard of each
//! counter (`crate::sharded`): what two cores write on every request costs
//! each of them a cache miss.

mod affinity;
mod balance;
pub mod conn;
mod forward;
mod h1;
mod h1_server;
pub mod inflight;
pub mod limits;
pub mod mount;
mod outcome;
mod pool;
mod published;
mod request;
mod responses;
pub mod routes;
pub mod tls;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
use crate::observe::{AccessLog, Observer, Observers};
pub use inflight::Counter;
pub use pool::ConnLimit;
pub use routes::{AppShared, InstanceBreaker, RouteTable, Upstream};

/// Bodies going both ways: streamed, never buffered whole.
pub use h1::BoxError;
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// What an instance (or external address) keeps across table snapshots.
#[derive(Debug)]
struct InstanceShared {
    in_flight: Arc<Counter>,
    breaker: Arc<InstanceBreaker>,
    /// Set when a rolling restart replaces the instance.
    retired: Arc<AtomicBool>,
    /// `max_upstream_connections`, one permit per open connection.
    conns: Arc<ConnLimit>,
}

pub struct Gateway {
    table: published::Published,
    connect_timeout: Duration,
    server: auto::Builder<TokioExecutor>,
    connections: Arc<Semaphore>,
    /// Client connections being served (a worker waiting in accept holds a
    /// permit of `connections` too, so those cannot be counted from it).
    open: Arc<std::sync::atomic::AtomicUsize>,
    timeouts: conn::Timeouts,
    /// The request head size hyper is configured with (`max_header_bytes`).
    max_head: usize,
    response_timeout: Duration,
    upstream_idle_timeout: Duration,
    max_upstream_connections: usize,
    /// `worker_cpu_affinity = "auto"`: pin each worker thread to a CPU.
    pin_workers: bool,
    /// Who gets each request's outcome (the access log, when on).
    observers: Observers,
    /// Every request in flight, all apps.
    in_flight: Arc<Counter>,
    /// Per-app state kept across table snapshots.
    apps: Mutex<HashMap<AppName, Arc<AppShared>>>,
    /// Per-instance state kept across snapshots, by label.
    instances: Mutex<HashMap<String, Arc<InstanceShared>>>,
    /// Every worker's upstream pool, so a saturated instance can take back
    /// a connection another worker keeps idle.
    pools: pool::Registry,
    /// Set once apps are being stopped at shutdown: a request that still
    /// arrives gets `503 shutting down` rather than a 502.
    refusing: AtomicBool,
    /// Cancelled to end long-lived streams (SSE) cleanly during a drain.
    streams_end: CancellationToken,
    /// Upgraded connections (WebSocket tunnels) outlive their HTTP
    /// connection; workers wait for them before their runtime goes away.
    tunnels: tokio_util::task::TaskTracker,
    /// A service answering some requests itself (the MCP front).
    mounted: arc_swap::ArcSwapOption<mount::Mount>,
}

impl Gateway {
    pub fn new(cfg: &GatewayConfig) -> Arc<Self> {
        Self::observed(cfg, Vec::new())
    }

    /// A gateway that tells `observers` (and the access log, when it is
    /// on) what it does.
    pub fn observed(cfg: &GatewayConfig, mut observers: Vec<Arc<dyn Observer>>) -> Arc<Self> {
        if cfg.access_log {
            observers.push(Arc::new(AccessLog));
        }
        let mut server = auto::Builder::new(TokioExecutor::new());
        server
            .http1()
            .timer(TokioTimer::new())
            // Head and idle limits are kept per connection (`conn`), which
            // also covers protocol detection; hyper's own would close idle
            // keep-alive connections at the header timeout.
            .header_read_timeout(None)
            // hyper's floor is 8 KiB; the head is refused with 431 past it.
            // (`max_head` too: `h1_server` hands longer heads to hyper.)
            .max_buf_size((cfg.max_header_bytes as usize).max(8192))
            .keep_alive(true);
        server
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(cfg.max_header_bytes)
            .max_concurrent_streams(cfg.http2_max_concurrent_streams)
            .keep_alive_interval(Some(cfg.client_idle_timeout))
            .keep_alive_timeout(cfg.header_read_timeout);
        let max_connections = cfg
            .max_connections
            .map_or_else(limits::default_max_connections, |n| n as usize);
        tracing::debug!(max_connections, "gateway connection limit");

        Arc::new(Self {
            table: published::Published::new(),
            connect_timeout: cfg.upstream_connect_timeout,
            server,
            connections: Arc::new(Semaphore::new(max_connections)),
            open: Arc::default(),
            timeouts: conn::Timeouts {
                header: cfg.header_read_timeout,
                idle: cfg.client_idle_timeout,
            },
            max_head: (cfg.max_header_bytes as usize).max(8192),
            response_timeout: cfg.upstream_response_timeout,
            upstream_idle_timeout: cfg.upstream_idle_timeout,
            max_upstream_connections: cfg.max_upstream_connections as usize,
            pin_workers: cfg.pin_workers,
            observers: Observers::new(observers),
            in_flight: Arc::new(Counter::default()),
            apps: Mutex::new(HashMap::new()),
            instances: Mutex::new(HashMap::new()),
            pools: pool::Registry::default(),
            refusing: AtomicBool::new(false),
            streams_end: CancellationToken::new(),
            tunnels: tokio_util::task::TaskTracker::new(),
            mounted: arc_swap::ArcSwapOption::empty(),
        })
    }

    /// Mounts (or with `None` removes) a service that answers the requests
    /// it claims before routing (the MCP front).
    pub fn mount(&self, service: Option<Arc<dyn mount::Mounted>>) {
        self.mounted
            .store(service.map(|s| Arc::new(mount::Mount(s))));
    }

    /// Swaps in a new route table; requests already routed keep their snapshot.
    pub fn update(&self, table: RouteTable) {
        self.table.store(table);
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

    /// What `label` keeps across snapshots, created on first use.
    fn instance(&self, app: &AppName, label: &str, cfg: &CircuitBreaker) -> Arc<InstanceShared> {
        let mut instances = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        instances
            .entry(label.to_string())
            .or_insert_with(|| {
                Arc::new(InstanceShared {
                    in_flight: Arc::default(),
                    breaker: Arc::new(
                        InstanceBreaker::new(Breaker::new(cfg.clone()))
                            .observed(app.as_str(), self.observers.clone()),
                    ),
                    retired: Arc::default(),
                    conns: ConnLimit::new(self.max_upstream_connections),
                })
            })
            .clone()
    }

    /// What `label` keeps, if it was ever routed (reads create nothing).
    fn known(&self, label: &str) -> Option<Arc<InstanceShared>> {
        let instances = self.instances.lock().unwrap_or_else(|p| p.into_inner());
        instances.get(label).cloned()
    }

    /// A routable upstream with the counters, breaker, retirement flag and
    /// connection limit kept for `label` across table snapshots.
    pub fn upstream(
        &self,
        app: &AppName,
        label: &str,
        addr: std::net::SocketAddr,
        cfg: &CircuitBreaker,
    ) -> Upstream {
        let shared = self.instance(app, label, cfg);
        Upstream::new(
            label.to_string(),
            addr,
            shared.in_flight.clone(),
            shared.breaker.clone(),
        )
        .with_shared(
            shared.retired.clone(),
            shared.conns.clone(),
            self.app_shared(app).in_flight.clone(),
            self.in_flight.clone(),
        )
        .observed(self.observers.clone())
    }

    /// No new request goes to `label` from now on; then waits until its
    /// in-flight requests are done (true) or `deadline` passes (false).
    pub async fn retire(&self, label: &str, deadline: Instant) -> bool {
        let Some(shared) = self.known(label) else {
            return true;
        };
        shared.retired.store(true, Ordering::SeqCst);
        shared.in_flight.wait_idle(deadline).await
    }

    /// Forgets a stopped instance's per-label state.
    pub fn forget_upstream(&self, label: &str) {
        self.instances
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(label);
    }

    /// An instance's breaker state now (`closed` when it never saw a request).
    pub fn breaker_state(&self, label: &str) -> &'static str {
        self.known(label)
            .map_or("closed", |s| s.breaker.state(Instant::now()).name())
    }

    /// In flight to one instance, by label.
    pub fn upstream_in_flight(&self, label: &str) -> usize {
        self.known(label).map_or(0, |s| s.in_flight.get())
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

    /// Client connections open now, all listeners.
    pub fn connections(&self) -> usize {
        self.open.load(Ordering::Relaxed)
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

    /// From now on a request that still arrives gets `503 shutting down`
    /// (the apps are being stopped).
    pub fn refuse_requests(&self) {
        self.refusing.store(true, Ordering::Release);
    }

    /// Serves `listener` on one worker thread per core until `shutdown`;
    /// then every worker stops accepting (the socket closes with the last
    /// one) and its connections close as `conn` describes: GOAWAY for
    /// HTTP/2, `Connection: close` on every further HTTP/1 response, idle
    /// ones once quiet. Resolves once every connection has closed.
    pub async fn serve(
        self: Arc<Self>,
        listener: std::net::TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        self.serve_with(listener, None, shutdown).await
    }

    /// [`Gateway::serve`] for a TLS listener: each connection is served
    /// after its handshake (see `tls`).
    pub async fn serve_tls(
        self: Arc<Self>,
        listener: std::net::TcpListener,
        tls: Arc<tls::Terminator>,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        self.serve_with(listener, Some(tls), shutdown).await
    }

    async fn serve_with(
        self: Arc<Self>,
        listener: std::net::TcpListener,
        tls: Option<Arc<tls::Terminator>>,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        listener.set_nonblocking(true)?;
        limits::deepen_backlog(&listener);
        let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut finished = Vec::with_capacity(workers);
        for i in 0..workers {
            let listener = listener.try_clone()?;
            // A worker's own child of the token: its connections look at it
            // on every request (`is_cancelled` takes the token's mutex), so
            // the two workers should not share one; a child is cancelled
            // with its parent, before the parent's `cancel` returns.
            let (gw, shutdown, tls) = (self.clone(), shutdown.child_token(), tls.clone());
            let (done, rx) = tokio::sync::oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("gateway-{i}"))
                .spawn(move || {
                    if gw.pin_workers {
                        affinity::pin_to_cpu(i);
                    }
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt.block_on(gw.worker(listener, tls, shutdown)),
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

    async fn worker(
        self: Arc<Self>,
        listener: std::net::TcpListener,
        tls: Option<Arc<tls::Terminator>>,
        shutdown: CancellationToken,
    ) {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot register the listener");
                return;
            }
        };
        let upstreams = self
            .pools
            .pool(self.connect_timeout, self.upstream_idle_timeout);
        let sweeper = tokio::spawn(upstreams.clone().sweep_idle());
        let connections = tokio_util::task::TaskTracker::new();
        let mut refused = limits::AcceptErrors::default();
        loop {
            let permit = tokio::select! {
                p = self.connections.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                _ = shutdown.cancelled() => break,
            };
            let Some((stream, peer)) = refused.accept(&listener, &shutdown).await else {
                break;
            };
            self.accept(
                stream,
                peer,
                permit,
                &upstreams,
                &connections,
                &shutdown,
                &tls,
            );
        }
        // Connections that completed their handshake meanwhile would be
        // reset when the socket closes: take them in too (their first
        // response says `Connection: close`).
        // (A plain non-blocking accept: tokio's cached readiness may not
        // know of them yet.)
        if let Ok(listener) = listener.into_std() {
            while let Ok((stream, peer)) = listener.accept() {
                let Ok(permit) = self.connections.clone().try_acquire_owned() else {
                    break;
                };
                let registered = stream
                    .set_nonblocking(true)
                    .and_then(|()| tokio::net::TcpStream::from_std(stream));
                match registered {
                    Ok(stream) => self.accept(
                        stream,
                        peer,
                        permit,
                        &upstreams,
                        &connections,
                        &shutdown,
                        &tls,
                    ),
                    Err(e) => tracing::debug!(error = %e, "cannot register a connection"),
                }
            }
        } else {
            tracing::debug!("cannot take the listener back from the runtime");
        }
        connections.close();
        connections.wait().await;
        sweeper.abort();
        // Tunnels end by themselves or at the drain's stream_grace.
        self.tunnels.close();
        self.tunnels.wait().await;
    }

    /// Serves one accepted connection on this worker (after the TLS
    /// handshake on a TLS listener, bounded by the header timeout).
    #[allow(clippy::too_many_arguments)]
    fn accept(
        self: &Arc<Self>,
        stream: tokio::net::TcpStream,
        peer: std::net::SocketAddr,
        permit: tokio::sync::OwnedSemaphorePermit,
        upstreams: &Upstreams,
        connections: &tokio_util::task::TaskTracker,
        shutdown: &CancellationToken,
        tls: &Option<Arc<tls::Terminator>>,
    ) {
        let _ = stream.set_nodelay(true);
        let state = conn::ConnState::new();
        let handshake_deadline = Instant::now() + self.timeouts.header;
        let (gw, upstreams, closing, tls) = (
            self.clone(),
            upstreams.clone(),
            shutdown.clone(),
            tls.clone(),
        );
        connections.spawn(async move {
            match tls {
                None => {
                    gw.serve_io(stream, peer, false, true, state, upstreams, closing)
                        .await
                }
                Some(tls) => {
                    if let Some(stream) = tls.handshake(stream, handshake_deadline).await {
                        let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                        gw.serve_io(stream, peer, true, !h2, state, upstreams, closing)
                            .await;
                    }
                }
            }
            drop(permit);
        });
    }

    /// Serves HTTP on `io` (a TCP or TLS stream) until it closes: HTTP/1.1
    /// by `h1_server` (when `h1`: not a TLS connection that chose HTTP/2)
    /// until a request needs hyper, then by hyper.
    #[allow(clippy::too_many_arguments)]
    async fn serve_io<I>(
        self: Arc<Self>,
        io: I,
        peer: std::net::SocketAddr,
        https: bool,
        h1: bool,
        state: Arc<conn::ConnState>,
        upstreams: Upstreams,
        closing: CancellationToken,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let client = Arc::new(forward::Peer {
            ip: peer.ip(),
            https,
            forwarded_for: hyper::header::HeaderValue::from_str(&peer.ip().to_string())
                .unwrap_or_else(|_| hyper::header::HeaderValue::from_static("unknown")),
        });
        self.open.fetch_add(1, Ordering::Relaxed);
        let io = if h1 {
            h1_server::serve(&self, io, &client, &state, &upstreams, &closing).await
        } else {
            Some(h1_server::Prefixed::new(io, bytes::Bytes::new()))
        };
        if let Some(io) = io {
            let service = self.service(upstreams, client, state.clone(), closing.clone());
            let io = TokioIo::new(conn::Watched::new(io, state.clone()));
            let served = self
                .server
                .serve_connection_with_upgrades(io, service)
                .into_owned();
            conn::drive(served, state, self.timeouts, closing).await;
        }
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// The hyper service of one client connection.
    fn service(
        self: &Arc<Self>,
        upstreams: Upstreams,
        client: Arc<forward::Peer>,
        state: Arc<conn::ConnState>,
        closing: CancellationToken,
    ) -> impl hyper::service::Service<
        hyper::Request<Incoming>,
        Response = hyper::Response<conn::ActiveBody<ProxyBody>>,
        Error = Infallible,
        Future: Send + 'static,
    > + Clone
           + Send
           + 'static {
        let gw = self.clone();
        hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
            let active = state.begin();
            let h1 = !state.is_h2();
            let (gw, upstreams, client, closing) = (
                gw.clone(),
                upstreams.clone(),
                client.clone(),
                closing.clone(),
            );
            async move {
                let mut res = forward::handle(gw, upstreams, req, &client).await;
                // Shutting down: this response is the connection's last.
                if h1
                    && closing.is_cancelled()
                    && res.status() != hyper::StatusCode::SWITCHING_PROTOCOLS
                {
                    res.headers_mut().insert(
                        hyper::header::CONNECTION,
                        hyper::header::HeaderValue::from_static("close"),
                    );
                }
                Ok::<_, Infallible>(res.map(|b| conn::ActiveBody::new(b, active)))
            }
        })
    }
}

/// One worker's pool of upstream connections (cheap to clone: shared).
pub(crate) type Upstreams = pool::Pool;
