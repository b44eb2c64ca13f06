//! The web dashboard: one page at `/` whose files are compiled into the
//! binary (`include_str!`: no build step, no CDN, works offline). The page
//! reads the same open endpoints as everyone else — `/v1/status` for apps
//! and instances, `/metrics` for traffic (parsed in the page: one source of
//! truth), `/v1/events` (SSE) to refresh the moment something changes — and
//! acts through the same mutating calls as the CLI, with a session cookie
//! plus `X-Harbormaster: 1` (`session.rs`).
//!
//! Routes here: the page and its files, `/login/{token}` (redeems a
//! one-time login URL), and two guarded calls: `POST /v1/dashboard/login`
//! (mints the URL; `harbormaster dashboard` calls it over `admin.sock`) and
//! `GET /v1/apps/{app}/logs` (an app's output tail).

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use tokio::time::Instant;

use super::{api, session, Control};

const INDEX: &str = include_str!("index.html");
const SCRIPT: &str = include_str!("app.js");
const STYLE: &str = include_str!("style.css");

/// Only our own files and our own origin; no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Log lines the page asks for at most.
const MAX_LOG_LINES: usize = 500;

/// Routes anyone may call: the page, its files, and the login redemption.
pub(super) fn open<C: Control>() -> Router<Arc<C>> {
    Router::new()
        .route(
            "/",
            get(|| async { page(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/dashboard/app.js",
            get(|| async { page(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/dashboard/style.css",
            get(|| async { page(STYLE, "text/css; charset=utf-8") }),
        )
        .route("/login/{token}", get(login::<C>))
}

/// Routes that need `admin.sock`, a token or a session.
pub(super) fn guarded<C: Control>() -> Router<Arc<C>> {
    Router::new()
        .route("/v1/dashboard/login", post(mint::<C>))
        .route("/v1/apps/{app}/logs", get(logs::<C>))
}

fn page(body: &'static str, kind: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, kind),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-cache"),
    ];
    (headers, body).into_response()
}

async fn mint<C: Control>(State(harbor): State<Arc<C>>) -> Json<api::DashboardLogin> {
    let token = harbor.sessions().mint_login(Instant::now());
    tracing::info!(event = "dashboard_login_minted");
    Json(api::DashboardLogin {
        path: format!("/login/{token}"),
        expires_in_s: session::LOGIN_TTL.as_secs(),
    })
}

/// `GET /login/{token}`: a session cookie and a redirect to `/`, once.
async fn login<C: Control>(State(harbor): State<Arc<C>>, Path(token): Path<String>) -> Response {
    let Some(session) = harbor.sessions().redeem(&token, Instant::now()) else {
        tracing::warn!(event = "dashboard_login_refused");
        let body = "<!doctype html><meta charset=utf-8><title>harbormaster</title>\
            <p>This login link was already used or has expired (links work once, for 60 s).\
            <p>Run <code>harbormaster dashboard</code> for a new one.";
        let headers = [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::REFERRER_POLICY, "no-referrer"),
        ];
        return (StatusCode::UNAUTHORIZED, headers, body).into_response();
    };
    tracing::info!(event = "dashboard_login");
    let mut res = (StatusCode::SEE_OTHER, [(header::LOCATION, "/")]).into_response();
    if let Ok(cookie) = HeaderValue::from_str(&session::cookie(&session)) {
        res.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    res.headers_mut().insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

#[derive(Debug, serde::Deserialize)]
struct LogQuery {
    lines: Option<usize>,
}

async fn logs<C: Control>(
    State(harbor): State<Arc<C>>,
    Path(app): Path<String>,
    Query(q): Query<LogQuery>,
) -> Response {
    let n = q.lines.unwrap_or(100).min(MAX_LOG_LINES);
    match harbor.log_tail(&app, n) {
        Ok(lines) => Json(api::LogTail { app, lines }).into_response(),
        Err(e) => e.into_response(),
    }
}
