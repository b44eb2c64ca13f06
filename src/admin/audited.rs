//! The one place mutating admin calls reach the audit log: a layer around
//! every mutating route (both doors), inside the authorization check, so
//! each authorized call makes exactly one `admin_actions` row.
//!
//! Room in the audit queue is taken BEFORE the call acts and filled after it
//! answered: a call that was answered is always recorded, and once the queue
//! is closed (shutdown) a mutation is refused with 503 and changes nothing.
//!
//! `action` is the path's last segment (`drain`, `reload`, `kill`, …);
//! `target` the app in `/v1/apps/{app}/…`, or what a handler names by
//! putting an [`AuditTarget`] in its response's extensions (a kill target,
//! a login's session). `peer` is `socket` or the TCP peer address ([`Peer`],
//! set by the TCP server); `via` is [`Via::Socket`] on `admin.sock`, else the
//! [`Via`] the authorization check left in the request's extensions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::{Control, Door};
use crate::audit::{AdminAction, Record, Via};

/// The TCP peer of an admin request (a request extension).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// What a mutating call acted on, when the path does not say (a response extension).
#[derive(Debug, Clone)]
pub struct AuditTarget(pub String);

pub(super) async fn record<C: Control>(
    State((harbor, door)): State<(Arc<C>, Door)>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // Reads behind the guard (an app's log tail) change nothing.
    let Some(audit) = harbor
        .audit()
        .filter(|_| req.method() != axum::http::Method::GET)
    else {
        return next.run(req).await;
    };
    let Ok(slot) = audit.reserve().await else {
        let why = "harbormaster is shutting down (the audit log is closed); nothing was changed";
        return super::error(StatusCode::SERVICE_UNAVAILABLE, why.into());
    };
    let ts = SystemTime::now();
    let (peer, via) = match door {
        Door::Socket => ("socket".to_string(), Via::Socket),
        Door::Tcp => (
            req.extensions()
                .get::<Peer>()
                .map_or_else(|| "tcp".into(), |p| p.0.to_string()),
            req.extensions().get::<Via>().copied().unwrap_or(Via::Token),
        ),
    };
    let segments: Vec<String> = req
        .uri()
        .path()
        .trim_matches('/')
        .split('/')
        .map(String::from)
        .collect();
    let action = segments.last().cloned().unwrap_or_default();
    let mut target = match segments.as_slice() {
        [_, apps, app, _] if apps == "apps" => Some(app.clone()),
        _ => None,
    };
    let res = next.run(req).await;
    if let Some(t) = res.extensions().get::<AuditTarget>() {
        target = Some(t.0.clone());
    }
    let status = res.status();
    let result = if status.is_success() {
        "ok".to_string()
    } else {
        format!("failed ({})", status.as_u16())
    };
    slot.send(Record::Admin(AdminAction {
        ts,
        action,
        target,
        result,
        peer,
        via,
    }));
    res
}
