//! One accepted client connection, served with a timeout for every phase a
//! peer can stall, and closed at shutdown without losing a request.
//!
//! hyper bounds only the HTTP/1 head once it is being read; a peer that
//! never sends a byte (or half an HTTP/2 preface) sits in hyper-util's
//! protocol detection forever, and hyper closes an idle HTTP/1 keep-alive
//! connection at the *header* timeout. So the phases are tracked here, from
//! the bytes read ([`Watched`]) and the requests served ([`Active`]):
//!
//! | phase | limit |
//! |---|---|
//! | new connection, no request yet (detection, preface, first head) | `header_read_timeout` from accept |
//! | idle keep-alive, nothing read | `client_idle_timeout` from the end of the last response |
//! | HTTP/1 head started on a kept-alive connection | `header_read_timeout` from its first byte |
//! | a request in progress | none here (upstream and body timeouts apply) |
//!
//! HTTP/2 connections past their limit get GOAWAY (open streams finish);
//! HTTP/1 connections are closed, which is safe only because they are idle.
//!
//! Shutdown ([`Closing`]): HTTP/2 gets GOAWAY at once. An HTTP/1 connection
//! cannot be told "stop" while idle — a request may already be on its way —
//! so every response from now on carries `Connection: close` (the service
//! adds it), a request that arrives is still served, and an idle connection
//! is closed only after it has been quiet for [`QUIET`]: by then a client
//! that was about to reuse it has either sent its request or is not going to.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::server::graceful::GracefulConnection;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long an idle HTTP/1 connection must have been quiet before it is
/// closed at shutdown (see the module doc).
pub const QUIET: Duration = Duration::from_millis(1000);

/// The per-phase limits of a connection.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// First request head (from accept), and any later head from its first byte.
    pub header: Duration,
    /// Idle keep-alive between requests.
    pub idle: Duration,
}

/// What a connection's driver knows about it, shared with its IO and service.
#[derive(Debug)]
pub struct ConnState {
    epoch: Instant,
    /// Requests (HTTP/2: streams) being served now.
    active: AtomicUsize,
    /// Whether a request has started on this connection (a store, not a
    /// count: an atomic add costs ~20 cycles a request).
    served: AtomicBool,
    /// Milliseconds after `epoch` when the connection last became idle.
    idle_since: AtomicU64,
    /// Milliseconds after `epoch` (+1, so 0 means none) of the first byte
    /// read while idle: a request head on its way.
    head_started: AtomicU64,
    /// The client spoke the HTTP/2 preface.
    h2: AtomicBool,
    first_read: AtomicBool,
}

impl ConnState {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            active: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            head_started: AtomicU64::new(0),
            h2: AtomicBool::new(false),
            first_read: AtomicBool::new(false),
        })
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn at(&self, ms: u64) -> Instant {
        self.epoch + Duration::from_millis(ms)
    }

    /// A request begins; the returned value ends it when dropped (keep it
    /// in the response body so it lasts until the last byte is written).
    pub fn begin(self: &Arc<Self>) -> Active {
        self.active.fetch_add(1, Ordering::AcqRel);
        self.served.store(true, Ordering::Relaxed);
        self.head_started.store(0, Ordering::Relaxed);
        Active(self.clone())
    }

    pub fn is_h2(&self) -> bool {
        self.h2.load(Ordering::Relaxed)
    }

    pub(super) fn on_read(&self, bytes: &[u8]) {
        if !self.first_read.load(Ordering::Relaxed) {
            self.first_read.store(true, Ordering::Relaxed);
            self.h2.store(bytes.starts_with(b"PRI "), Ordering::Relaxed);
        }
        if self.active.load(Ordering::Acquire) == 0
            && self.head_started.load(Ordering::Relaxed) == 0
        {
            self.head_started
                .store(self.now_ms() + 1, Ordering::Relaxed);
        }
    }

    /// When the connection's current phase runs out, or `None` while a
    /// request is being served (the driver looks again after `recheck`).
    pub(super) fn deadline(&self, t: &Timeouts, closing: bool) -> Option<Instant> {
        if self.active.load(Ordering::Acquire) > 0 {
            return None;
        }
        let idle_since = self.idle_since.load(Ordering::Relaxed);
        let head = self.head_started.load(Ordering::Relaxed);
        let first = !self.served.load(Ordering::Relaxed);
        let h2 = self.is_h2();
        Some(if first {
            self.at(idle_since) + t.header
        } else if head > 0 && !h2 {
            self.at(head - 1) + t.header
        } else if closing && !h2 {
            self.at(idle_since) + QUIET
        } else {
            self.at(idle_since) + t.idle
        })
    }
}

/// One request being served on a connection (see [`ConnState::begin`]).
#[derive(Debug)]
pub struct Active(Arc<ConnState>);

