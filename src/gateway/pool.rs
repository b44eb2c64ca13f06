//! Keep-alive upstream connections, one pool per gateway worker thread.
//!
//! A worker only needs "an idle HTTP/1 connection to this address, or a new
//! one", and doing just that removes a generic client pool's keying,
//! checkout futures and locking from every request (bench/RESULTS.md).
//!
//! A pooled socket is raw ([`h1::RawConn`]) until a request with a body or
//! an upgrade needs it: body-less requests are exchanged on it by the
//! gateway's own client ([`h1`]) in the request's task; the others through
//! a hyper client connection made on it (which it stays, in the pool).
//!
//! A connection goes back to the pool only when its response body has been
//! read to the end; a failed, upgraded or half-read connection is dropped.
//!
//! Bounds and staleness:
//! - every open connection to an instance holds one of its
//!   `max_upstream_connections` permits ([`ConnLimit`]); at the limit a
//!   request takes an idle connection from any worker, or waits for one (or
//!   a permit) up to `upstream_connect_timeout`, then gets
//!   [`PoolError::Saturated`] — the instance is busy, not broken;
//! - a connection idle for `upstream_idle_timeout` is closed, never reused
//!   (backends close idle keep-alive connections, and reusing one in that
//!   instant loses the request);
//! - a request that fails on a *reused* connection before any response
//!   arrived is sent once more on a new connection when that is safe: hyper
//!   hands back a request it never wrote, and a body-less one is sent as it
//!   was. (An idle raw socket has nobody watching it, so the backend's
//!   close of an idle connection is found this way; one for a request with
//!   a body is checked before use instead.)

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::h1::{self, BoxError, LazyTimer, RawConn};
use super::request::Forwarded;
use super::ProxyBody;

/// Idle connections kept per upstream address and worker.
const MAX_IDLE: usize = 256;

#[derive(Debug)]
pub enum PoolError {
    /// Could not connect (nothing was sent: safe to retry elsewhere).
    Connect(std::io::Error),
    /// The connection failed after the request was (maybe) sent.
    Request(BoxError),
    /// Every connection the instance may have is busy, for longer than
    /// `upstream_connect_timeout`.
    Saturated,
    /// No response head before `upstream_response_timeout`.
    Timeout,
}

/// An instance's connection limit, shared by every worker's pool.
#[derive(Debug)]
pub struct ConnLimit {
    permits: Arc<Semaphore>,
    /// Woken when a connection to the instance goes back to a pool idle,
    /// if anyone waits (`waiting`: no shared write on the hot path).
    returned: Notify,
    waiting: AtomicUsize,
}

impl ConnLimit {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            permits: Arc::new(Semaphore::new(max.min(Semaphore::MAX_PERMITS))),
            returned: Notify::new(),
            waiting: AtomicUsize::new(0),
        })
    }
}

/// A pooled connection: a raw socket, or a hyper client connection on one.
enum Conn {
    Raw(RawConn),
    Hyper(SendRequest<ProxyBody>),
}

struct Idle {
    conn: Conn,
    since: Instant,
}

struct Inner {
    // FNV: SipHash of the address cost ~450 instructions a request (the
    // keys are the configured instances, not attacker-chosen).
    idle: Mutex<HashMap<SocketAddr, Vec<Idle>, fnv::FnvBuildHasher>>,
    connect_timeout: Duration,
    idle_timeout: Duration,
    /// Every worker's pool, to borrow idle connections at the limit.
    registry: Registry,
}

/// Every worker's pool (weakly: a worker's pool goes away with it).
#[derive(Clone, Default)]
pub struct Registry(Arc<Mutex<Vec<Weak<Inner>>>>);

