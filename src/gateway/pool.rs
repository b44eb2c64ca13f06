//! Keep-alive upstream connections, one pool per gateway worker thread.
//!
//! Built on hyper's connection API rather than hyper-util's generic client:
//! a worker only needs "an idle HTTP/1 connection to this address, or a new
//! one", and doing just that removes the generic pool's keying, checkout
//! futures and locking from every request (bench/RESULTS.md).
//!
//! A connection goes back to the pool only when its response body has been
//! read to the end; a failed, upgraded or half-read connection is dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use super::ProxyBody;

/// Idle connections kept per upstream address.
const MAX_IDLE: usize = 256;

#[derive(Debug)]
pub enum PoolError {
    /// Could not connect (nothing was sent: safe to retry elsewhere).
    Connect(std::io::Error),
    /// The connection failed after the request was (maybe) sent.
    Request(hyper::Error),
}

#[derive(Clone)]
pub struct Pool {
    idle: Arc<Mutex<HashMap<SocketAddr, Vec<SendRequest<ProxyBody>>>>>,
    connect_timeout: Duration,
}

impl Pool {
    pub fn new(connect_timeout: Duration) -> Self {
        Self {
            idle: Arc::default(),
            connect_timeout,
        }
    }

    /// Sends `req` to `addr` on an idle connection, or a new one. The
    /// response body gives the connection back when it ends.
    pub async fn send(
        &self,
        addr: SocketAddr,
        req: Request<ProxyBody>,
    ) -> Result<Response<PooledBody>, PoolError> {
        let mut sender = loop {
            match self.take_idle(addr) {
                // Idle connections finish their last exchange a moment after
                // its body ended; a closed one fails here and is dropped.
                Some(mut s) => {
                    if s.ready().await.is_ok() {
                        break s;
                    }
                }
                None => break self.connect(addr).await?,
            }
        };
        let res = sender.send_request(req).await.map_err(PoolError::Request)?;
        let upgraded = res.status() == hyper::StatusCode::SWITCHING_PROTOCOLS;
        let mut giveback = (!upgraded).then(|| (self.clone(), addr, sender));
        // A response without a body is never polled: its connection is free now.
        if res.body().is_end_stream() {
            if let Some((pool, addr, sender)) = giveback.take() {
                pool.put_back(addr, sender);
            }
        }
        Ok(res.map(|inner| PooledBody { inner, giveback }))
    }

    fn take_idle(&self, addr: SocketAddr) -> Option<SendRequest<ProxyBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        idle.get_mut(&addr)?.pop()
    }

    fn put_back(&self, addr: SocketAddr, sender: SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let list = idle.entry(addr).or_default();
        if list.len() < MAX_IDLE {
            list.push(sender);
        }
    }

    async fn connect(&self, addr: SocketAddr) -> Result<SendRequest<ProxyBody>, PoolError> {
        let stream =
            tokio::time::timeout(self.connect_timeout, tokio::net::TcpStream::connect(addr))
                .await
                .map_err(|_| PoolError::Connect(std::io::ErrorKind::TimedOut.into()))?
                .map_err(PoolError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| PoolError::Connect(std::io::Error::other(e)))?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(upstream = %addr, error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }
}

pin_project_lite::pin_project! {
    /// An upstream response body that returns its connection to the pool
    /// once read to the end.
    pub struct PooledBody {
        #[pin]
        inner: Incoming,
        giveback: Option<(Pool, SocketAddr, SendRequest<ProxyBody>)>,
    }
}

impl Body for PooledBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        let done = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => this.inner.is_end_stream(),
            Poll::Ready(Some(Err(_))) => {
                this.giveback.take();
                false
            }
            Poll::Pending => false,
        };
        if done {
            if let Some((pool, addr, sender)) = this.giveback.take() {
                pool.put_back(addr, sender);
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
