//! The client's side of a forwarded request: the conformance checks on its
//! head (RFC 9112 §3.2: Host; CONNECT; h2c), the rewrite for the upstream
//! (hop-by-hop headers, `X-Forwarded-*`, the path), and the body wrapper
//! that tells a client's failure from the upstream's.
//!
//! Why the body wrapper matters: hyper reports a request body that breaks
//! (a client that closes mid-upload, or sends bad chunk framing) as a
//! failed upstream request. Counted against the upstream, any client could
//! open every circuit breaker; the [`Progress`] it records lets the caller
//! say whose fault it was — and start the upstream's response timeout only
//! once the body has been sent.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Uri, Version};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::h1_server::wire::field;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Why a request is refused before routing.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// 400 with this reason.
    BadRequest(&'static str),
    /// 405: harbormaster is not a forward proxy.
    Connect,
}

/// The host a request is for: an absolute-form target's (or HTTP/2's
/// `:authority`) authority wins over `Host` (RFC 9112 §3.2.2); HTTP/1.1
/// needs exactly one `Host` (§3.2).
pub fn host_of<B>(req: &Request<B>) -> Result<HeaderValue, Refused> {
    if req.method() == Method::CONNECT {
        return Err(Refused::Connect);
    }
    let mut hosts = req.headers().get_all(header::HOST).iter();
    let (first, second) = (hosts.next(), hosts.next());
    if second.is_some() {
        return Err(Refused::BadRequest("more than one Host header"));
    }
    if let Some(authority) = req.uri().authority() {
        return HeaderValue::from_str(authority.as_str())
            .map_err(|_| Refused::BadRequest("invalid authority"));
    }
    match first {
        Some(h) => Ok(h.clone()),
        None if req.version() == Version::HTTP_11 => Err(Refused::BadRequest(
            "HTTP/1.1 request without a Host header",
        )),
        None => Ok(HeaderValue::from_static("")),
    }
}

/// Whether the request asks to switch protocols (WebSocket and the like);
/// `h2c` is not forwarded: the request is served as plain HTTP/1.1.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    let Some(upgrade) = headers.get(header::UPGRADE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    upgrade
        .split(',')
        .any(|p| !p.trim().eq_ignore_ascii_case("h2c"))
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Rewrites the request for the upstream: path (strip_prefix), hop-by-hop
/// headers out (with `HTTP2-Settings` of an h2c attempt), HTTP/1.1
/// upstream, and a body of unknown length sent chunked whatever the
/// method. `clean`: the caller knows there is no hop-by-hop field
/// (`h1_server` saw every name). `Host` and `X-Forwarded-*` are
/// [`Forwarded`]'s.
pub fn prepare(
    parts: &mut hyper::http::request::Parts,
    upgrade: bool,
    strip: usize,
    has_body: bool,
    clean: bool,
) {
    if strip > 0 {
        let pq = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let rest = &pq[strip.min(pq.len())..];
        let new = if rest.starts_with('/') {
            rest.to_string()
        } else {
            format!("/{rest}")
        };
        if let Ok(pq) = new.parse::<hyper::http::uri::PathAndQuery>() {
            parts.uri = Uri::from(pq);
        }
    }
    // Origin-form (`/path?query`): the upstream is an origin server, and
    // `Host` names the site.
    if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let pq = parts.uri.path_and_query().cloned();
        parts.uri = pq.map_or_else(|| Uri::from_static("/"), Uri::from);
    }
    let headers = &mut parts.headers;
    if !clean {
        strip_hop_by_hop(headers, upgrade);
        if !upgrade {
            headers.remove(HTTP2_SETTINGS);
        }
    }
    // hyper sends no body for a GET of unknown length unless told to.
    if has_body && !headers.contains_key(header::CONTENT_LENGTH) {
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
    parts.version = Version::HTTP_11;
}