impl Drop for Active {
    fn drop(&mut self) {
        let s = &self.0;
        s.idle_since.store(s.now_ms(), Ordering::Relaxed);
        s.active.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// A socket that tells its [`ConnState`] about the bytes read.
    pub struct Watched<T> {
        #[pin]
        inner: T,
        state: Arc<ConnState>,
    }
}

impl<T> Watched<T> {
    pub fn new(inner: T, state: Arc<ConnState>) -> Self {
        Self { inner, state }
    }
}

impl<T: AsyncRead> AsyncRead for Watched<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.state.on_read(&buf.filled()[before..]);
        }
        polled
    }
}

impl<T: AsyncWrite> AsyncWrite for Watched<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request [`Active`] until it is done.
    pub struct ActiveBody<B> {
        #[pin]
        inner: B,
        active: Option<Active>,
    }
}

impl<B> ActiveBody<B> {
    pub fn new(inner: B, active: Active) -> Self {
        Self {
            inner,
            active: Some(active),
        }
    }
}

impl<B: hyper::body::Body> hyper::body::Body for ActiveBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            this.active.take();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `conn` until it ends, its current phase times out, or shutdown
/// (`closing`) has closed it as the module doc describes.
pub async fn drive<C>(conn: C, state: Arc<ConnState>, t: Timeouts, closing: CancellationToken)
where
    C: GracefulConnection,
    C::Error: std::fmt::Display,
{
    tokio::pin!(conn);
    let mut closing_seen = false;
    // HTTP/2: when GOAWAY went out. hyper then finishes the open streams
    // and closes; an idle connection that does not is dropped after
    // `t.header` more.
    let mut goaway_at: Option<Instant> = None;
    // While a request is served there is no deadline; look again this often
    // so the idle limit counts from the request's end.
    let recheck = t.header.min(t.idle);
    loop {
        let now = Instant::now();
        let idle = state.active.load(Ordering::Acquire) == 0;
        let deadline = match goaway_at {
            Some(at) if idle => at + t.header,
            Some(_) => now + recheck,
            None => state
                .deadline(&t, closing_seen)
                .unwrap_or(now + if closing_seen { QUIET } else { recheck }),
        };
        tokio::select! {
            res = conn.as_mut() => {
                if let Err(e) = res {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = closing.cancelled(), if !closing_seen => {
                closing_seen = true;
                if state.is_h2() && goaway_at.is_none() {
                    goaway_at = Some(Instant::now());
                    conn.as_mut().graceful_shutdown();
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                let now = Instant::now();
                let idle = state.active.load(Ordering::Acquire) == 0;
                match goaway_at {
                    // The GOAWAY was not honoured in time.
                    Some(at) if idle && now >= at + t.header => return,
                    Some(_) => {}
                    None if state.deadline(&t, closing_seen).is_some_and(|d| d <= now) => {
                        if !state.is_h2() {
                            return; // idle or a stalled head: dropping closes it
                        }
                        goaway_at = Some(now);
                        conn.as_mut().graceful_shutdown();
                    }
                    None => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(60),
    };

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_has_the_header_timeout_from_accept() {
        let s = ConnState::new();
        assert_eq!(s.deadline(&T, false), Some(s.epoch + T.header));
        s.on_read(b"GE");
        assert_eq!(s.deadline(&T, false), Some(s.epoch + T.header));
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_connection_has_the_idle_timeout_from_the_last_response() {
        let s = ConnState::new();
        let active = s.begin();
        assert_eq!(s.deadline(&T, false), None);
        tokio::time::advance(Duration::from_secs(3)).await;
        drop(active);
        assert_eq!(
            s.deadline(&T, false),
            Some(s.epoch + Duration::from_secs(3) + T.idle)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_on_a_kept_alive_connection_has_the_header_timeout_from_its_first_byte() {
        let s = ConnState::new();
        drop(s.begin());
        tokio::time::advance(Duration::from_secs(20)).await;
        s.on_read(b"GET / HT");
        assert_eq!(
            s.deadline(&T, false),
            Some(s.epoch + Duration::from_secs(20) + T.header)
        );
        drop(s.begin());
        assert_eq!(
            s.deadline(&T, false),
            Some(s.epoch + Duration::from_secs(20) + T.idle)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn at_shutdown_an_idle_http1_connection_closes_once_quiet() {
        let s = ConnState::new();
        drop(s.begin());
        assert_eq!(s.deadline(&T, true), Some(s.epoch + QUIET));
    }

    #[tokio::test(start_paused = true)]
    async fn http2_control_frames_do_not_count_as_a_head() {
        let s = ConnState::new();
        s.on_read(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        assert!(s.is_h2());
        drop(s.begin());
        tokio::time::advance(Duration::from_secs(1)).await;
        s.on_read(b"ping");
        assert_eq!(s.deadline(&T, false), Some(s.epoch + T.idle));
        assert_eq!(s.deadline(&T, true), Some(s.epoch + T.idle));
    }
}
