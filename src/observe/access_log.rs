//! The access log: one structured line per request (`event = "access"`),
//! text or JSON like every other log line (`--log-format`).

use super::{Observer, RequestOutcome};

/// Logs every request at info level.
#[derive(Debug, Default)]
pub struct AccessLog;

impl Observer for AccessLog {
    fn request(&self, o: &RequestOutcome<'_>) {
        tracing::info!(
            event = "access",
            client = %o.client,
            host = o.host,
            method = o.method,
            path = o.path,
            status = o.status,
            app = o.app.unwrap_or(""),
            instance = o.instance.unwrap_or(""),
            bytes_in = o.bytes_in,
            bytes_out = o.bytes_out,
            duration_us = o.duration.as_micros() as u64,
            outcome = o.kind.name(),
        );
    }
}
