//! Forwarding one request: check, route, admit, pick, rewrite, send, and
//! hand the response back with the in-flight guard inside its body.
//!
//! Every failure says whose it is (`observe::Kind::side`, as pingora's
//! errors do): only the upstream's feed its circuit breaker; a client that breaks
//! or stalls its own upload, or an instance at its connection limit, never
//! counts against the instance.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode, Version};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use super::balance::{self, Pick};
use super::inflight::{Guard, GuardedBody};
use super::outcome::Seen;
use super::pool::{empty, PoolError, PooledBody};
use super::request::{self, ClientBody, Progress, Refused};
use super::routes::{normalize_host, AppEntry, Upstream};
use super::{responses, Gateway, ProxyBody, Upstreams};
use crate::observe::{Kind, Side};

/// Seconds clients are asked to wait before retrying a 503.
const RETRY_AFTER_S: u64 = 1;

/// Who is on the other end of a client connection.
pub(crate) struct Peer {
    pub ip: std::net::IpAddr,
    /// Its `X-Forwarded-For` value, made once per connection.
    pub forwarded_for: HeaderValue,
    /// It came over TLS (`X-Forwarded-Proto: https`).
    pub https: bool,
}

/// A request the gateway will forward: its app, the in-flight guard taken
/// for it (which holds the instance picked).
struct Admitted {
    app: Arc<AppEntry>,
    guard: Guard,
    /// The host the request is for (`Host`, or the absolute-form authority).
    host: HeaderValue,
    /// Path bytes the route strips.
    strip: usize,
}

/// What becomes of a request before it is forwarded.
enum Admission {
    Forward(Admitted),
    /// The gateway answers itself: the response, the app if one was
    /// routed to, and the outcome.
    Answer(Response<ProxyBody>, Option<Arc<AppEntry>>, Kind),
}

/// Checks, routes and admits a request, or says how the gateway answers it
/// itself (and under which outcome).
fn admit<B>(gw: &Gateway, req: &Request<B>, start: Instant) -> Admission {
    use Admission::Answer;
    if gw.refusing.load(std::sync::atomic::Ordering::Acquire) {
        let res = responses::shutting_down(RETRY_AFTER_S);
        return Answer(res, None, Kind::ShuttingDown);
    }
    let host = match request::host_of(req) {
        Ok(host) => host,
        Err(refused) => {
            let res = match refused {
                Refused::BadRequest(reason) => responses::bad_request(reason),
                Refused::Connect => responses::method_not_allowed(),
            };
            return Answer(res, None, Kind::Refused);
        }
    };
    let normalized = normalize_host(host.to_str().unwrap_or(""));
    let path = req.uri().path();
    let route = gw
        .table
        .with(|t| t.find(&normalized, path).map(|r| (r.app.clone(), r.strip)));
    let Some((app, strip)) = route else {
        let res = responses::no_route(&normalized, path);
        return Answer(res, None, Kind::NoRoute);
    };
    let name = app.name.as_str();
    if app
        .shared
        .draining
        .load(std::sync::atomic::Ordering::Acquire)
    {
        let close = req.version() <= Version::HTTP_11;
        let res = responses::draining(name, RETRY_AFTER_S, close);
        return Answer(res, Some(app), Kind::Draining);
    }
    // Pick, count ourselves in flight, then re-check that the instance was
    // not retired meanwhile (the rolling restart's half of the handshake
    // sets the flag, then reads the count).
    let mut attempts = 0;
    loop {
        let upstream = match balance::pick(&app, None, start) {
            Pick::Upstream(u) => u.clone(),
            Pick::NoneReady => {
                let res = responses::no_ready_instance(name, RETRY_AFTER_S);
                return Answer(res, Some(app), Kind::NoReadyInstance);
            }
            Pick::AllOpen { retry_after } => {
                let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
                let res = responses::circuit_open(name, secs);
                return Answer(res, Some(app), Kind::CircuitOpen);
            }
        };
        // Admitted: counted from here until the response's last byte.
        let guard = Guard::new(upstream);
        attempts += 1;
        if !guard.upstream().is_retired() || attempts > app.upstreams.len() {
            return Admission::Forward(Admitted {
                app,
                guard,
                host,
                strip,
            });
        }
    }
}

