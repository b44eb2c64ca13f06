//! Forwarding one request: route, admit, pick, rewrite headers, send, and
//! hand the response back with the in-flight guard inside its body.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::balance::{self, Pick};
use super::inflight::{Guard, GuardedBody};
use super::routes::{normalize_host, AppEntry, Upstream};
use super::{responses, Gateway, ProxyBody, Upstreams};

/// Seconds clients are asked to wait before retrying a 503.
const RETRY_AFTER_S: u64 = 1;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

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

pub(crate) async fn handle(
    gw: Arc<Gateway>,
    pool: Upstreams,
    mut req: Request<Incoming>,
    client: &HeaderValue,
) -> Response<ProxyBody> {
    let start = Instant::now();
    // The Host header's bytes are shared with the request buffer: cloning is cheap.
    let raw_host = match req.headers().get(header::HOST) {
        Some(h) => h.clone(),
        None => req
            .uri()
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            .unwrap_or_else(|| HeaderValue::from_static("")),
    };
    let host = normalize_host(raw_host.to_str().unwrap_or(""));
    let table = gw.table.load();
    let Some(route) = table.find(&host, req.uri().path()) else {
        let res = responses::no_route(&host, req.uri().path());
        gw.log_local(&req, None, res.status(), start, "no_route");
        return res;
    };
    let app = route.app.clone();
    if app
        .shared
        .draining
        .load(std::sync::atomic::Ordering::Acquire)
    {
        let res = responses::draining(
            app.name.as_str(),
            RETRY_AFTER_S,
            req.version() <= Version::HTTP_11,
        );
        gw.log_local(&req, Some(&app), res.status(), start, "draining");
        return res;
    }
    // Pick, count ourselves in flight, then re-check that the instance was
    // not retired meanwhile (the rolling restart's half of the handshake
    // sets the flag, then reads the count).
    let mut attempts = 0;
    let (first, mut guard) = loop {
        let first = match balance::pick(&app, None, start) {
            Pick::Upstream(u) => u.clone(),
            Pick::NoneReady => {
                let res = responses::no_ready_instance(app.name.as_str(), RETRY_AFTER_S);
                gw.log_local(&req, Some(&app), res.status(), start, "no_ready_instance");
                return res;
            }
            Pick::AllOpen { retry_after } => {
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                let res = responses::circuit_open(app.name.as_str(), secs);
                gw.log_local(&req, Some(&app), res.status(), start, "circuit_open");
                return res;
            }
        };
        // Admitted: counted from here until the response's last byte.
        let guard = Guard::new(&gw.in_flight, &app.shared.in_flight, &first.in_flight);
        attempts += 1;
        if !first.is_retired() || attempts > app.upstreams.len() {
            break (first, guard);
        }
    };
    // What the access log names the request by (only computed when it is on).
    let seen = if gw.access_log {
        (req.method().to_string(), req.uri().path().to_string())
    } else {
        Default::default()
    };
    let upgrade = is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
    let retryable = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        && req.body().is_end_stream()
        && !upgrade;
    let (mut parts, body) = req.into_parts();
    let strip = route.strip;
    drop(table);
    prepare_request(&mut parts, &raw_host, client, upgrade, strip);
    let bytes_in = gw.access_log.then(|| Arc::new(AtomicU64::new(0)));
    let body = count_bytes(body, bytes_in.clone());
    let retry_parts = retryable.then(|| clone_parts(&parts));

    let mut upstream = first;
    let mut attempt = gw.send(&pool, &upstream, parts, body).await;
    upstream.record(succeeded(&attempt, app.trip_on_5xx), Instant::now());
    if let (Err(SendError::Connect), Some(parts)) = (&attempt, retry_parts) {
        if let Pick::Upstream(other) = balance::pick(&app, Some(upstream.addr), Instant::now()) {
            let other = other.clone();
            tracing::debug!(app = %app.name, from = %upstream.label, to = %other.label, "connect failed; retrying on another instance");
            guard.retarget(&other.in_flight);
            upstream = other;
            attempt = gw.send(&pool, &upstream, parts, empty_body()).await;
            upstream.record(succeeded(&attempt, app.trip_on_5xx), Instant::now());
        }
    }
    let mut res = match attempt {
        Ok(res) => res,
        Err(e) => {
            let (res, outcome) = match e {
                SendError::Timeout => (
                    responses::gateway_timeout(app.name.as_str()),
                    "upstream_timeout",
                ),
                SendError::Connect => (
                    responses::bad_gateway(app.name.as_str()),
                    "upstream_connect_error",
                ),
                SendError::Other => (responses::bad_gateway(app.name.as_str()), "upstream_error"),
            };
            tracing::warn!(app = %app.name, instance = %upstream.label, outcome, "upstream request failed");
            if gw.access_log {
                gw.record(&app, &upstream, &seen, res.status(), start, None, None)
                    .log(outcome);
            }
            return res;
        }
    };

    let bytes_out = gw.access_log.then(|| Arc::new(AtomicU64::new(0)));
    if gw.access_log {
        let record = gw.record(
            &app,
            &upstream,
            &seen,
            res.status(),
            start,
            bytes_in,
            bytes_out.clone(),
        );
        guard.on_done(move |completed| record.log(if completed { "ok" } else { "client_gone" }));
    }

    if res.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_upgrade) = client_upgrade {
            let upstream_upgrade = hyper::upgrade::on(&mut res);
            let end = gw.streams_end.clone();
            gw.tunnels.spawn(async move {
                let mut guard = guard;
                if let (Ok(c), Ok(u)) = tokio::join!(client_upgrade, upstream_upgrade) {
                    tunnel(TokioIo::new(c), TokioIo::new(u), end).await;
                    guard.complete();
                }
            });
            return res.map(|_| empty_body());
        }
    }
    strip_hop_by_hop(res.headers_mut(), false);
    let streaming = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    res.map(|body| {
        let body = GuardedBody::new(body, guard, bytes_out);
        if streaming {
            body.end_when(&gw.streams_end).boxed()
        } else {
            body.boxed()
        }
    })
}