impl Registry {
    /// A new worker pool, registered.
    pub fn pool(&self, connect_timeout: Duration, idle_timeout: Duration) -> Pool {
        let inner = Arc::new(Inner {
            idle: Mutex::default(),
            connect_timeout,
            idle_timeout,
            registry: self.clone(),
        });
        let mut pools = self.0.lock().unwrap_or_else(|p| p.into_inner());
        pools.retain(|w| w.strong_count() > 0);
        pools.push(Arc::downgrade(&inner));
        Pool(inner)
    }

    /// An idle connection to `addr` from any pool but `except`.
    fn take_elsewhere(&self, addr: SocketAddr, except: &Arc<Inner>) -> Option<Idle> {
        let pools: Vec<Arc<Inner>> = {
            let pools = self.0.lock().unwrap_or_else(|p| p.into_inner());
            pools.iter().filter_map(Weak::upgrade).collect()
        };
        pools
            .iter()
            .filter(|p| !Arc::ptr_eq(p, except))
            .find_map(|p| Pool(p.clone()).take_idle(addr))
    }
}

/// One worker's pool (cheap to clone: shared).
#[derive(Clone)]
pub struct Pool(Arc<Inner>);

impl Pool {
    /// Sends a body-less request (no upgrade) with the gateway's own
    /// client on an idle connection or a new one (see the module doc for
    /// the limit and the one retry). The response body gives the connection
    /// back when it ends.
    ///
    /// The response head must come before `deadline`. Only a checkout that
    /// waits and hyper's path need a timer of their own; the exchange uses
    /// its connection's (`h1::exchange`).
    pub async fn send_plain(
        &self,
        addr: SocketAddr,
        limit: &Arc<ConnLimit>,
        parts: &hyper::http::request::Parts,
        forwarded: &Forwarded<'_>,
        deadline: Instant,
    ) -> Result<Response<PooledBody>, PoolError> {
        // (An idle connection at hand makes `checkout` ready at once, and
        // no timer is then made: `tokio::time::timeout_at` would make one,
        // and clone the runtime's handle for it, every request.)
        let mut timer = LazyTimer::default();
        let (raw, reused) = match h1::until(&mut timer, deadline, self.checkout(addr, limit, true))
            .await
            .ok_or(PoolError::Timeout)??
        {
            (Conn::Raw(raw), reused) => (raw, reused),
            // An idle connection hyper's client was made on.
            (Conn::Hyper(sender), reused) => {
                // (Two copies: one is sent, the other kept for a replay.)
                let mut parts = clone_parts(parts);
                forwarded.apply(&mut parts.headers);
                let req = Request::from_parts(clone_parts(&parts), empty());
                let sent = self.send_hyper(addr, limit, sender, reused, req, Some(&parts));
                let sent = tokio::time::timeout_at(deadline, Box::pin(sent));
                return sent.await.map_err(|_| PoolError::Timeout)?;
            }
        };
        let failed =
            match h1::exchange(raw, parts, forwarded, self.giveback(addr, limit), deadline).await {
                Ok(res) => return Ok(res.map(PooledBody::Raw)),
                Err(failed) if failed.replayable && reused => failed,
                Err(failed) => return Err(failed.into()),
            };
        tracing::debug!(upstream = %addr, error = %failed.error, "a reused connection failed before any response; sending again on a new one");
        let connect_by = Instant::now() + self.0.connect_timeout;
        let fresh =
            tokio::time::timeout_at(deadline, Box::pin(self.connect(addr, limit, connect_by)));
        let fresh = fresh.await.map_err(|_| PoolError::Timeout)??;
        match h1::exchange(
            fresh,
            parts,
            forwarded,
            self.giveback(addr, limit),
            deadline,
        )
        .await
        {
            Ok(res) => Ok(res.map(PooledBody::Raw)),
            Err(failed) => Err(failed.into()),
        }
    }

