//! In-flight accounting: the exact-lifecycle counter drain waits on.
//!
//! A [`Guard`] is taken when a request is admitted to an app. It moves into
//! the response body ([`GuardedBody`]) or, for an upgraded connection, into
//! the tunnel task, and drops only when the last byte is handed to the
//! connection, the body fails, or the client goes away. Counting, not
//! sleeping, decides when draining is over.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::routes::Upstream;
use crate::sharded::Sharded;

/// A count of requests in flight, with a wake-up when it reaches zero.
///
/// Sharded per thread ([`crate::sharded`]): both gateway workers count
/// every request here, and one shared line cost each of them a cache miss
/// per add. Each shard counts arrivals and departures, both only growing:
/// a sum over shards read one by one is no snapshot, but reading every
/// departure count before any arrival count is exact at the moment
/// between the two passes (see `get`).
#[derive(Debug, Default)]
pub struct Counter {
    shards: Sharded<Shard>,
    /// `wait_idle` calls under way: departures look for zero only then.
    waiting: AtomicUsize,
    idle: Notify,
}

#[derive(Debug, Default)]
struct Shard {
    entered: AtomicUsize,
    left: AtomicUsize,
}

impl Counter {
    // SeqCst throughout: a rolling restart retires an instance and then
    // reads its count, while a request counts itself and then re-checks the
    // retirement (see `Upstream::retired`); and a departure checks for
    // waiters while a waiter announces itself and then reads the count. One
    // total order makes one side of each pair see the other.
    /// Requests in flight. Departures are read first: each is at most what
    /// had left at the moment between the passes, each arrival read after
    /// at least what had entered, so 0 means none was in flight then.
    pub fn get(&self) -> usize {
        let left: usize = self
            .shards
            .iter()
            .map(|s| s.left.load(Ordering::SeqCst))
            .sum();
        let entered: usize = self
            .shards
            .iter()
            .map(|s| s.entered.load(Ordering::SeqCst))
            .sum();
        entered.wrapping_sub(left)
    }

    fn enter(&self) {
        self.shards.local().entered.fetch_add(1, Ordering::SeqCst);
    }

    fn leave(&self) {
        self.shards.local().left.fetch_add(1, Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) > 0 && self.get() == 0 {
            self.idle.notify_waiters();
        }
    }

    /// Waits until the count is zero (true) or `deadline` passes (false).
    pub async fn wait_idle(&self, deadline: Instant) -> bool {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.get() == 0 {
                return true;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => return self.get() == 0,
            }
        }
    }
}

/// What a guard tells its callback: the instance, whether the response
/// completed, and the response body bytes sent.
type OnDone = Box<dyn FnOnce(&Upstream, bool, u64) + Send + Sync>;

/// Holds one unit of the gateway's, the app's and the instance's in-flight
/// counts; gives them back on drop. It owns the request's instance, which
/// holds all three counts (and is the worker's own copy: `published`).
pub struct Guard {
    upstream: Arc<Upstream>,
    on_done: Option<OnDone>,
    completed: bool,
    bytes_out: u64,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("upstream", &self.upstream.label)
            .field("completed", &self.completed)
            .finish()
    }
}

fn counts(u: &Upstream) -> [&Counter; 3] {
    [&u.gateway_in_flight, &u.app_in_flight, &u.in_flight]
}

impl Guard {
    /// Counts one request against the gateway, the app and `upstream`.
    pub fn new(upstream: Arc<Upstream>) -> Self {
        for c in counts(&upstream) {
            c.enter();
        }
        Self {
            upstream,
            on_done: None,
            completed: false,
            bytes_out: 0,
        }
    }

    /// The instance the request is counted against.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }

    /// Moves the instance part of the count to another instance of the
    /// same app (a retry).
    pub fn retarget(&mut self, upstream: Arc<Upstream>) {
        upstream.in_flight.enter();
        self.upstream.in_flight.leave();
        self.upstream = upstream;
    }

    /// Calls `f(instance, completed, bytes_out)` when the guard drops (the
    /// request's outcome goes to the observers from there).
    pub fn on_done(&mut self, f: impl FnOnce(&Upstream, bool, u64) + Send + Sync + 'static) {
        self.on_done = Some(Box::new(f));
    }

    pub fn complete(&mut self) {
        self.completed = true;
    }

    /// Counts response body bytes handed to the client.
    pub fn sent(&mut self, bytes: u64) {
        self.bytes_out += bytes;
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let u = &self.upstream;
        for c in counts(u) {
            c.leave();
        }
        if let Some(f) = self.on_done.take() {
            f(u, self.completed, self.bytes_out);
        }
    }
}

pin_project_lite::pin_project! {
    /// A response body that carries a [`Guard`] until its end.
    pub struct GuardedBody<B> {
        #[pin]
        inner: B,
        guard: Option<Guard>,
        // For long-lived streams (SSE): when this resolves the body ends
        // cleanly between frames, as at the end of a drain's `stream_grace`.
        end: Option<Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>>,
    }
}

impl<B: Body> GuardedBody<B> {
    /// The guard counts the body bytes sent. A body that is empty from the
    /// start (204, 304, an answer to HEAD) is complete already: hyper never
    /// polls it.
    pub fn new(inner: B, mut guard: Guard) -> Self {
        if inner.is_end_stream() {
            guard.complete();
        }
        Self {
            inner,
            guard: Some(guard),
            end: None,
        }
    }

    /// Ends the body cleanly (no more frames) once `token` is cancelled.
    pub fn end_when(mut self, token: &tokio_util::sync::CancellationToken) -> Self {
        self.end = Some(Box::pin(token.clone().cancelled_owned()));
        self
    }
}

