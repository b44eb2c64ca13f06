//! What the gateway keeps of a request until it is over, to hand its one
//! typed outcome to the observers (`crate::observe`). Gathered only when
//! there is an observer at all; then it costs a few reference counts (the
//! request's method, host and URI are shared, not copied), and not even
//! those when no observer reads them (metrics only count). It does not
//! keep the observers: whoever emits has them at hand (the gateway, or the
//! instance that answered), and a copy per request was two reference
//! counts both workers write.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hyper::header::HeaderValue;
use hyper::{Method, Request, Uri};
use tokio::time::Instant;

use crate::observe::{Kind, Observers, RequestOutcome};

/// One request as the client sent it.
pub(crate) struct Seen {
    client: IpAddr,
    /// Method, `Host` and URI, when an observer reads them.
    line: Option<(Method, Option<HeaderValue>, Uri)>,
    start: Instant,
    /// Request body bytes read from the client (counted by the body).
    pub bytes_in: Option<Arc<AtomicU64>>,
}

impl Seen {
    /// `None` when nobody observes.
    pub fn new<B>(
        observers: &Observers,
        req: &Request<B>,
        client: IpAddr,
        start: Instant,
    ) -> Option<Self> {
        if observers.is_empty() {
            return None;
        }
        Some(Self {
            client,
            line: observers.reads_request_line().then(|| {
                let host = req.headers().get(hyper::header::HOST).cloned();
                (req.method().clone(), host, req.uri().clone())
            }),
            start,
            bytes_in: None,
        })
    }

    /// Hands the outcome to every one of `observers` (those `new` saw).
    pub fn emit(
        &self,
        observers: &Observers,
        app: Option<&str>,
        instance: Option<&str>,
        status: u16,
        kind: Kind,
        bytes_out: u64,
    ) {
        let (method, host, path) = match &self.line {
            Some((method, host, uri)) => {
                let host = match (host, uri.authority()) {
                    (_, Some(a)) => a.as_str(),
                    (Some(h), None) => h.to_str().unwrap_or(""),
                    (None, None) => "",
                };
                (method.as_str(), host, uri.path())
            }
            None => ("", "", ""),
        };
        observers.request(&RequestOutcome {
            app,
            instance,
            client: self.client,
            method,
            host,
            path,
            status,
            kind,
            bytes_in: self
                .bytes_in
                .as_ref()
                .map_or(0, |b| b.load(Ordering::Relaxed)),
            bytes_out,
            duration: self.start.elapsed(),
        });
    }
}
