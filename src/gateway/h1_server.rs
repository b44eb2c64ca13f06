//! The gateway's own HTTP/1.1 server for the common request: a head
//! without a body, not an upgrade, not for the MCP front. It reads, routes,
//! forwards and writes in the connection's task, with no per-request hand-
//! offs, no second parse of the head and one header map reused per
//! connection; hyper's server machinery cost ~10,000 instructions of a
//! proxied GET's ~26,000 (bench/RESULTS.md).
//!
//! Everything else is hyper's: the first head this server does not serve
//! (or cannot parse — hyper then answers 400, 414 or 431 as always), and
//! HTTP/2's preface, hand the connection to hyper with the bytes read so
//! far ([`Prefixed`]), and hyper keeps it to its end. The wire format
//! follows hyper's server (`wire`), and the phases and timeouts are the
//! same [`ConnState`] ones `conn::drive` applies to hyper's connections.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::Body;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::Method;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::conn::{ConnState, Timeouts};
use super::forward::{self, Peer};
use super::{Gateway, ProxyBody, Upstreams};
use wire::{Answering, BodyLength, Encoder, Head};

pub(super) mod wire;

/// What one read asks for.
const READ: usize = 8 * 1024;
/// Reads go into the buffer's free tail while it has this much: asking
/// for more would reallocate it while the request's header values still
/// point into it.
const MIN_FREE: usize = 1024;
/// Body data shorter than this is copied behind the head (one write);
/// longer data is written from where it is.
const COPY_MAX: usize = 16 * 1024;

/// Serves `io` until it closes (`None`) or hyper must take it over.
pub(super) async fn serve<I>(
    gw: &Arc<Gateway>,
    mut io: I,
    peer: &Peer,
    state: &Arc<ConnState>,
    upstreams: &Upstreams,
    closing: &CancellationToken,
) -> Option<Prefixed<I>>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let t = gw.timeouts;
    let max = gw.max_head;
    let mut buf = BytesMut::with_capacity(READ);
    let mut out = BytesMut::with_capacity(READ);
    let mut headers = Some(HeaderMap::new());
    let mut waiting = Waiting::new(state, t, closing);
    loop {
        // A head, read within the phase's limit.
        let (req, keep_alive, clean, raw) = loop {
            if !buf.is_empty() {
                match wire::parse_request(&mut buf, headers.take().unwrap_or_default(), max) {
                    Head::Plain {
                        req,
                        keep_alive,
                        clean,
                        raw,
                    } => break (req, keep_alive, clean, raw),
                    Head::HandOver => return Some(Prefixed::new(io, buf.freeze())),
                    Head::Partial => {}
                }
            }
            headers.get_or_insert_with(HeaderMap::new);
            if !waiting.read(&mut io, &mut buf).await {
                return None;
            }
        };
        if let Some(mount) = gw.mounted.load().as_ref() {
            if forward::mounted(mount, &req) {
                let again = wire::rejoin(&raw, &buf).freeze();
                return Some(Prefixed::new(io, again));
            }
        }
        drop(raw);
        let active = state.begin();
        let answering = Answering {
            head: req.method() == Method::HEAD,
            version: req.version(),
            keep_alive,
        };
        // Forwarded while the client is watched: one that goes away
        // cancels its request, as with hyper.
        let res = until_gone(
            &mut io,
            &mut buf,
            forward::proxy(gw, upstreams, req, clean, None, None, peer),
        )
        .await?;
        let (mut parts, body) = res.into_parts();
        if closing.is_cancelled() {
            // Shutting down: this response is the connection's last.
            parts
                .headers
                .insert(hyper::header::CONNECTION, HeaderValue::from_static("close"));
        }
        let length = (!body.is_end_stream()).then(|| {
            body.size_hint()
                .exact()
                .map_or(BodyLength::Unknown, BodyLength::Known)
        });
        let (encoder, last) = wire::encode_response(&mut parts, answering, length, &mut out);
        parts.headers.clear();
        headers = Some(parts.headers);
        let written = if encoder == Encoder::Length(0) {
            drop(body);
            flush_within(&mut io, &mut out, t.idle).await
        } else {
            write_body(&mut io, &mut buf, &mut out, body, encoder, t.idle).await
        };
        drop(active);
        if !written {
            return None;
        }
        if last {
            let _ = tokio::time::timeout(t.idle, io.shutdown()).await;
            return None;
        }
    }
}

