//! What the audit log holds: one [`McpCall`] per MCP `tools/call` (refused
//! ones too) and one [`AdminAction`] per mutating admin call. Field names
//! are the columns of `mcp_calls` and `admin_actions` (INTERFACES.md).

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// How a `tools/call` ended; `status` in `mcp_calls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
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
    pub const ALL: [CallStatus; 9] = [
        Self::Ok,
        Self::ToolError,
        Self::Killed,
        Self::RateLimited,
        Self::Denied,
        Self::CircuitOpen,
        Self::Timeout,
        Self::Unavailable,
        Self::Error,
    ];

    pub fn as_str(self) -> &'static str {
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

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// Which MCP front took the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Front {
    Stdio,
    Http,
}

impl Front {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdio => "stdio",
            Self::Http => "http",
        }
    }
}

/// One MCP `tools/call`.
#[derive(Debug, Clone, PartialEq)]
pub struct McpCall {
    /// When the call arrived.
    pub ts: SystemTime,
    pub client: String,
    pub front: Front,
    pub session: Option<String>,
    pub server: String,
    /// The exposed name (`SERVER__TOOL`).
    pub tool: String,
    pub status: CallStatus,
    pub latency_ms: f64,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub error: Option<String>,
}

/// How a mutating admin call was authenticated; `via` in `admin_actions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// `Authorization: Bearer` with one of `[admin] tokens` (TCP).
    Token,
    /// A dashboard session cookie (TCP).
    Session,
    /// `admin.sock`: its file mode is the authentication.
    Socket,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Session => "session",
            Self::Socket => "socket",
        }
    }
}

/// One mutating admin call (drain, resume, restart, reload, shutdown, …).
#[derive(Debug, Clone, PartialEq)]
pub struct AdminAction {
    pub ts: SystemTime,
    /// `drain`, `resume`, `restart`, `reload`, `shutdown`, `kill`, `login`, …
    pub action: String,
    /// The app, MCP target or session the action was about.
    pub target: Option<String>,
    /// `ok`, or `failed (STATUS): why`.
    pub result: String,
    /// `socket`, or the TCP peer address.
    pub peer: String,
    pub via: Via,
}

/// What goes through the queue.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Mcp(McpCall),
    Admin(AdminAction),
}

/// A record with its idempotency key: a write retried after a connection
/// loss (was the commit applied or not?) never makes a second row.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Unique across processes: a random id per process and a counter.
    pub uid: String,
    pub record: Record,
}

/// RFC 3339, UTC, milliseconds: fixed width, so text order is time order.
pub fn rfc3339(ts: SystemTime) -> String {
    humantime::format_rfc3339_millis(ts).to_string()
}