    /// Sends a request with a body, or an upgrade, through hyper's client
    /// on an idle connection or a new one; the same limit and retry.
    pub async fn send(
        &self,
        addr: SocketAddr,
        limit: &Arc<ConnLimit>,
        req: Request<ProxyBody>,
    ) -> Result<Response<PooledBody>, PoolError> {
        let (conn, reused) = self.checkout(addr, limit, false).await?;
        let sender = match conn {
            Conn::Hyper(sender) => sender,
            Conn::Raw(raw) => into_hyper(raw, addr).await?,
        };
        self.send_hyper(addr, limit, sender, reused, req, None)
            .await
    }

    /// A request through a hyper client connection.
    async fn send_hyper(
        &self,
        addr: SocketAddr,
        limit: &Arc<ConnLimit>,
        mut sender: SendRequest<ProxyBody>,
        reused: bool,
        req: Request<ProxyBody>,
        replay: Option<&hyper::http::request::Parts>,
    ) -> Result<Response<PooledBody>, PoolError> {
        let res = match sender.try_send_request(req).await {
            Ok(res) => res,
            Err(mut e) => {
                let again = match e.take_message() {
                    Some(unsent) => Some(unsent),
                    None if reused => replay.map(|p| Request::from_parts(clone_parts(p), empty())),
                    None => None,
                };
                let Some(req) = again else {
                    return Err(PoolError::Request(e.into_error().into()));
                };
                tracing::debug!(upstream = %addr, error = %e.error(), "a reused connection failed before any response; sending again on a new one");
                let deadline = Instant::now() + self.0.connect_timeout;
                let raw = Box::pin(self.connect(addr, limit, deadline)).await?;
                sender = into_hyper(raw, addr).await?;
                sender
                    .send_request(req)
                    .await
                    .map_err(|e| PoolError::Request(e.into()))?
            }
        };
        let upgraded = res.status() == hyper::StatusCode::SWITCHING_PROTOCOLS;
        let mut giveback = (!upgraded).then(|| (self.giveback(addr, limit), sender));
        // A response without a body is never polled: its connection is free now.
        if res.body().is_end_stream() {
            if let Some((g, sender)) = giveback.take() {
                g.put_back(Conn::Hyper(sender));
            }
        }
        Ok(res.map(|inner| PooledBody::Hyper { inner, giveback }))
    }

    fn giveback(&self, addr: SocketAddr, limit: &Arc<ConnLimit>) -> Giveback {
        Giveback {
            pool: self.clone(),
            addr,
            limit: limit.clone(),
        }
    }

    /// A live idle connection (`true`: reused) or a new one. (`plain`: for
    /// a body-less request, which takes an idle raw socket unchecked.)
    ///
    /// Everything but reusing an idle connection (opening one, waiting at
    /// the limit) is boxed where it is awaited: it is the rare path, and
    /// inline its state would make every request's future larger — hyper
    /// and tokio move that future around (memcpy) several times a request
    /// (bench/RESULTS.md).
    async fn checkout(
        &self,
        addr: SocketAddr,
        limit: &Arc<ConnLimit>,
        plain: bool,
    ) -> Result<(Conn, bool), PoolError> {
        while let Some(idle) = self.take_idle(addr) {
            if let Some(c) = usable(idle, plain).await {
                return Ok((c, true));
            }
        }
        Box::pin(self.checkout_new(addr, limit, plain)).await
    }

