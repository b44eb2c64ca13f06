//! The gateway's own HTTP/1.1 client for body-less requests (the common
//! GET): the request's task writes the head and reads the response on the
//! pooled socket itself.
//!
//! hyper's client connection runs in its own task and hands each request
//! and response across a channel, and its head handling is general: doing
//! just this took a proxied GET from 34,708 to 26,835 instructions
//! (bench/RESULTS.md). Requests with a body or an upgrade still go through
//! hyper (`pool`), on the same pooled sockets.
//!
//! Message framing follows hyper's client exactly (RFC 9112 §6.3): no body
//! for HEAD, 1xx, 204 and 304; `Transfer-Encoding` ending in `chunked`
//! before `Content-Length`; other transfer codings and a missing length
//! read to the connection's end; differing or bad lengths are an error;
//! informational responses before the final one are skipped; at most 100
//! headers and a 400 KiB head.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Response, StatusCode, Version};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

use super::pool::Giveback;
use super::request::Forwarded;

mod body;
pub use body::Body;
#[cfg(test)]
use body::{decode_chunked, Chunk, Decoded};

/// Headers a response head may have (hyper's client default).
const MAX_HEADERS: usize = 100;
/// Bytes a response head (or a chunk-size line, or trailers) may take.
const MAX_HEAD: usize = 400 * 1024;
/// What one read asks for while a body streams: at first, and at most (it
/// doubles while reads fill it, as hyper's does: a large download gets
/// large reads, a stream of small events keeps a small buffer).
const FIRST_READ: usize = 16 * 1024;
const MAX_READ: usize = 512 * 1024;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A pooled upstream socket, with what was read past the last message
/// (nothing, when it is idle) and the instance's connection permit.
pub struct RawConn {
    pub io: TcpStream,
    pub buf: BytesMut,
    pub permit: OwnedSemaphorePermit,
    /// The response timeout's timer (see [`LazyTimer`]).
    timer: LazyTimer,
}

impl RawConn {
    pub fn new(io: TcpStream, permit: OwnedSemaphorePermit) -> Self {
        Self {
            io,
            buf: BytesMut::new(),
            permit,
            timer: LazyTimer::default(),
        }
    }

    /// The socket registered with the current runtime instead of the one
    /// that opened it (a gateway worker borrowing another's idle socket).
    pub fn rehome(self) -> std::io::Result<Self> {
        let io = TcpStream::from_std(self.io.into_std()?)?;
        // The timer belongs to the old runtime's clock too.
        let timer = LazyTimer::default();
        Ok(Self { io, timer, ..self })
    }
}

/// A connection's timer for the response timeout, kept across its
/// exchanges: registering and removing a timer per request cost ~700
/// instructions (bench/RESULTS.md). Each exchange's deadline is later than
/// the one before, so the timer stays where it is and, when it fires
/// early, moves on to the current deadline — once per timeout period at
/// most. Made fresh, it is a timeout that costs nothing unless the wait
/// is real (the pool's checkout).
#[derive(Default)]
pub(super) struct LazyTimer(Option<Pin<Box<tokio::time::Sleep>>>);

impl LazyTimer {
    /// `Ready` once `deadline` has passed.
    fn poll_until(&mut self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let sleep = self
            .0
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() > deadline {
            sleep.as_mut().reset(deadline);
        }
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if Instant::now() >= deadline {
                return Poll::Ready(());
            }
            sleep.as_mut().reset(deadline);
        }
    }
}

/// Runs `fut` until `deadline` on `timer` (`None`: the deadline came first).
pub(super) async fn until<F: Future>(
    timer: &mut LazyTimer,
    deadline: Instant,
    fut: F,
) -> Option<F::Output> {
    let mut fut = std::pin::pin!(fut);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(out) = fut.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        timer.poll_until(deadline, cx).map(|()| None)
    })
    .await
}

/// Why an exchange failed, and whether the upstream can have seen the
/// request at all (`replayable`: nothing came back, not even one byte).
#[derive(Debug)]
pub struct Failed {
    pub error: BoxError,
    pub replayable: bool,
    /// No response head before the deadline.
    pub timed_out: bool,
}

impl Failed {
    fn new(error: BoxError, replayable: bool) -> Self {
        Self {
            error,
            replayable,
            timed_out: false,
        }
    }

    fn timeout() -> Self {
        Self {
            error: invalid("no response before upstream_response_timeout"),
            replayable: false,
            timed_out: true,
        }
    }
}

fn invalid(what: &str) -> BoxError {
    std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string()).into()
}