/// What a forwarded request says about where it came from: `Host` = the
/// host it is for, `X-Forwarded-Host` the same, `X-Forwarded-Proto`, and
/// the client's address appended to the first `X-Forwarded-For`. The
/// client's own values of these four are replaced.
///
/// Either put into the header map ([`Forwarded::apply`], for hyper's
/// client) or written straight after the other headers
/// ([`Forwarded::encode`], the gateway's own client): four map insertions
/// cost ~1,100 instructions a request (bench/RESULTS.md).
pub struct Forwarded<'a> {
    pub host: &'a HeaderValue,
    pub client: &'a HeaderValue,
    pub https: bool,
}

impl Forwarded<'_> {
    fn proto(&self) -> &'static str {
        if self.https {
            "https"
        } else {
            "http"
        }
    }

    fn is_ours(name: &HeaderName) -> bool {
        name == header::HOST
            || name == X_FORWARDED_FOR
            || name == X_FORWARDED_PROTO
            || name == X_FORWARDED_HOST
    }

    /// Puts the four fields into `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        let xff = self.xff(headers.get(X_FORWARDED_FOR));
        headers.insert(X_FORWARDED_FOR, xff);
        headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(self.proto()));
        headers.insert(X_FORWARDED_HOST, self.host.clone());
        headers.insert(header::HOST, self.host.clone());
    }

    /// `prev, client`; the client alone if there is no `prev` in text.
    fn xff(&self, prev: Option<&HeaderValue>) -> HeaderValue {
        match prev.and_then(|v| v.to_str().ok()) {
            Some(prev) => {
                let client = self.client.to_str().unwrap_or("");
                HeaderValue::from_str(&format!("{prev}, {client}"))
                    .unwrap_or_else(|_| self.client.clone())
            }
            None => self.client.clone(),
        }
    }

    /// Writes `headers` as `name: value` lines, the four fields as this
    /// says instead of the client's: the same head [`Forwarded::apply`]
    /// and an encoder would give, without touching the map.
    pub fn encode(&self, headers: &HeaderMap, out: &mut BytesMut) {
        let mut prev = None;
        for (name, value) in headers {
            if Self::is_ours(name) {
                if name == X_FORWARDED_FOR && prev.is_none() {
                    prev = Some(value);
                }
                continue;
            }
            field(out, name.as_str().as_bytes(), value.as_bytes());
        }
        let xff = self.xff(prev);
        field(out, b"x-forwarded-for", xff.as_bytes());
        field(out, b"x-forwarded-proto", self.proto().as_bytes());
        field(out, b"x-forwarded-host", self.host.as_bytes());
        field(out, b"host", self.host.as_bytes());
    }
}

/// Removes hop-by-hop headers (and those `Connection` names); an upgrade
/// keeps `Connection: upgrade` and `Upgrade` so the upstream sees it.
///
/// Runs twice per request (request and response), so it looks first: one
/// pass over the names present, and a removal only for those that are there
/// (a lookup per absent name cost ~3,000 instructions a request).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let mut present = 0u8; // bit i: HOP_BY_HOP[i]
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    let kept =
        |name: &HeaderName| upgrade && (name == header::UPGRADE || name == header::CONNECTION);
    if present & 1 != 0 {
        // Other headers `Connection` names are hop-by-hop too (`close`
        // names none; hop-by-hop ones are handled below).
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| {
                !t.eq_ignore_ascii_case("close")
                    && !HOP_BY_HOP
                        .iter()
                        .any(|h| t.eq_ignore_ascii_case(h.as_str()))
            })
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for name in &named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 && !kept(name) {
            headers.remove(name);
        }
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// How far a request body has come, shared between the body (written by
/// hyper's upstream connection) and the request's task.
#[derive(Debug)]
pub struct Progress {
    epoch: Instant,
    /// Milliseconds after `epoch` of the last frame read from the client.
    last_frame: AtomicU64,
    ended: AtomicBool,
    /// The client broke its own body (closed early, bad framing).
    failed: AtomicBool,
    done: Notify,
}