/// A breaker success: a response head arrived (and is not a 5xx, when those count).
fn succeeded<B>(attempt: &Result<Response<B>, SendError>, trip_on_5xx: bool) -> bool {
    match attempt {
        Ok(res) => !(trip_on_5xx && res.status().is_server_error()),
        Err(_) => false,
    }
}

/// Copies an upgraded connection both ways until either side closes, or
/// until `end` (a drain's `stream_grace` ran out): then both sides get a
/// WebSocket close frame with code 1001 "going away" — unmasked to the
/// client, masked to the upstream (RFC 6455 §5.3) — and the tunnel closes.
/// The cut happens between reads, so a frame larger than one read could be
/// split; at shutdown the connection ends either way.
async fn tunnel<C, U>(mut client: C, mut upstream: U, end: tokio_util::sync::CancellationToken)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let cut = {
        let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
        tokio::select! {
            _ = copy => false,
            _ = end.cancelled() => true,
        }
    };
    if cut {
        const GOING_AWAY: [u8; 2] = 1001u16.to_be_bytes();
        let _ = client
            .write_all(&[0x88, 0x02, GOING_AWAY[0], GOING_AWAY[1]])
            .await;
        let m = fastrand::u32(..).to_be_bytes();
        let masked = [GOING_AWAY[0] ^ m[0], GOING_AWAY[1] ^ m[1]];
        let _ = upstream
            .write_all(&[0x88, 0x82, m[0], m[1], m[2], m[3], masked[0], masked[1]])
            .await;
        let _ = client.shutdown().await;
        let _ = upstream.shutdown().await;
    }
}

#[derive(Debug)]
pub(crate) enum SendError {
    /// Could not connect: nothing reached the instance (safe to retry).
    Connect,
    /// No response head within `upstream_response_timeout`.
    Timeout,
    /// Refused or reset after connecting, before a response.
    Other,
}

impl Gateway {
    async fn send(
        &self,
        pool: &Upstreams,
        upstream: &Upstream,
        mut parts: hyper::http::request::Parts,
        body: ProxyBody,
    ) -> Result<Response<super::pool::PooledBody>, SendError> {
        // Origin-form (`/path?query`): the upstream is an origin server, and
        // `Host` already names the site.
        if parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
            let pq = parts.uri.path_and_query().cloned();
            parts.uri = pq.map_or_else(|| Uri::from_static("/"), Uri::from);
        }
        let req = Request::from_parts(parts, body);
        match tokio::time::timeout(self.response_timeout, pool.send(upstream.addr, req)).await {
            Err(_) => Err(SendError::Timeout),
            Ok(Err(super::pool::PoolError::Connect(e))) => {
                tracing::debug!(upstream = %upstream.label, error = %e, "cannot connect to upstream");
                Err(SendError::Connect)
            }
            Ok(Err(super::pool::PoolError::Request(e))) => {
                tracing::debug!(upstream = %upstream.label, error = %e, "upstream request failed");
                Err(SendError::Other)
            }
            Ok(Ok(res)) => Ok(res),
        }
    }
}