/// Serves one request hyper read: the MCP front's if it claims it,
/// otherwise forwarded by [`proxy`].
pub(crate) async fn handle(
    gw: Arc<Gateway>,
    pool: Upstreams,
    mut req: Request<Incoming>,
    peer: &Peer,
) -> Response<ProxyBody> {
    if let Some(mount) = gw.mounted.load().as_ref() {
        if mounted(mount, &req) {
            return mount.0.call(req, peer.ip).await;
        }
    }
    let client_upgrade = request::is_upgrade(req.headers()).then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let body = (!body.is_end_stream()).then_some(body);
    let req = Request::from_parts(parts, ());
    proxy(&gw, &pool, req, false, body, client_upgrade, peer).await
}

/// Whether the service mounted on the gateway (the MCP front) claims `req`.
pub(crate) fn mounted<B>(mount: &super::mount::Mount, req: &Request<B>) -> bool {
    let host = request::host_of(req).ok();
    let host = normalize_host(host.as_ref().and_then(|h| h.to_str().ok()).unwrap_or(""));
    mount.0.claims(&host, req.uri().path())
}

/// Forwards a request to its app: `req` is the head (`clean`: known to
/// have no hop-by-hop field), `body` the body when there is one,
/// `client_upgrade` the client's side of an upgrade it asks for.
pub(crate) async fn proxy(
    gw: &Gateway,
    pool: &Upstreams,
    req: Request<()>,
    clean: bool,
    body: Option<Incoming>,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    peer: &Peer,
) -> Response<ProxyBody> {
    let start = Instant::now();
    let mut seen = Seen::new(&gw.observers, &req, peer.ip, start);
    let Admitted {
        app,
        mut guard,
        host: raw_host,
        strip,
    } = match admit(gw, &req, start) {
        Admission::Forward(admitted) => admitted,
        Admission::Answer(res, app, kind) => {
            // A response the gateway makes itself, observed at once.
            if let Some(seen) = &seen {
                let app = app.as_ref().map(|a| a.name.as_str());
                seen.emit(&gw.observers, app, None, res.status().as_u16(), kind, 0);
            }
            return res;
        }
    };
    let name = Some(app.name.as_str());
    let version = req.version();
    let upgrade = client_upgrade.is_some();
    let has_body = body.is_some();
    let idempotent = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let (mut parts, ()) = req.into_parts();
    request::prepare(&mut parts, upgrade, strip, has_body, clean);
    let forwarded = request::Forwarded {
        host: &raw_host,
        client: &peer.forwarded_for,
        https: peer.https,
    };
    let counted = seen.as_mut().filter(|_| has_body).map(|s| {
        let counter = Arc::new(AtomicU64::new(0));
        s.bytes_in = Some(counter.clone());
        counter
    });
    // A body-less request goes as its head alone, and can be sent again
    // as it was (to another instance, if the first cannot be reached).
    let plain = !has_body && !upgrade;
    let attempt = if plain {
        let upstream = guard.upstream();
        let mut attempt = gw.send_plain(pool, upstream, &parts, &forwarded).await;
        upstream.record_result(&attempt, app.trip_on_5xx);
        if let (Err(Failure::Connect), true) = (&attempt, idempotent) {
            if let Pick::Upstream(other) = balance::pick(&app, Some(upstream.addr), Instant::now())
            {
                tracing::debug!(app = %app.name, from = %upstream.label, to = %other.label, "connect failed; retrying on another instance");
                guard.retarget(other.clone());
                let upstream = guard.upstream();
                // Counted, then re-checked, as in `admit`: a rolling restart
                // that retired it meanwhile gets the connect failure instead.
                if !upstream.is_retired() {
                    attempt = gw.send_plain(pool, upstream, &parts, &forwarded).await;
                    upstream.record_result(&attempt, app.trip_on_5xx);
                }
            }
        }
        attempt
    } else {
        // Boxed: hyper's client, the body's timers and progress would make
        // every request's future larger (bench/RESULTS.md).
        forwarded.apply(&mut parts.headers);
        let (body, progress) = client_body(body, counted);
        let req = Request::from_parts(parts, body);
        let upstream = guard.upstream();
        let attempt = Box::pin(gw.send(pool, upstream, req, progress)).await;
        upstream.record_result(&attempt, app.trip_on_5xx);
        attempt
    };
    let res = match attempt {
        Ok(res) => res,
        Err(failure) => {
            let upstream = guard.upstream();
            let (res, kind) = failure.response(app.name.as_str());
            let outcome = kind.name();
            if kind.side() == Some(Side::Upstream) {
                tracing::warn!(app = %app.name, instance = %upstream.label, outcome, "upstream request failed");
            } else {
                tracing::info!(app = %app.name, instance = %upstream.label, outcome, "request failed");
            }
            if let Some(seen) = &seen {
                let status = res.status().as_u16();
                seen.emit(&gw.observers, name, Some(&upstream.label), status, kind, 0);
            }
            return res;
        }
    };

    if let Some(seen) = seen {
        // The app moves into the callback, the guard hands it the instance:
        // no copy.
        let status = res.status().as_u16();
        guard.on_done(move |upstream, completed, bytes_out| {
            let kind = if completed {
                Kind::Ok
            } else {
                Kind::ClientGone
            };
            seen.emit(
                &upstream.observers,
                Some(app.name.as_str()),
                Some(&upstream.label),
                status,
                kind,
                bytes_out,
            );
        });
    }

    gw.respond(res, guard, version, client_upgrade)
}

