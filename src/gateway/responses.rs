//! The responses the gateway makes itself (INTERFACES.md): small JSON bodies.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};

use super::ProxyBody;

/// The body of every response the gateway makes itself; fields in this order.
#[derive(serde::Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    app: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_after_s: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reason: Option<&'a str>,
}

impl<'a> ErrorBody<'a> {
    fn new(error: &'a str) -> Self {
        Self {
            error,
            app: None,
            host: None,
            path: None,
            retry_after_s: None,
            reason: None,
        }
    }

    fn app(mut self, app: &'a str) -> Self {
        self.app = Some(app);
        self
    }
}

fn json(status: StatusCode, body: ErrorBody<'_>) -> Response<ProxyBody> {
    let text = serde_json::to_string(&body).unwrap_or_default();
    let mut res = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed(),
    );
    *res.status_mut() = status;
    res.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    res
}

fn with_retry_after(mut res: Response<ProxyBody>, secs: u64) -> Response<ProxyBody> {
    res.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(secs));
    res
}

pub fn no_route(host: &str, path: &str) -> Response<ProxyBody> {
    json(
        StatusCode::NOT_FOUND,
        ErrorBody {
            host: Some(host),
            path: Some(path),
            ..ErrorBody::new("no route")
        },
    )
}

fn with_close(mut res: Response<ProxyBody>) -> Response<ProxyBody> {
    res.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    res
}

pub fn draining(app: &str, retry_after: u64, close: bool) -> Response<ProxyBody> {
    let res = with_retry_after(
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorBody {
                retry_after_s: Some(retry_after),
                ..ErrorBody::new("app draining").app(app)
            },
        ),
        retry_after,
    );
    if close {
        with_close(res)
    } else {
        res
    }
}

pub fn no_ready_instance(app: &str, retry_after: u64) -> Response<ProxyBody> {
    with_retry_after(
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorBody {
                retry_after_s: Some(retry_after),
                ..ErrorBody::new("no ready instance").app(app)
            },
        ),
        retry_after,
    )
}

pub fn bad_gateway(app: &str) -> Response<ProxyBody> {
    json(
        StatusCode::BAD_GATEWAY,
        ErrorBody::new("bad gateway").app(app),
    )
}

pub fn gateway_timeout(app: &str) -> Response<ProxyBody> {
    json(
        StatusCode::GATEWAY_TIMEOUT,
        ErrorBody::new("gateway timeout").app(app),
    )
}

pub fn circuit_open(app: &str, retry_after: u64) -> Response<ProxyBody> {
    with_retry_after(
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorBody {
                retry_after_s: Some(retry_after),
                ..ErrorBody::new("circuit open").app(app)
            },
        ),
        retry_after,
    )
}

/// Every connection the instance may have is busy: not the instance's fault.
pub fn no_connection(app: &str, retry_after: u64) -> Response<ProxyBody> {
    with_retry_after(
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorBody {
                retry_after_s: Some(retry_after),
                ..ErrorBody::new("upstream busy").app(app)
            },
        ),
        retry_after,
    )
}

/// A request that arrives while the apps are being stopped.
pub fn shutting_down(retry_after: u64) -> Response<ProxyBody> {
    with_close(with_retry_after(
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorBody::new("shutting down"),
        ),
        retry_after,
    ))
}

/// A malformed request (RFC 9112 §3.2 and friends).
pub fn bad_request(reason: &str) -> Response<ProxyBody> {
    with_close(json(
        StatusCode::BAD_REQUEST,
        ErrorBody {
            reason: Some(reason),
            ..ErrorBody::new("bad request")
        },
    ))
}

/// A client that stopped sending its request body.
pub fn request_timeout() -> Response<ProxyBody> {
    with_close(json(
        StatusCode::REQUEST_TIMEOUT,
        ErrorBody::new("request timeout"),
    ))
}

/// CONNECT: harbormaster is a reverse proxy, not a forward proxy.
pub fn method_not_allowed() -> Response<ProxyBody> {
    let mut res = with_close(json(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorBody {
            reason: Some("CONNECT is not supported"),
            ..ErrorBody::new("method not allowed")
        },
    ));
    res.headers_mut().insert(
        hyper::header::ALLOW,
        HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
    );
    res
}
