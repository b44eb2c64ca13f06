//! The bytes of the gateway's own HTTP/1.1 server: a request head parsed
//! the way hyper's server parses it (or left to hyper), and a response head
//! and body framing encoded the way hyper's server encodes them
//! (`hyper::proto::h1::role::Server`, 1.x), so a client cannot tell which
//! of the two served it.

use bytes::{BufMut, Bytes, BytesMut};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::response;
use hyper::{Method, Request, StatusCode, Uri, Version};

/// Header fields a request head may have (hyper's default).
const MAX_HEADERS: usize = 100;
/// hyper answers a longer request target with 414.
const MAX_URI_LEN: usize = (u16::MAX - 1) as usize;

/// What the buffered bytes hold.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // returned once per request; a box would allocate
pub enum Head {
    /// Not a whole head yet.
    Partial,
    /// A request this server does not serve (a body, an upgrade, `Expect`,
    /// `CONNECT`, HTTP/2's preface) or cannot parse: hyper takes the
    /// connection from these same bytes, and answers as it always does
    /// (431, 400, 414 included).
    HandOver,
    /// A body-less request, and whether the client keeps the connection.
    Plain {
        req: Request<()>,
        keep_alive: bool,
        /// No hop-by-hop field is in the head (nothing to strip).
        clean: bool,
        /// The head's bytes (the header values point into them).
        raw: Bytes,
    },
}

/// Parses the request head at the start of `buf` (taking it out of `buf`
/// when it is served here). `headers` is an empty map to fill (a cleared
/// one keeps its allocation); `max` the head size hyper is configured with.
pub fn parse_request(buf: &mut BytesMut, headers: HeaderMap, max: usize) -> Head {
    // (start, end) of each name and value, recorded while `buf` is borrowed.
    let mut fields = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let (len, method, path, version, count, keep_alive, clean) = {
        let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut []);
        let parsed = httparse::ParserConfig::default()
            .parse_request_with_uninit_headers(&mut req, buf, &mut slots);
        let len = match parsed {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) if buf.len() < max => return Head::Partial,
            _ => return Head::HandOver,
        };
        let (Some(method), Some(path), Some(version)) = (req.method, req.path, req.version) else {
            return Head::HandOver;
        };
        if len > max || path.len() > MAX_URI_LEN {
            return Head::HandOver;
        }
        let Ok(method) = Method::from_bytes(method.as_bytes()) else {
            return Head::HandOver;
        };
        if method == Method::CONNECT {
            return Head::HandOver;
        }
        let http11 = version == 1;
        let mut keep_alive = http11;
        let mut saw_close = false;
        let mut clean = true;
        let base = buf.as_ptr() as usize;
        for (field, h) in fields.iter_mut().zip(req.headers.iter()) {
            let name = h.name.as_bytes();
            match special(name) {
                Special::No => {}
                Special::Connection => {
                    clean = false;
                    if saw_close || connection_has(h.value, b"close") {
                        saw_close = true;
                        keep_alive = false;
                    } else if !keep_alive {
                        keep_alive = connection_has(h.value, b"keep-alive");
                    }
                }
                Special::HopByHop => clean = false,
                Special::HandOver => return Head::HandOver,
            }
            let at = |s: &[u8]| (s.as_ptr() as usize - base) as u32;
            *field = (
                at(name),
                at(name) + name.len() as u32,
                at(h.value),
                at(h.value) + h.value.len() as u32,
            );
        }
        let path = (path.as_ptr() as usize - base, path.len());
        let version = if http11 {
            Version::HTTP_11
        } else {
            Version::HTTP_10
        };
        let count = req.headers.len();
        (len, method, path, version, count, keep_alive, clean)
    };
    let head = buf.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(path.0..path.0 + path.1)) else {
        restore(buf, &head);
        return Head::HandOver;
    };
    let mut headers = headers;
    headers.reserve(count);
    for &(n0, n1, v0, v1) in &fields[..count] {
        let name = HeaderName::from_bytes(&head[n0 as usize..n1 as usize]);
        let value = HeaderValue::from_maybe_shared(head.slice(v0 as usize..v1 as usize));
        let (Ok(name), Ok(value)) = (name, value) else {
            restore(buf, &head);
            return Head::HandOver;
        };
        headers.append(name, value);
    }
    let mut req = Request::new(());
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.version_mut() = version;
    *req.headers_mut() = headers;
    Head::Plain {
        req,
        keep_alive,
        clean,
        raw: head,
    }
}

