//! The access log: one structured line per request, written when its
//! response is done.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper::{Request, StatusCode};
use tokio::time::Instant;

use super::routes::{AppEntry, Upstream};
use super::Gateway;

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
    pub(crate) fn log_local(
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
    pub(crate) fn record(
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