/// Waits for request bytes under `ConnState`'s phase limits: the header
/// timeout, the idle timeout, and at shutdown the quiet period. One timer
/// per connection, moved only when a limit comes sooner than it is set
/// for (a later one is found when it fires). The shutdown signal keeps the
/// connection task's waker from its first poll (it has no coop budget), so
/// later waits only look at the token.
struct Waiting<'a> {
    state: &'a Arc<ConnState>,
    t: Timeouts,
    token: CancellationToken,
    closing: Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    closing_polled: bool,
    closing_seen: bool,
    timer: Pin<Box<tokio::time::Sleep>>,
    armed: Instant,
}

impl<'a> Waiting<'a> {
    fn new(state: &'a Arc<ConnState>, t: Timeouts, closing: &CancellationToken) -> Self {
        let armed = state.deadline(&t, false).unwrap_or_else(Instant::now);
        Self {
            state,
            t,
            token: closing.clone(),
            closing_seen: closing.is_cancelled(),
            closing: Box::pin(closing.clone().cancelled_owned()),
            closing_polled: false,
            timer: Box::pin(tokio::time::sleep_until(armed)),
            armed,
        }
    }

    /// Reads more of a head into `buf`: `false` when the connection ends
    /// (closed, failed, or its limit passed).
    async fn read<I: AsyncRead + Unpin>(&mut self, io: &mut I, buf: &mut BytesMut) -> bool {
        std::future::poll_fn(|cx| self.poll_read(cx, io, buf)).await
    }

    fn poll_read<I: AsyncRead + Unpin>(
        &mut self,
        cx: &mut Context<'_>,
        io: &mut I,
        buf: &mut BytesMut,
    ) -> Poll<bool> {
        loop {
            let before = buf.len();
            make_room(buf);
            match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(false),
                Poll::Ready(Ok(_)) => {
                    self.state.on_read(&buf[before..]);
                    return Poll::Ready(true);
                }
                Poll::Pending => {}
            }
            if !self.closing_seen {
                if !self.closing_polled {
                    self.closing_polled = true;
                    self.closing_seen = self.closing.as_mut().poll(cx).is_ready();
                } else {
                    self.closing_seen = self.token.is_cancelled();
                }
            }
            let Some(deadline) = self.state.deadline(&self.t, self.closing_seen) else {
                return Poll::Pending; // not idle: cannot happen while reading a head
            };
            if deadline <= Instant::now() {
                return Poll::Ready(false);
            }
            if deadline < self.armed || self.timer.is_elapsed() {
                self.armed = deadline;
                self.timer.as_mut().reset(deadline);
            }
            // Polled every time: a poll the task's coop budget refused
            // registers no waker, and a fired timer keeps none.
            if self.timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

/// Drives `fut` to its end unless the client closes first (`None`). Bytes
/// the client sends meanwhile (a pipelined request) are kept in `buf`.
async fn until_gone<I, F>(io: &mut I, buf: &mut BytesMut, fut: F) -> Option<F::Output>
where
    I: AsyncRead + Unpin,
    F: Future,
{
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        match watch(cx, io, buf) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// `Ready` once the client has closed its side (or failed). As hyper's
/// server (without half-close): looked for only while nothing of a next
/// request is buffered; once something is, the current request finishes.
fn watch<I: AsyncRead + Unpin>(cx: &mut Context<'_>, io: &mut I, buf: &mut BytesMut) -> Poll<()> {
    if !buf.is_empty() {
        return Poll::Pending;
    }
    make_room(buf);
    match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, buf) {
        Poll::Ready(Ok(0) | Err(_)) => Poll::Ready(()),
        Poll::Ready(Ok(_)) | Poll::Pending => Poll::Pending,
    }
}

/// Room for a read (see [`MIN_FREE`]).
fn make_room(buf: &mut BytesMut) {
    if buf.capacity() - buf.len() < MIN_FREE {
        buf.reserve(READ);
    }
}

/// What the body has next, or that the buffered bytes should go out first.
enum Next {
    Frame(hyper::body::Frame<Bytes>),
    End,
    Failed,
    Flush,
    ClientGone,
}

/// Writes the head in `out` and the body after it; `false` when the
/// connection cannot carry another response (a failed body, a body
/// shorter than its length, a write error, the client gone).
async fn write_body<I>(
    io: &mut I,
    buf: &mut BytesMut,
    out: &mut BytesMut,
    body: ProxyBody,
    encoder: Encoder,
    idle: Duration,
) -> bool
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut body = std::pin::pin!(body);
    let mut left = match encoder {
        Encoder::Length(n) => n,
        _ => u64::MAX,
    };
    loop {
        let next = std::future::poll_fn(|cx| {
            match body.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => return Poll::Ready(Next::Frame(frame)),
                Poll::Ready(Some(Err(_))) => return Poll::Ready(Next::Failed),
                Poll::Ready(None) => return Poll::Ready(Next::End),
                Poll::Pending => {}
            }
            if !out.is_empty() {
                return Poll::Ready(Next::Flush);
            }
            match watch(cx, io, buf) {
                Poll::Ready(()) => Poll::Ready(Next::ClientGone),
                Poll::Pending => Poll::Pending,
            }
        })
        .await;
        match next {
            Next::Frame(frame) => {
                // Trailers end the body: hyper sends only declared ones, and
                // the gateway declares none.
                let Ok(mut data) = frame.into_data() else {
                    return end(io, out, encoder, left, idle).await;
                };
                // As hyper: a body that says it has ended is not polled again.
                let ended = body.is_end_stream();
                if data.is_empty() {
                    if ended {
                        return end(io, out, encoder, left, idle).await;
                    }
                    continue;
                }
                if let Encoder::Length(_) = encoder {
                    if data.len() as u64 > left {
                        data.truncate(left as usize);
                    }
                    left -= data.len() as u64;
                }
                if encoder == Encoder::Chunked {
                    wire::chunk_size(out, data.len());
                }
                if data.len() < COPY_MAX {
                    out.extend_from_slice(&data);
                } else if write_both(io, out, data).await.is_err() {
                    return false;
                }
                if encoder == Encoder::Chunked {
                    out.extend_from_slice(b"\r\n");
                }
                if ended || left == 0 {
                    return end(io, out, encoder, left, idle).await;
                }
            }
            Next::End => return end(io, out, encoder, left, idle).await,
            Next::Failed | Next::ClientGone => return false,
            Next::Flush => {
                if flush(io, out).await.is_err() {
                    return false;
                }
            }
        }
    }
}

