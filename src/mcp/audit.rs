//! One record per `tools/call` (also the refused ones), handed to an
//! [`AuditSink`]. The default sink drops them; the audit log (issue #15)
//! implements the trait and is plugged in with [`super::McpGateway::set_audit`].

use std::time::{Duration, SystemTime};

use serde::Serialize;

// One status/front type for the gateway and the audit log.
pub use crate::audit::{CallStatus, Front};

/// Who is calling: the client identity and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// An `[mcp.clients.*]` name, `[mcp] stdio_client`, or `anonymous`.
    pub client: String,
    /// Its roles (empty when no client is configured).
    pub roles: Vec<String>,
    pub front: Front,
    /// `Mcp-Session-Id`, or the stdio session's id.
    pub session: String,
}

/// One `tools/call`, as the audit log stores it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CallRecord {
    pub ts: SystemTime,
    pub client: String,
    pub front: Front,
    pub session: String,
    /// Empty when the name matched no server.
    pub server: String,
    /// The exposed name (`SERVER__TOOL`).
    pub tool: String,
    pub status: CallStatus,
    pub latency: Duration,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub error: Option<String>,
}

/// Where call records go. Implementations must not drop records; they may
/// make the caller wait (a bounded queue).
pub trait AuditSink: Send + Sync {
    fn record(
        &self,
        record: CallRecord,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>;
}

/// The default: records go nowhere (a debug log line each).
pub struct NoAudit;

impl AuditSink for NoAudit {
    fn record(
        &self,
        record: CallRecord,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>> {
        tracing::debug!(
            event = "mcp_call",
            client = %record.client,
            front = record.front.as_str(),
            server = %record.server,
            tool = %record.tool,
            status = record.status.as_str(),
            latency_ms = record.latency.as_millis() as u64,
        );
        Box::pin(std::future::ready(()))
    }
}
