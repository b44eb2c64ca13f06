//! One record per `tools/call` (also the refused ones), handed to an
//! [`AuditSink`]. The default sink drops them; the audit log (issue #15)
//! implements the trait and is plugged in with [`super::McpGateway::set_audit`].

use std::time::{Duration, SystemTime};

use serde::Serialize;

/// Which front a call came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Front {
    Stdio,
    Http,
}

impl Front {
    pub fn name(self) -> &'static str {
        match self {
            Self::Stdio => "stdio",
            Self::Http => "http",
        }
    }
}

/// How a call ended; the `status` column of `mcp_calls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CallStatus {
    Ok,
    /// The tool answered with `isError: true`.
    ToolError,
    Killed,
    RateLimited,
    Denied,
    CircuitOpen,
    Timeout,
    Unavailable,
    Error,
}

impl CallStatus {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::ToolError => "tool_error",
            Self::Killed => "killed",
            Self::RateLimited => "rate_limited",
            Self::Denied => "denied",
            Self::CircuitOpen => "circuit_open",
            Self::Timeout => "timeout",
            Self::Unavailable => "unavailable",
            Self::Error => "error",
        }
    }
}

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
            front = record.front.name(),
            server = %record.server,
            tool = %record.tool,
            status = record.status.name(),
            latency_ms = record.latency.as_millis() as u64,
        );
        Box::pin(std::future::ready(()))
    }
}