    /// No idle connection here: a new one within the limit, or at the
    /// limit an idle one from anywhere, waiting up to the connect timeout.
    async fn checkout_new(
        &self,
        addr: SocketAddr,
        limit: &Arc<ConnLimit>,
        plain: bool,
    ) -> Result<(Conn, bool), PoolError> {
        let deadline = Instant::now() + self.0.connect_timeout;
        // Counted before looking at the pools: a connection put back after
        // the look sees the count and wakes us.
        let _waiting = Waiting::new(limit);
        loop {
            let returned = limit.returned.notified();
            if let Ok(permit) = limit.permits.clone().try_acquire_owned() {
                return Ok((Conn::Raw(self.open(addr, permit, deadline).await?), false));
            }
            // At the limit: an idle connection anywhere, or wait for one.
            // (Another worker's raw socket moves to this worker's runtime.)
            let idle = self.take_idle(addr).or_else(|| {
                let mut idle = self.0.registry.take_elsewhere(addr, &self.0)?;
                if let Conn::Raw(raw) = idle.conn {
                    idle.conn = Conn::Raw(raw.rehome().ok()?);
                }
                Some(idle)
            });
            if let Some(idle) = idle {
                if let Some(c) = usable(idle, plain).await {
                    return Ok((c, true));
                }
                continue;
            }
            tokio::select! {
                permit = limit.permits.clone().acquire_owned() => {
                    let permit = permit.map_err(|_| PoolError::Saturated)?;
                    return Ok((Conn::Raw(self.open(addr, permit, deadline).await?), false));
                }
                _ = returned => {}
                _ = tokio::time::sleep_until(deadline) => return Err(PoolError::Saturated),
            }
        }
    }

    /// A new connection, within the limit.
    async fn connect(
        &self,
        addr: SocketAddr,
        limit: &Arc<ConnLimit>,
        deadline: Instant,
    ) -> Result<RawConn, PoolError> {
        let permit = tokio::time::timeout_at(deadline, limit.permits.clone().acquire_owned())
            .await
            .map_err(|_| PoolError::Saturated)?
            .map_err(|_| PoolError::Saturated)?;
        self.open(addr, permit, deadline).await
    }

    fn take_idle(&self, addr: SocketAddr) -> Option<Idle> {
        let mut idle = self.0.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.get_mut(&addr)?;
        let fresh_after = Instant::now().checked_sub(self.0.idle_timeout);
        // Newest last: once the newest is too old, all are.
        match list.pop() {
            Some(c) if fresh_after.is_none_or(|t| c.since > t) => Some(c),
            Some(_) => {
                list.clear();
                None
            }
            None => None,
        }
    }

    fn put_back(&self, addr: SocketAddr, conn: Conn) {
        if let Conn::Hyper(sender) = &conn {
            if sender.is_closed() {
                return;
            }
        }
        let mut idle = self.0.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(addr).or_default();
        if list.len() < MAX_IDLE {
            list.push(Idle {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// Closes connections idle for `upstream_idle_timeout`, forever (the
    /// worker aborts it when it stops).
    pub async fn sweep_idle(self) {
        let every = self.0.idle_timeout / 2;
        loop {
            tokio::time::sleep(every).await;
            let Some(oldest_kept) = Instant::now().checked_sub(self.0.idle_timeout) else {
                continue;
            };
            let mut idle = self.0.idle.lock().unwrap_or_else(|p| p.into_inner());
            idle.retain(|_, list| {
                list.retain(|c| c.since > oldest_kept);
                !list.is_empty()
            });
        }
    }

    async fn open(
        &self,
        addr: SocketAddr,
        permit: OwnedSemaphorePermit,
        deadline: Instant,
    ) -> Result<RawConn, PoolError> {
        let io = tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(addr))
            .await
            .map_err(|_| PoolError::Connect(std::io::ErrorKind::TimedOut.into()))?
            .map_err(PoolError::Connect)?;
        let _ = io.set_nodelay(true);
        Ok(RawConn::new(io, permit))
    }
}

/// A hyper client connection on `raw` (whose buffer is empty: pooled
/// sockets hold no unread bytes), driven by its own task until it closes.
async fn into_hyper(raw: RawConn, addr: SocketAddr) -> Result<SendRequest<ProxyBody>, PoolError> {
    let RawConn { io, permit, .. } = raw;
    let (sender, conn) = http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| PoolError::Connect(std::io::Error::other(e)))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(upstream = %addr, error = %e, "upstream connection ended");
        }
        // The socket is closed: the instance may open another.
        drop(permit);
    });
    Ok(sender)
}

/// Counts a request waiting at an instance's limit while it lives.
struct Waiting<'a>(&'a ConnLimit);