/// Request fields this server looks at.
enum Special {
    No,
    Connection,
    /// Hop-by-hop (RFC 9110 §7.6.1), or `HTTP2-Settings`: stripped before
    /// the request is forwarded.
    HopByHop,
    /// A body, an upgrade or `Expect`: hyper's to serve.
    HandOver,
}

/// Which of the [`Special`] fields `name` is (by length first: one
/// comparison for most names).
fn special(name: &[u8]) -> Special {
    let is = |s: &[u8]| name.eq_ignore_ascii_case(s);
    match name.len() {
        2 if is(b"te") => Special::HopByHop,
        6 if is(b"expect") => Special::HandOver,
        7 if is(b"upgrade") => Special::HandOver,
        7 if is(b"trailer") => Special::HopByHop,
        10 if is(b"connection") => Special::Connection,
        10 if is(b"keep-alive") => Special::HopByHop,
        14 if is(b"content-length") => Special::HandOver,
        14 if is(b"http2-settings") => Special::HopByHop,
        16 if is(b"proxy-connection") => Special::HopByHop,
        17 if is(b"transfer-encoding") => Special::HandOver,
        _ => Special::No,
    }
}

/// Puts a head taken out of `buf` back in front of it (for hyper).
fn restore(buf: &mut BytesMut, head: &Bytes) {
    *buf = rejoin(head, buf);
}

/// `head` followed by `rest`.
pub fn rejoin(head: &[u8], rest: &[u8]) -> BytesMut {
    let mut whole = BytesMut::with_capacity(head.len() + rest.len());
    whole.extend_from_slice(head);
    whole.extend_from_slice(rest);
    whole
}

/// Whether a `Connection` value lists `token` (hyper's `connection_has`:
/// a value that is not visible ASCII lists nothing).
fn connection_has(value: &[u8], token: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (0x20..0x7f).contains(&b))
        && value
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Whether any `Connection` field of `headers` lists `token`.
fn connection_lists(headers: &HeaderMap, token: &[u8]) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| connection_has(v.as_bytes(), token))
}

/// What the request being answered says about the response.
#[derive(Debug, Clone, Copy)]
pub struct Answering {
    pub head: bool,
    pub version: Version,
    pub keep_alive: bool,
}

/// The response body's length as hyper's dispatcher reports it: `None`
/// when the body is already at its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLength {
    Known(u64),
    Unknown,
}

/// How the response body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoder {
    /// Exactly this many bytes (0: no body is written).
    Length(u64),
    Chunked,
    /// Until the connection closes.
    Close,
}