impl Progress {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether the client broke its own request body.
    pub fn client_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    /// Resolves once the whole body has been read from the client (and so
    /// handed to the upstream connection).
    pub async fn sent(&self) {
        loop {
            let done = self.done.notified();
            if self.ended.load(Ordering::Acquire) {
                return;
            }
            done.await;
        }
    }

    /// Resolves if the client sends no body bytes for `idle` before the
    /// body ends.
    pub async fn stalled(&self, idle: Duration) {
        loop {
            let last = self.last_frame.load(Ordering::Relaxed);
            tokio::time::sleep_until(self.epoch + Duration::from_millis(last) + idle).await;
            if self.ended.load(Ordering::Acquire) {
                std::future::pending::<()>().await;
            }
            if self.last_frame.load(Ordering::Relaxed) == last {
                return;
            }
        }
    }

    fn finish(&self, failed: bool) {
        self.failed.store(failed, Ordering::Release);
        self.ended.store(true, Ordering::Release);
        self.done.notify_waiters();
    }
}

pin_project_lite::pin_project! {
    /// The client's request body on its way upstream, recording [`Progress`].
    pub struct ClientBody {
        #[pin]
        inner: Incoming,
        progress: Arc<Progress>,
    }
}

impl ClientBody {
    pub fn new(inner: Incoming) -> (Self, Arc<Progress>) {
        let progress = Arc::new(Progress {
            epoch: Instant::now(),
            last_frame: AtomicU64::new(0),
            ended: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            done: Notify::new(),
        });
        let body = Self {
            inner,
            progress: progress.clone(),
        };
        (body, progress)
    }
}

impl Body for ClientBody {
    type Data = bytes::Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        let p = &this.progress;
        match &polled {
            Poll::Ready(Some(Ok(_))) => {
                p.last_frame.store(p.now_ms(), Ordering::Relaxed);
                if this.inner.is_end_stream() {
                    p.finish(false);
                }
            }
            Poll::Ready(None) => p.finish(false),
            Poll::Ready(Some(Err(_))) => p.finish(true),
            Poll::Pending => {}
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

    fn req(version: Version, uri: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().version(version).uri(uri);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn http11_needs_exactly_one_host() {
        assert_eq!(
            host_of(&req(Version::HTTP_11, "/", &[])),
            Err(Refused::BadRequest(
                "HTTP/1.1 request without a Host header"
            ))
        );
        assert_eq!(
            host_of(&req(Version::HTTP_11, "/", &["a", "b"])),
            Err(Refused::BadRequest("more than one Host header"))
        );
        assert_eq!(host_of(&req(Version::HTTP_11, "/", &["a"])).unwrap(), "a");
        assert_eq!(host_of(&req(Version::HTTP_10, "/", &[])).unwrap(), "");
    }

    #[test]
    fn an_absolute_form_authority_wins_over_host() {
        let r = req(Version::HTTP_11, "http://b.example/x", &["a.example"]);
        assert_eq!(host_of(&r).unwrap(), "b.example");
    }

    #[test]
    fn connect_is_refused() {
        let r = Request::builder()
            .method(Method::CONNECT)
            .uri("example.com:443")
            .body(())
            .unwrap();
        assert_eq!(host_of(&r), Err(Refused::Connect));
    }

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            "keep-alive, X-Secret, close".parse().unwrap(),
        );
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-type"]);

        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");
        assert!(!h.contains_key(header::TE));
    }

    #[test]
    fn h2c_is_not_an_upgrade_but_websocket_is() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            "Upgrade, HTTP2-Settings".parse().unwrap(),
        );
        h.insert(header::UPGRADE, "h2c".parse().unwrap());
        assert!(!is_upgrade(&h));
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert!(is_upgrade(&h));
    }
}