/// Writes the head of a body-less request, then reads the response head,
/// both before `deadline`. The returned body reads the rest and gives the
/// socket back through `giveback` when the message ends and the connection
/// may be reused.
pub async fn exchange(
    mut conn: RawConn,
    parts: &hyper::http::request::Parts,
    forwarded: &Forwarded<'_>,
    giveback: Giveback,
    deadline: Instant,
) -> Result<Response<Body>, Failed> {
    // The head goes out of the socket's own buffer (empty: pooled sockets
    // hold no unread bytes), which then takes the response. (Once the
    // last response's bytes are dropped, `reserve` reclaims the whole
    // allocation: no allocation per request.)
    conn.buf.reserve(8 * 1024);
    encode_head(parts, forwarded, &mut conn.buf);
    match until(&mut conn.timer, deadline, conn.io.write_all(&conn.buf)).await {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(Failed::new(e.into(), true)),
        None => return Err(Failed::timeout()),
    }
    conn.buf.clear();
    let is_head = parts.method == Method::HEAD;
    let mut received = false;
    loop {
        // (Nothing to parse before the first read: the buffer is empty.)
        let parsed = if conn.buf.is_empty() {
            Ok(None)
        } else {
            parse_head(&mut conn.buf, is_head)
        };
        match parsed {
            Ok(Some(Parsed::Informational)) => continue,
            Ok(Some(Parsed::Final(res, framing, keep_alive))) => {
                return Ok(res.map(|()| Body::new(conn, framing, keep_alive, giveback)));
            }
            Ok(None) if conn.buf.len() >= MAX_HEAD => {
                return Err(Failed::new(
                    invalid("upstream response head too large"),
                    false,
                ))
            }
            Ok(None) => {}
            Err(error) => return Err(Failed::new(error, false)),
        }
        conn.buf.reserve(8 * 1024);
        let read = tokio::io::AsyncReadExt::read_buf(&mut conn.io, &mut conn.buf);
        let read = until(&mut conn.timer, deadline, read).await;
        let replayable = !received && conn.buf.is_empty();
        match read {
            Some(Ok(0)) => {
                let closed = invalid("upstream closed the connection before a response");
                return Err(Failed::new(closed, replayable));
            }
            Some(Ok(_)) => received = true,
            Some(Err(e)) => return Err(Failed::new(e.into(), replayable)),
            None => return Err(Failed::timeout()),
        }
    }
}

/// `METHOD target HTTP/1.1`, the headers (with `forwarded`'s), and the
/// empty line.
pub fn encode_head(
    parts: &hyper::http::request::Parts,
    forwarded: &Forwarded<'_>,
    out: &mut BytesMut,
) {
    out.extend_from_slice(parts.method.as_str().as_bytes());
    out.extend_from_slice(b" ");
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    forwarded.encode(&parts.headers, out);
    out.extend_from_slice(b"\r\n");
}

/// How a response's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` bytes (0: no body).
    Length(u64),
    Chunked,
    /// Until the upstream closes the connection.
    Close,
}

enum Parsed {
    /// A 1xx response, skipped.
    Informational,
    /// The final response head, how its body is framed, and whether the
    /// connection may carry another exchange.
    Final(Response<()>, Framing, bool),
}