/// Encodes the response head into `out` as hyper's server does; returns the
/// body's encoder and whether the connection closes after this response.
pub fn encode_response(
    res: &mut response::Parts,
    req: Answering,
    body: Option<BodyLength>,
    out: &mut BytesMut,
) -> (Encoder, bool) {
    let mut keep_alive = req.keep_alive;
    // hyper's `Conn::enforce_version`.
    if req.version == Version::HTTP_10 {
        if !connection_lists(&res.headers, b"keep-alive") {
            if res.version == Version::HTTP_10 {
                keep_alive = false;
            } else if keep_alive {
                res.headers
                    .append(header::CONNECTION, HeaderValue::from_static("keep-alive"));
            }
        }
        res.version = Version::HTTP_10;
    } else if !keep_alive && !connection_lists(&res.headers, b"close") {
        res.headers
            .append(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let status = res.status;
    let mut is_last = !keep_alive;
    if res.version == Version::HTTP_10 {
        out.extend_from_slice(b"HTTP/1.0 ");
    } else {
        out.extend_from_slice(b"HTTP/1.1 ");
    }
    if status == StatusCode::OK {
        out.extend_from_slice(b"200 OK\r\n");
    } else {
        out.extend_from_slice(status.as_str().as_bytes());
        out.extend_from_slice(b" ");
        out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let http10 = res.version == Version::HTTP_10;
    let chunkable = can_chunk(req.head, status);
    let mut encoder = Encoder::Length(0);
    let mut wrote_len = false;
    let mut wrote_date = false;
    let mut te_written = false;
    let mut must_add_chunked = false;
    for (name, value) in &res.headers {
        match *name {
            header::CONTENT_LENGTH => {
                if wrote_len {
                    continue; // hyper writes the first and trusts it
                }
                match body {
                    Some(BodyLength::Known(n)) => encoder = Encoder::Length(n),
                    Some(BodyLength::Unknown) => {
                        let Some(n) = parse_length(value.as_bytes()) else {
                            continue;
                        };
                        encoder = Encoder::Length(n);
                    }
                    None if req.head => {}
                    None => continue,
                }
                wrote_len = true;
            }
            header::TRANSFER_ENCODING => {
                if http10 || !chunkable || (wrote_len && !te_written) {
                    continue;
                }
                must_add_chunked = !last_is_chunked(value.as_bytes());
                if te_written {
                    // hyper joins the values on one line.
                    out.truncate(out.len() - 2);
                    out.extend_from_slice(b", ");
                    out.extend_from_slice(value.as_bytes());
                    out.extend_from_slice(b"\r\n");
                    continue;
                }
                te_written = true;
                wrote_len = true;
                encoder = Encoder::Chunked;
            }
            header::CONNECTION if connection_has(value.as_bytes(), b"close") => is_last = true,
            header::DATE => wrote_date = true,
            header::TRAILER if http10 || !chunkable => continue,
            _ => {}
        }
        field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    if must_add_chunked {
        out.truncate(out.len() - 2);
        out.extend_from_slice(b", chunked\r\n");
    }
    if !wrote_len {
        encoder = match body {
            Some(BodyLength::Unknown) if http10 || !chunkable => Encoder::Close,
            Some(BodyLength::Unknown) => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Encoder::Chunked
            }
            None | Some(BodyLength::Known(0)) => {
                if has_content_length(status) && !req.head {
                    out.extend_from_slice(b"content-length: 0\r\n");
                }
                Encoder::Length(0)
            }
            Some(BodyLength::Known(n)) if has_content_length(status) => {
                field(
                    out,
                    b"content-length",
                    itoa::Buffer::new().format(n).as_bytes(),
                );
                Encoder::Length(n)
            }
            Some(BodyLength::Known(_)) => Encoder::Length(0),
        };
    }
    if !chunkable {
        encoder = Encoder::Length(0);
    }
    if !wrote_date {
        out.extend_from_slice(b"date: ");
        date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if encoder == Encoder::Close {
        is_last = true;
    }
    (encoder, is_last)
}

/// One header line, `name: value\r\n` (requests and responses alike).
pub(crate) fn field(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// hyper's `Server::can_chunked` (and `can_have_body`) without `CONNECT`,
/// which never comes here.
fn can_chunk(head: bool, status: StatusCode) -> bool {
    !head
        && !status.is_informational()
        && !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
}

fn has_content_length(status: StatusCode) -> bool {
    !status.is_informational()
        && !matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED)
}

/// hyper's `content_length_parse`: one or more equal, comma-separated values.
fn parse_length(value: &[u8]) -> Option<u64> {
    let mut length = None;
    for part in value.split(|&b| b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n: u64 = std::str::from_utf8(part).ok()?.parse().ok()?;
        if length.is_some_and(|l| l != n) {
            return None;
        }
        length = Some(n);
    }
    length
}

fn last_is_chunked(value: &[u8]) -> bool {
    value
        .rsplit(|&b| b == b',')
        .next()
        .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// A chunk's size line (`1A\r\n`).
pub fn chunk_size(out: &mut BytesMut, len: usize) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    let mut n = len;
    loop {
        i -= 1;
        digits[i] = b"0123456789ABCDEF"[n & 15];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
    out.extend_from_slice(b"\r\n");
}

/// The current `Date` value (`Sun, 06 Nov 1994 08:49:37 GMT`), formatted
/// once a second per thread as hyper's is.
fn date(out: &mut BytesMut) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static CACHED: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|c| {
        let mut c = c.borrow_mut();
        if c.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                c.1.copy_from_slice(text.as_bytes());
                c.0 = secs;
            } else {
                out.put_slice(text.as_bytes());
                return;
            }
        }
        out.put_slice(&c.1);
    });
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