impl<B: Body<Data = bytes::Bytes>> Body for GuardedBody<B> {
    type Data = bytes::Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        if let Some(end) = this.end.as_mut() {
            if end.as_mut().poll(cx).is_ready() {
                if let Some(mut g) = this.guard.take() {
                    g.complete();
                }
                return Poll::Ready(None);
            }
        }
        let polled = this.inner.as_mut().poll_frame(cx);
        let ended = match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(g)) = (frame.data_ref(), this.guard.as_mut()) {
                    g.sent(data.len() as u64);
                }
                // hyper stops polling once a body says it has ended.
                this.inner.is_end_stream()
            }
            Poll::Ready(None) => true,
            Poll::Ready(Some(Err(_))) => {
                this.guard.take();
                false
            }
            Poll::Pending => false,
        };
        if ended {
            if let Some(mut g) = this.guard.take() {
                g.complete();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};
    use std::time::Duration;

    /// An instance, and the gateway's count it shares.
    fn counters() -> (Arc<Counter>, Arc<Upstream>) {
        let u = upstream(0);
        (u.gateway_in_flight.clone(), u)
    }

    fn upstream(n: u16) -> Arc<Upstream> {
        Arc::new(super::super::routes::testing::upstream(n))
    }

    #[tokio::test(start_paused = true)]
    async fn guard_counts_until_the_body_ends() {
        let (g, u) = counters();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(4);
        let body = GuardedBody::new(
            StreamBody::new(tokio_stream_from(rx)),
            Guard::new(u.clone()),
        );
        assert_eq!(
            (g.get(), u.app_in_flight.get(), u.in_flight.get()),
            (1, 1, 1)
        );
        let reader = tokio::spawn(async move { body.collect().await.map(|c| c.to_bytes()) });
        tx.send(Ok(Frame::data(Bytes::from_static(b"event 1\n"))))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Still streaming: still counted.
        assert_eq!(g.get(), 1);
        drop(tx);
        assert_eq!(&reader.await.unwrap().unwrap()[..], b"event 1\n");
        assert_eq!(
            (g.get(), u.app_in_flight.get(), u.in_flight.get()),
            (0, 0, 0)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_body_releases_the_guard_as_not_completed() {
        let (g, u) = counters();
        let done = Arc::new(std::sync::Mutex::new(None));
        let mut guard = Guard::new(u.clone());
        let seen = done.clone();
        guard.on_done(move |_, completed, _| *seen.lock().unwrap() = Some(completed));
        let body = GuardedBody::new(http_body_util::Full::new(Bytes::from("x")), guard);
        drop(body); // the client went away
        assert_eq!(g.get(), 0);
        assert_eq!(*done.lock().unwrap(), Some(false));
    }

    #[tokio::test(start_paused = true)]
    async fn an_empty_body_is_complete_though_never_polled() {
        let (g, u) = counters();
        let done = Arc::new(std::sync::Mutex::new(None));
        let mut guard = Guard::new(u.clone());
        let seen = done.clone();
        guard.on_done(move |_, completed, _| *seen.lock().unwrap() = Some(completed));
        let body = GuardedBody::new(http_body_util::Empty::<Bytes>::new(), guard);
        assert_eq!(g.get(), 1, "still in flight until the response is gone");
        drop(body); // a 204: hyper sent the head and never polled the body
        assert_eq!(*done.lock().unwrap(), Some(true));
    }

    #[tokio::test(start_paused = true)]
    async fn wait_idle_returns_when_the_count_reaches_zero_or_the_deadline_passes() {
        let (g, u) = counters();
        let guard = Guard::new(u.clone());
        let deadline = Instant::now() + Duration::from_secs(5);
        let waiter = {
            let g = g.clone();
            tokio::spawn(async move { g.wait_idle(deadline).await })
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiter.is_finished());
        drop(guard);
        assert!(waiter.await.unwrap());

        let _held = Guard::new(u.clone());
        let start = Instant::now();
        assert!(!g.wait_idle(start + Duration::from_secs(3)).await);
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }

    #[test]
    fn a_retry_moves_the_instance_count_but_not_the_app_count() {
        let (g, u) = counters();
        let (a, first) = (u.app_in_flight.clone(), u.in_flight.clone());
        let other = Upstream::clone(&upstream(1)).with_shared(
            Arc::default(),
            u.conns.clone(),
            a.clone(),
            g.clone(),
        );
        let second = other.in_flight.clone();
        let mut guard = Guard::new(u);
        guard.retarget(Arc::new(other));
        assert_eq!((g.get(), a.get(), first.get(), second.get()), (1, 1, 0, 1));
        drop(guard);
        assert_eq!((g.get(), a.get(), second.get()), (0, 0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_guard_dropped_on_another_thread_still_empties_the_count_and_wakes_the_drain() {
        let (g, u) = counters();
        let guard = Guard::new(u.clone());
        let start = Instant::now();
        let waiter = {
            let g = g.clone();
            tokio::spawn(async move { g.wait_idle(start + Duration::from_secs(5)).await })
        };
        tokio::task::yield_now().await;
        std::thread::spawn(move || drop(guard)).join().unwrap();
        assert!(waiter.await.unwrap());
        // Paused time jumps to the deadline only if nothing woke the drain.
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "woken, not timed out"
        );
        assert_eq!(
            (g.get(), u.app_in_flight.get(), u.in_flight.get()),
            (0, 0, 0)
        );
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
