//! What the gateway keeps of a request until it is over, to hand its one
//! typed outcome to the observers (`crate::observe`). Gathered only when
//! there is an observer at all; then it costs a few reference counts (the
//! request's method, host and URI are shared, not copied).

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hyper::header::HeaderValue;
use hyper::{Method, Request, Uri};
use tokio::time::Instant;

use crate::observe::{Kind, Observers, RequestOutcome};

/// One request as the client sent it.
pub(crate) struct Seen {
    observers: Observers,
    client: IpAddr,
    method: Method,
    host: Option<HeaderValue>,
    uri: Uri,
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
            observers: observers.clone(),
            client,
            method: req.method().clone(),
            host: req.headers().get(hyper::header::HOST).cloned(),
            uri: req.uri().clone(),
            start,
            bytes_in: None,
        })
    }

    /// Hands the outcome to every observer.
    pub fn emit(
        &self,
        app: Option<&str>,
        instance: Option<&str>,
        status: u16,
        kind: Kind,
        bytes_out: u64,
    ) {
        let host = match (&self.host, self.uri.authority()) {
            (_, Some(a)) => a.as_str(),
            (Some(h), None) => h.to_str().unwrap_or(""),
            (None, None) => "",
        };
        self.observers.request(&RequestOutcome {
            app,
            instance,
            client: self.client,
            method: self.method.as_str(),
            host,
            path: self.uri.path(),
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