impl Gateway {
    /// The upstream's response as the client gets it: the guard inside the
    /// body (or the tunnel of an upgrade), hop-by-hop headers out, HTTP/1.1
    /// or HTTP/2 whatever the upstream spoke, SSE ended at `stream_grace`.
    fn respond(
        &self,
        mut res: Response<PooledBody>,
        guard: Guard,
        version: Version,
        client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    ) -> Response<ProxyBody> {
        if let (StatusCode::SWITCHING_PROTOCOLS, Some(client_upgrade)) =
            (res.status(), client_upgrade)
        {
            let upstream_upgrade = hyper::upgrade::on(&mut res);
            let end = self.streams_end.clone();
            self.tunnels.spawn(async move {
                let mut guard = guard;
                if let (Ok(c), Ok(u)) = tokio::join!(client_upgrade, upstream_upgrade) {
                    let to_client = tunnel(TokioIo::new(c), TokioIo::new(u), end).await;
                    guard.sent(to_client);
                    guard.complete();
                }
            });
            return res.map(|_| empty());
        }
        // The gateway's own client left hop-by-hop fields out as it parsed.
        if !matches!(res.body(), PooledBody::Raw(_)) {
            request::strip_hop_by_hop(res.headers_mut(), false);
        }
        *res.version_mut() = if version == Version::HTTP_2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        let streaming = res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        res.map(|body| {
            let body = GuardedBody::new(body, guard);
            if streaming {
                body.end_when(&self.streams_end).boxed()
            } else {
                body.boxed()
            }
        })
    }
}

/// Copies an upgraded connection both ways until either side closes, or
/// until `end` (a drain's `stream_grace` ran out): then both sides get a
/// WebSocket close frame with code 1001 "going away" — unmasked to the
/// client, masked to the upstream (RFC 6455 §5.3) — and the tunnel closes.
/// The cut happens between reads, so a frame larger than one read could be
/// split; at shutdown the connection ends either way. Returns the bytes
/// sent to the client (when the copy ended by itself).
async fn tunnel<C, U>(
    mut client: C,
    mut upstream: U,
    end: tokio_util::sync::CancellationToken,
) -> u64
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let copied = {
        let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
        tokio::select! {
            copied = copy => Some(copied.map_or(0, |(_, to_client)| to_client)),
            _ = end.cancelled() => None,
        }
    };
    if let Some(to_client) = copied {
        return to_client;
    }
    {
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
    0
}

#[derive(Debug)]
pub(crate) enum Failure {
    /// Could not connect: nothing reached the instance (safe to retry).
    Connect,
    /// No response head within `upstream_response_timeout` of the body's end.
    Timeout,
    /// Refused or reset after connecting, before a response.
    Upstream,
    /// Every connection the instance may have was busy for
    /// `upstream_connect_timeout`.
    Saturated,
    /// The client's body broke (closed early, bad framing).
    ClientAborted,
    /// The client sent no body bytes for `client_idle_timeout`.
    ClientStalled,
}

impl Failure {
    /// How the request ended, and so whose fault it was.
    fn kind(&self) -> Kind {
        match self {
            Self::Connect => Kind::UpstreamConnectError,
            Self::Timeout => Kind::UpstreamTimeout,
            Self::Upstream => Kind::UpstreamError,
            Self::Saturated => Kind::UpstreamSaturated,
            Self::ClientAborted => Kind::ClientAborted,
            Self::ClientStalled => Kind::ClientStalled,
        }
    }

    /// The response the client gets, and how the request ended.
    fn response(&self, app: &str) -> (Response<ProxyBody>, Kind) {
        let res = match self {
            Self::Timeout => responses::gateway_timeout(app),
            Self::Connect | Self::Upstream => responses::bad_gateway(app),
            Self::Saturated => responses::no_connection(app, RETRY_AFTER_S),
            Self::ClientAborted => responses::bad_request("request body incomplete"),
            Self::ClientStalled => responses::request_timeout(),
        };
        (res, self.kind())
    }
}

