//! The responses the gateway makes itself (INTERFACES.md): small JSON bodies.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONNECTION, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Response, StatusCode};

use super::ProxyBody;

fn json(status: StatusCode, body: serde_json::Value) -> Response<ProxyBody> {
    let mut res = Response::new(
        Full::new(Bytes::from(body.to_string()))
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
        serde_json::json!({ "error": "no route", "host": host, "path": path }),
    )
}

pub fn draining(app: &str, retry_after: u64, close: bool) -> Response<ProxyBody> {
    let mut res = with_retry_after(
        json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({ "error": "app draining", "app": app, "retry_after_s": retry_after }),
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
            serde_json::json!({ "error": "no ready instance", "app": app, "retry_after_s": retry_after }),
        ),
        retry_after,
    )
}

pub fn bad_gateway(app: &str) -> Response<ProxyBody> {
    json(
        StatusCode::BAD_GATEWAY,
        serde_json::json!({ "error": "bad gateway", "app": app }),
    )
}

pub fn gateway_timeout(app: &str) -> Response<ProxyBody> {
    json(
        StatusCode::GATEWAY_TIMEOUT,
        serde_json::json!({ "error": "gateway timeout", "app": app }),
    )
}