/// Ends the body (`left`: bytes a length-framed body still owed) and
/// writes out the rest; `false` when the connection cannot be reused.
async fn end<I: AsyncWrite + Unpin>(
    io: &mut I,
    out: &mut BytesMut,
    encoder: Encoder,
    left: u64,
    idle: Duration,
) -> bool {
    if encoder == Encoder::Chunked {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    let complete = matches!(encoder, Encoder::Chunked | Encoder::Close) || left == 0;
    flush_within(io, out, idle).await && complete
}

/// The response's last bytes: once its body has ended, the request no
/// longer counts as in flight, and a client that stops reading gets the
/// idle limit (as `conn::drive` gives it on hyper's connections).
async fn flush_within<I: AsyncWrite + Unpin>(
    io: &mut I,
    out: &mut BytesMut,
    idle: Duration,
) -> bool {
    matches!(tokio::time::timeout(idle, flush(io, out)).await, Ok(Ok(())))
}

/// Writes what `out` holds, then `data`, in as few writes as the socket takes.
async fn write_both<I: AsyncWrite + Unpin>(
    io: &mut I,
    out: &mut BytesMut,
    mut data: Bytes,
) -> std::io::Result<()> {
    while !out.is_empty() {
        let slices = [std::io::IoSlice::new(out), std::io::IoSlice::new(&data)];
        let n = io.write_vectored(&slices).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        let from_out = n.min(out.len());
        out.advance(from_out);
        data.advance(n - from_out);
    }
    out.clear();
    io.write_all(&data).await?;
    // TLS: the records may still be in rustls's buffer.
    io.flush().await
}

/// Writes out what `out` holds.
async fn flush<I: AsyncWrite + Unpin>(io: &mut I, out: &mut BytesMut) -> std::io::Result<()> {
    if !out.is_empty() {
        io.write_all(out).await?;
        out.clear();
    }
    io.flush().await
}

pin_project_lite::pin_project! {
    /// A connection handed to hyper: the bytes already read come first.
    pub struct Prefixed<I> {
        prefix: Bytes,
        #[pin]
        io: I,
    }
}

impl<I> Prefixed<I> {
    pub fn new(io: I, prefix: Bytes) -> Self {
        Self { prefix, io }
    }
}

impl<I: AsyncRead> AsyncRead for Prefixed<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.project();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(out.remaining());
            out.put_slice(&this.prefix[..n]);
            this.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        this.io.poll_read(cx, out)
    }
}

impl<I: AsyncWrite> AsyncWrite for Prefixed<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}