impl<'a> Waiting<'a> {
    fn new(limit: &'a ConnLimit) -> Self {
        limit.waiting.fetch_add(1, Ordering::SeqCst);
        Self(limit)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::SeqCst);
    }
}

/// `idle` if it is still usable: a hyper connection that has not closed
/// (a closed one finishes its last exchange a moment after its body
/// ended), or a raw socket the backend has neither closed nor written to
/// since its last response — bytes it sent after that response (a body
/// on a HEAD or 204 answer) would be read as the next request's response.
/// For a body-less request only a socket the reactor saw readable is
/// looked at (no syscall otherwise); a close it has not seen yet is found
/// by the exchange, which then sends again.
async fn usable(idle: Idle, plain: bool) -> Option<Conn> {
    let raw = match idle.conn {
        Conn::Hyper(mut sender) => return sender.ready().await.ok().map(|()| Conn::Hyper(sender)),
        Conn::Raw(raw) => raw,
    };
    if plain {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if raw.io.poll_read_ready(&mut cx).is_pending() {
            return Some(Conn::Raw(raw));
        }
    }
    match raw.io.try_read(&mut [0u8; 1]) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Some(Conn::Raw(raw)),
        _ => None,
    }
}

/// A copy of a request head (method, target, version, headers; no
/// extensions). Filled in field by field: `Request::builder` moves its
/// `Result<Parts>` through every call (bench/RESULTS.md).
pub(crate) fn clone_parts(parts: &hyper::http::request::Parts) -> hyper::http::request::Parts {
    let (mut copy, ()) = Request::new(()).into_parts();
    copy.method = parts.method.clone();
    copy.uri = parts.uri.clone();
    copy.version = parts.version;
    copy.headers = parts.headers.clone();
    copy
}

pub(crate) fn empty() -> ProxyBody {
    use http_body_util::BodyExt;
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// Where a connection goes back to when its response has been read.
pub struct Giveback {
    pool: Pool,
    addr: SocketAddr,
    limit: Arc<ConnLimit>,
}

impl Giveback {
    fn put_back(self, conn: Conn) {
        self.pool.put_back(self.addr, conn);
        if self.limit.waiting.load(Ordering::SeqCst) > 0 {
            self.limit.returned.notify_one();
        }
    }

    /// A raw socket whose exchange ended cleanly.
    pub fn put_back_raw(self, conn: RawConn) {
        self.put_back(Conn::Raw(conn));
    }
}

impl From<h1::Failed> for PoolError {
    fn from(failed: h1::Failed) -> Self {
        if failed.timed_out {
            PoolError::Timeout
        } else {
            PoolError::Request(failed.error)
        }
    }
}

/// An upstream response body that returns its connection to the pool
/// once read to the end.
pub enum PooledBody {
    Raw(h1::Body),
    Hyper {
        inner: Incoming,
        giveback: Option<(Giveback, SendRequest<ProxyBody>)>,
    },
}

impl Body for PooledBody {
    type Data = bytes::Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let (inner, giveback) = match self.get_mut() {
            PooledBody::Raw(body) => return Pin::new(body).poll_frame(cx),
            PooledBody::Hyper { inner, giveback } => (inner, giveback),
        };
        let polled = Pin::new(&mut *inner).poll_frame(cx);
        let done = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => inner.is_end_stream(),
            Poll::Ready(Some(Err(_))) => {
                giveback.take();
                false
            }
            Poll::Pending => false,
        };
        if done {
            if let Some((g, sender)) = giveback.take() {
                g.put_back(Conn::Hyper(sender));
            }
        }
        polled.map(|f| f.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            PooledBody::Raw(body) => body.is_end_stream(),
            PooledBody::Hyper { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            PooledBody::Raw(body) => body.size_hint(),
            PooledBody::Hyper { inner, .. } => inner.size_hint(),
        }
    }
}