/// Rewrites the request for the upstream: path (strip_prefix), hop-by-hop
/// headers out, `X-Forwarded-*` in, `Host` kept, HTTP/1.1 upstream.
fn prepare_request(
    parts: &mut hyper::http::request::Parts,
    raw_host: &HeaderValue,
    client: &HeaderValue,
    upgrade: bool,
    strip: usize,
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
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers, upgrade);
    let xff = match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => {
            HeaderValue::from_str(&format!("{prev}, {}", client.to_str().unwrap_or(""))).ok()
        }
        None => Some(client.clone()),
    };
    if let Some(v) = xff {
        headers.insert(X_FORWARDED_FOR, v);
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
    headers.insert(X_FORWARDED_HOST, raw_host.clone());
    if !headers.contains_key(header::HOST) {
        headers.insert(header::HOST, raw_host.clone());
    }
    parts.version = Version::HTTP_11;
}

/// Removes hop-by-hop headers (and those `Connection` names); an upgrade
/// keeps `Connection: upgrade` and `Upgrade` so the upstream sees it.
fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        if upgrade
            && (name == header::UPGRADE || name == header::CONNECTION || name.as_str() == "upgrade")
        {
            continue;
        }
        headers.remove(name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

fn clone_parts(parts: &hyper::http::request::Parts) -> hyper::http::request::Parts {
    let mut req = Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.clone())
        .version(parts.version)
        .body(())
        .expect("parts of a valid request");
    *req.headers_mut() = parts.headers.clone();
    req.into_parts().0
}

fn empty_body() -> ProxyBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// The request body for the upstream, counting bytes when the access log wants them.
fn count_bytes(body: Incoming, counter: Option<Arc<AtomicU64>>) -> ProxyBody {
    match counter {
        None => body.boxed(),
        Some(counter) => body
            .map_frame(move |frame| {
                if let Some(data) = frame.data_ref() {
                    counter.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                frame
            })
            .boxed(),
    }
}

/// One access log line, written when the response is done.
pub(crate) struct AccessRecord {
    pub app: String,
    pub instance: String,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub start: Instant,
    pub bytes_in: Option<Arc<AtomicU64>>,
    pub bytes_out: Option<Arc<AtomicU64>>,
}

impl AccessRecord {
    pub fn log(&self, outcome: &str) {
        let load = |b: &Option<Arc<AtomicU64>>| {
            b.as_ref()
                .map_or(0, |b| b.load(std::sync::atomic::Ordering::Relaxed))
        };
        tracing::info!(
            event = "access",
            app = %self.app,
            instance = %self.instance,
            method = %self.method,
            path = %self.path,
            status = self.status,
            bytes_in = load(&self.bytes_in),
            bytes_out = load(&self.bytes_out),
            duration_ms = self.start.elapsed().as_secs_f64() * 1000.0,
            outcome,
        );
    }
}

impl Gateway {
    /// Access log for a response the gateway made itself.
    fn log_local(
        &self,
        req: &Request<Incoming>,
        app: Option<&Arc<AppEntry>>,
        status: StatusCode,
        start: Instant,
        outcome: &str,
    ) {
        if self.access_log {
            AccessRecord {
                app: app.map(|a| a.name.to_string()).unwrap_or_default(),
                instance: String::new(),
                method: req.method().to_string(),
                path: req.uri().path().to_string(),
                status: status.as_u16(),
                start,
                bytes_in: None,
                bytes_out: None,
            }
            .log(outcome);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        app: &AppEntry,
        upstream: &Upstream,
        (method, path): &(String, String),
        status: StatusCode,
        start: Instant,
        bytes_in: Option<Arc<AtomicU64>>,
        bytes_out: Option<Arc<AtomicU64>>,
    ) -> AccessRecord {
        AccessRecord {
            app: app.name.to_string(),
            instance: upstream.label.clone(),
            method: method.clone(),
            path: path.clone(),
            status: status.as_u16(),
            start,
            bytes_in,
            bytes_out,
        }
    }
}
