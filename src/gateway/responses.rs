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
}

impl<'a> ErrorBody<'a> {
    fn new(error: &'a str) -> Self {
        Self {
            error,
            app: None,
            host: None,
            path: None,
            retry_after_s: None,
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

pub fn draining(app: &str, retry_after: u64, close: bool) -> Response<ProxyBody> {
    let mut res = with_retry_after(
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
        res.headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    res
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