impl Upstream {
    /// Tells the breaker about an attempt, if it was the upstream's doing:
    /// a response head is a success (unless a 5xx and those count).
    fn record_result<B>(&self, attempt: &Result<Response<B>, Failure>, trip_on_5xx: bool) {
        let success = match attempt {
            Ok(res) => !(trip_on_5xx && res.status().is_server_error()),
            Err(f) if f.kind().side() == Some(Side::Upstream) => false,
            Err(_) => return,
        };
        self.record(success, Instant::now());
    }
}

impl Gateway {
    /// A body-less request to `upstream`, bounded by the response timeout.
    ///
    /// No future is bound to a local before it is awaited here or in
    /// `send`: a moved future keeps its own slot in the caller's state as
    /// well, and every request's future (which hyper and tokio move around)
    /// grew by its size (bench/RESULTS.md).
    async fn send_plain(
        &self,
        pool: &Upstreams,
        upstream: &Upstream,
        parts: &hyper::http::request::Parts,
        forwarded: &request::Forwarded<'_>,
    ) -> Result<Response<PooledBody>, Failure> {
        let deadline = Instant::now() + self.response_timeout;
        pool.send_plain(upstream.addr, &upstream.conns, parts, forwarded, deadline)
            .await
            .map_err(|e| self.failure(e, upstream, None))
    }

    /// A request with a body (or an upgrade) to `upstream`: the response
    /// timeout starts once the body is sent (`send_body`).
    async fn send(
        &self,
        pool: &Upstreams,
        upstream: &Upstream,
        req: Request<ProxyBody>,
        progress: Option<Arc<Progress>>,
    ) -> Result<Response<PooledBody>, Failure> {
        let (addr, conns) = (upstream.addr, &upstream.conns);
        let result = match &progress {
            None => match tokio::time::timeout(self.response_timeout, pool.send(addr, conns, req))
                .await
            {
                Ok(r) => r,
                Err(_) => return Err(Failure::Timeout),
            },
            Some(p) => self.send_body(pool.send(addr, conns, req), p).await?,
        };
        result.map_err(|e| self.failure(e, upstream, progress.as_deref()))
    }

    /// Whose fault a failed exchange was.
    fn failure(&self, e: PoolError, upstream: &Upstream, progress: Option<&Progress>) -> Failure {
        match e {
            PoolError::Connect(e) => {
                tracing::debug!(upstream = %upstream.label, error = %e, "cannot connect to upstream");
                Failure::Connect
            }
            PoolError::Saturated => Failure::Saturated,
            PoolError::Timeout => Failure::Timeout,
            PoolError::Request(_) if progress.is_some_and(|p| p.client_failed()) => {
                Failure::ClientAborted
            }
            PoolError::Request(e) => {
                tracing::debug!(upstream = %upstream.label, error = %e, "upstream request failed");
                Failure::Upstream
            }
        }
    }

    /// A request with a body: the response timeout starts once the body is
    /// sent; until then the client must keep sending.
    async fn send_body<F: std::future::Future<Output = Result<Response<PooledBody>, PoolError>>>(
        &self,
        sent: F,
        p: &Progress,
    ) -> Result<Result<Response<PooledBody>, PoolError>, Failure> {
        let (response_timeout, idle) = (self.response_timeout, self.timeouts.idle);
        tokio::select! {
            r = sent => Ok(r),
            _ = async { p.sent().await; tokio::time::sleep(response_timeout).await } => {
                Err(Failure::Timeout)
            }
            _ = p.stalled(idle) => Err(Failure::ClientStalled),
        }
    }
}

/// The request body for the upstream (counting bytes when the access log
/// wants them), and its progress when there is a body at all.
fn client_body(
    body: Option<Incoming>,
    counter: Option<Arc<AtomicU64>>,
) -> (ProxyBody, Option<Arc<Progress>>) {
    let Some(body) = body else {
        return (empty(), None);
    };
    let (body, progress) = ClientBody::new(body);
    let body = match counter {
        None => body.map_err(Into::into).boxed(),
        Some(counter) => body
            .map_frame(move |frame| {
                if let Some(data) = frame.data_ref() {
                    counter.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
                frame
            })
            .map_err(Into::into)
            .boxed(),
    };
    (body, Some(progress))
}
