//! The data plane: listeners, the route table, balancing, forwarding with
//! streaming bodies and upgrades, in-flight accounting and the gateway's own
//! error responses.
//!
//! The gateway never talks to the supervisor: it serves whatever
//! [`RouteTable`] it was last given (`update`), and the lifecycle layer
//! rebuilds that table from instance states.

mod balance;
mod forward;
pub mod inflight;
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
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::{AppName, GatewayConfig};
pub use inflight::Counter;
pub use routes::{AppShared, RouteTable, Upstream};

/// Bodies going both ways: streamed, never buffered whole.
pub type ProxyBody = BoxBody<Bytes, hyper::Error>;

pub struct Gateway {
    table: ArcSwap<RouteTable>,
    client: Client<HttpConnector, ProxyBody>,
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
}

impl Gateway {
    pub fn new(cfg: &GatewayConfig) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(cfg.upstream_connect_timeout));
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_timer(TokioTimer::new())
            .build(connector);

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
            client,
            server,
            connections: Arc::new(Semaphore::new(cfg.max_connections as usize)),
            response_timeout: cfg.upstream_response_timeout,
            access_log: cfg.access_log,
            in_flight: Arc::new(Counter::default()),
            apps: Mutex::new(HashMap::new()),
            upstreams: Mutex::new(HashMap::new()),
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

    /// Draining apps answer new requests 503 + Retry-After + Connection: close.
    pub fn set_draining(&self, app: &AppName, draining: bool) {
        self.app_shared(app)
            .draining
            .store(draining, Ordering::Release);
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

    /// Accepts connections on `listener` until `shutdown`, then stops
    /// accepting (closing the listener) and asks open connections to finish:
    /// `Connection: close` for HTTP/1, GOAWAY for HTTP/2. Returns once every
    /// connection has closed.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
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
            let gw = self.clone();
            let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                let gw = gw.clone();
                async move { Ok::<_, Infallible>(forward::handle(gw, req, peer.ip()).await) }
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
    }
}
