//! The MCP gateway's call records into the audit log: [`Audit`] is the
//! gateway's [`crate::mcp::AuditSink`]. A full queue makes the call wait
//! (counted in `waits`); nothing is dropped.

use std::future::Future;
use std::pin::Pin;

use super::{Audit, McpCall, Record};
use crate::mcp::CallRecord;

impl crate::mcp::AuditSink for Audit {
    fn record(&self, r: CallRecord) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let call = McpCall {
                ts: r.ts,
                client: r.client,
                front: r.front,
                session: Some(r.session),
                server: r.server,
                tool: r.tool,
                status: r.status,
                latency_ms: latency_ms(r.latency),
                request_bytes: r.request_bytes,
                response_bytes: r.response_bytes,
                error: r.error,
            };
            if let Err(closed) = Audit::record(self, Record::Mcp(call)).await {
                tracing::error!(event = "audit_closed", error = %closed, "an MCP call was not recorded");
            }
        })
    }
}

/// Milliseconds with microsecond precision (no float noise past it).
pub fn latency_ms(d: std::time::Duration) -> f64 {
    d.as_micros() as f64 / 1000.0
}
