//! A response body read by the gateway's own HTTP/1.1 client: fixed
//! length, chunked (RFC 9112 §7.1) or read to the close, streamed from the
//! pooled socket in the task that polls it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use hyper::body::{Frame, SizeHint};
use hyper::header::{HeaderMap, HeaderName, HeaderValue};

use super::{invalid, BoxError, Framing, RawConn, FIRST_READ, MAX_HEAD, MAX_HEADERS, MAX_READ};
use crate::gateway::pool::Giveback;

/// Where a chunked body's decoding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk: bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields, then the empty line.
    Trailers,
}

/// What the decoder made of the buffered bytes.
#[derive(Debug, PartialEq)]
pub(super) enum Decoded {
    Data(Bytes),
    Trailers(HeaderMap),
    End,
    /// More bytes are needed.
    More,
}

/// Decodes as much of `buf` as forms the next frame (RFC 9112 §7.1).
pub(super) fn decode_chunked(state: &mut Chunk, buf: &mut BytesMut) -> Result<Decoded, BoxError> {
    loop {
        match *state {
            Chunk::Size => {
                let Some(eol) = find_crlf(buf) else {
                    return too_long(buf.len(), "chunk-size line");
                };
                let line = &buf[..eol];
                let digits = line
                    .split(|&b| b == b';')
                    .next()
                    .unwrap_or(&[])
                    .trim_ascii();
                if digits.is_empty() || digits.len() > 16 {
                    return Err(invalid("invalid chunk size from upstream"));
                }
                let size = std::str::from_utf8(digits)
                    .ok()
                    .and_then(|s| u64::from_str_radix(s, 16).ok())
                    .ok_or_else(|| invalid("invalid chunk size from upstream"))?;
                buf.advance(eol + 2);
                *state = if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                };
            }
            Chunk::Data(left) => {
                if buf.is_empty() {
                    return Ok(Decoded::More);
                }
                let n = left.min(buf.len() as u64) as usize;
                let data = buf.split_to(n).freeze();
                *state = if n as u64 == left {
                    Chunk::DataEnd
                } else {
                    Chunk::Data(left - n as u64)
                };
                return Ok(Decoded::Data(data));
            }
            Chunk::DataEnd => {
                if buf.len() < 2 {
                    return Ok(Decoded::More);
                }
                if &buf[..2] != b"\r\n" {
                    return Err(invalid("chunk data not followed by CRLF"));
                }
                buf.advance(2);
                *state = Chunk::Size;
            }
            Chunk::Trailers => {
                if buf.starts_with(b"\r\n") {
                    buf.advance(2);
                    return Ok(Decoded::End);
                }
                let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
                let (len, fields) = match httparse::parse_headers(buf, &mut slots) {
                    Ok(httparse::Status::Complete(done)) => done,
                    Ok(httparse::Status::Partial) => return too_long(buf.len(), "trailer section"),
                    Err(e) => return Err(invalid(&format!("invalid upstream trailers: {e}"))),
                };
                let mut trailers = HeaderMap::with_capacity(fields.len());
                for f in fields {
                    if let (Ok(n), Ok(v)) = (
                        HeaderName::from_bytes(f.name.as_bytes()),
                        HeaderValue::from_bytes(f.value),
                    ) {
                        trailers.append(n, v);
                    }
                }
                buf.advance(len);
                *state = Chunk::Size; // unused: the body ends here
                return Ok(Decoded::Trailers(trailers));
            }
        }
    }
}

fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

fn too_long(have: usize, what: &str) -> Result<Decoded, BoxError> {
    if have >= MAX_HEAD {
        Err(invalid(&format!("upstream {what} too long")))
    } else {
        Ok(Decoded::More)
    }
}

/// The body of a response read by [`super::exchange`]: streamed from the socket in
/// the task that polls it; the socket goes back to the pool at its end.
pub struct Body {
    conn: Option<RawConn>,
    state: State,
    keep_alive: bool,
    giveback: Option<Giveback>,
    /// What the next read asks for.
    read_size: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Length(u64),
    Chunked(Chunk),
    Close,
    Done,
}

impl Body {
    pub(super) fn new(
        conn: RawConn,
        framing: Framing,
        keep_alive: bool,
        giveback: Giveback,
    ) -> Self {
        let state = match framing {
            Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => State::Chunked(Chunk::Size),
            Framing::Close => State::Close,
        };
        let mut body = Self {
            conn: Some(conn),
            state,
            keep_alive,
            giveback: Some(giveback),
            read_size: FIRST_READ,
        };
        if state == State::Done {
            body.finish();
        }
        body
    }

    /// The message ended: the socket goes back if it can carry another.
    fn finish(&mut self) {
        self.state = State::Done;
        let (Some(conn), Some(giveback)) = (self.conn.take(), self.giveback.take()) else {
            return;
        };
        if self.keep_alive && conn.buf.is_empty() {
            giveback.put_back_raw(conn);
        }
    }

    fn fail(&mut self, error: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.state = State::Done;
        self.conn = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            // A frame from what is buffered, if it holds one.
            match &mut this.state {
                State::Done => return Poll::Ready(None),
                State::Length(left) if !conn.buf.is_empty() => {
                    let n = (*left).min(conn.buf.len() as u64) as usize;
                    let data = conn.buf.split_to(n).freeze();
                    *left -= n as u64;
                    if *left == 0 {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Close if !conn.buf.is_empty() => {
                    let data = conn.buf.split().freeze();
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::Chunked(chunk) => match decode_chunked(chunk, &mut conn.buf) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Decoded::Trailers(t)) => {
                        this.finish();
                        return Poll::Ready(Some(Ok(Frame::trailers(t))));
                    }
                    Ok(Decoded::End) => {
                        this.finish();
                        return Poll::Ready(None);
                    }
                    Ok(Decoded::More) => {}
                    Err(e) => return this.fail(e),
                },
                State::Length(_) | State::Close => {}
            }
            // Nothing buffered: read more.
            let want = match this.state {
                State::Length(left) => this.read_size.min(left.max(1024) as usize),
                _ => this.read_size,
            };
            let conn = this.conn.as_mut().expect("checked above");
            conn.buf.reserve(want);
            let read =
                match tokio_util::io::poll_read_buf(Pin::new(&mut conn.io), cx, &mut conn.buf) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => r,
                };
            match read {
                Ok(0) if this.state == State::Close => {
                    this.conn = None;
                    this.state = State::Done;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(invalid("upstream closed the connection mid-body")),
                Ok(n) if n >= this.read_size => this.read_size = (n * 2).min(MAX_READ),
                Ok(_) => {}
                Err(e) => return this.fail(e.into()),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.state == State::Done
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}