/// Parses a complete response head at the start of `buf` and takes it out
/// (`None`: more bytes are needed). Synchronous, so the header array never
/// lives in a future.
///
/// The header values point into the head's bytes (no copy), and hop-by-hop
/// fields (RFC 9110 §7.6.1) are left out here, where each name is looked
/// at anyway: the map is not searched for them again.
fn parse_head(buf: &mut BytesMut, is_head: bool) -> Result<Option<Parsed>, BoxError> {
    // (start, end) of each kept name and value.
    let mut kept = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let (len, code, version, count, fields) = {
        let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut parsed = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut parsed,
            buf,
            &mut slots,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(invalid(&format!("invalid upstream response: {e}"))),
        };
        let code = parsed.code.unwrap_or(0);
        let version = if parsed.version == Some(0) {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        // The framing fields are noted while the names go by: looking them
        // up in the map afterwards hashes each name again.
        let mut fields = Fields::default();
        let mut count = 0;
        let base = buf.as_ptr() as usize;
        let at = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
        for h in parsed.headers.iter() {
            let name = h.name.as_bytes();
            if fields.note(name, h.value)? {
                continue;
            }
            kept[count] = (
                at(name),
                at(name) + name.len() as u32,
                at(h.value),
                at(h.value) + h.value.len() as u32,
            );
            count += 1;
        }
        (len, code, version, count, fields)
    };
    let head = buf.split_to(len).freeze();
    let status = StatusCode::from_u16(code).map_err(|_| invalid("invalid upstream status"))?;
    match code {
        101 => return Err(invalid("upstream switched protocols unasked")),
        100..=199 => return Ok(Some(Parsed::Informational)),
        _ => {}
    }
    let mut headers = HeaderMap::with_capacity(count);
    for &(n0, n1, v0, v1) in &kept[..count] {
        let name = HeaderName::from_bytes(&head[n0 as usize..n1 as usize])
            .map_err(|_| invalid("invalid upstream header name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(v0 as usize..v1 as usize))
            .map_err(|_| invalid("invalid upstream header value"))?;
        headers.append(name, value);
    }
    if fields.named_other {
        // `Connection` names more fields to leave out: rarely, so by name.
        for token in fields
            .connection
            .iter()
            .flat_map(|v| v.split(|&b| b == b','))
        {
            if let Ok(name) = HeaderName::from_bytes(token.trim_ascii()) {
                headers.remove(name);
            }
        }
    }
    let framing = fields.framing(status, is_head, version)?;
    let keep_alive = framing != Framing::Close
        && match version {
            Version::HTTP_11 => !fields.close,
            _ => fields.keep_alive,
        };
    let mut res = Response::new(());
    *res.status_mut() = status;
    *res.version_mut() = version;
    *res.headers_mut() = headers;
    Ok(Some(Parsed::Final(res, framing, keep_alive)))
}

/// What a response head's fields say about its framing and connection.
#[derive(Default)]
struct Fields {
    /// Whether `Transfer-Encoding` was there, and whether its last coding
    /// (of the last field) is `chunked`.
    transfer_encoding: bool,
    chunked: bool,
    /// The `Content-Length`, when every value agreed.
    length: Option<u64>,
    /// `Connection` tokens.
    close: bool,
    keep_alive: bool,
    /// `Connection` names other fields; its values, to remove those.
    named_other: bool,
    connection: Vec<Vec<u8>>,
}

impl Fields {
    /// Notes what a field says about framing and the connection; `true`
    /// when the field is hop-by-hop and stays out of the response.
    fn note(&mut self, name: &[u8], value: &[u8]) -> Result<bool, BoxError> {
        let tokens = || value.split(|&b| b == b',').map(<[u8]>::trim_ascii);
        let is = |s: &[u8]| name.eq_ignore_ascii_case(s);
        match name.len() {
            2 if is(b"te") => return Ok(true),
            7 if is(b"trailer") || is(b"upgrade") => return Ok(true),
            10 if is(b"keep-alive") => return Ok(true),
            16 if is(b"proxy-connection") => return Ok(true),
            10 if is(b"connection") => {
                let mut other = false;
                for t in tokens() {
                    let close = t.eq_ignore_ascii_case(b"close");
                    let keep_alive = t.eq_ignore_ascii_case(b"keep-alive");
                    self.close |= close;
                    self.keep_alive |= keep_alive;
                    other |= !close && !keep_alive && !t.is_empty();
                }
                if other {
                    self.named_other = true;
                    self.connection.push(value.to_vec());
                }
                return Ok(true);
            }
            17 if is(b"transfer-encoding") => {
                self.transfer_encoding = true;
                self.chunked = tokens()
                    .next_back()
                    .is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
                return Ok(true);
            }
            14 if is(b"content-length") => {}
            _ => return Ok(false),
        }
        for part in tokens() {
            let n = std::str::from_utf8(part)
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| invalid("invalid upstream Content-Length"))?;
            if self.length.is_some_and(|l| l != n) {
                return Err(invalid("differing upstream Content-Length values"));
            }
            self.length = Some(n);
        }
        Ok(false)
    }

    /// RFC 9112 §6.3, as hyper's client applies it.
    fn framing(
        &self,
        status: StatusCode,
        is_head: bool,
        version: Version,
    ) -> Result<Framing, BoxError> {
        if is_head || matches!(status.as_u16(), 204 | 304) {
            return Ok(Framing::Length(0));
        }
        if self.transfer_encoding {
            if version == Version::HTTP_10 {
                return Err(invalid("HTTP/1.0 upstream response with Transfer-Encoding"));
            }
            return Ok(if self.chunked {
                Framing::Chunked
            } else {
                Framing::Close
            });
        }
        Ok(self.length.map_or(Framing::Close, Framing::Length))
    }
}

#[cfg(test)]
mod tests;
