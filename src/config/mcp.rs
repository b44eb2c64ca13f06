//! The validated `[mcp]` table: the MCP gateway's fronts, upstream servers
//! and the policy inputs (kill switches, rate limits, clients, roles) that
//! the policy stages enforce. Invariants hold by construction (see
//! `validate_mcp.rs`).

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use super::model::{AppName, CircuitBreaker, RestartConfig, Route};

#[derive(Debug, Clone, PartialEq)]
pub struct McpConfig {
    /// Where the Streamable HTTP front answers on the gateway listeners.
    pub routes: Vec<Route>,
    /// Between server and tool in exposed names (`SERVER__TOOL`); 1–8
    /// characters of `[A-Za-z0-9_.-]`.
    pub separator: String,
    pub call_timeout: Duration,
    /// The client identity of `harbormaster mcp` (stdio) callers.
    pub stdio_client: String,
    /// Origins accepted besides loopback ones, lowercase, without a trailing `/`.
    pub allowed_origins: Vec<String>,
    /// Refuse every `tools/call` from the start.
    pub kill_switch: bool,
    pub servers: BTreeMap<ServerName, McpServer>,
    pub clients: BTreeMap<String, McpClient>,
    pub roles: BTreeMap<String, McpRole>,
}

/// The name of an MCP server: the rules of [`AppName`], and never containing
/// the separator, so `SERVER__TOOL` splits one way only.
pub type ServerName = AppName;

#[derive(Debug, Clone, PartialEq)]
pub struct McpServer {
    pub name: ServerName,
    pub transport: McpTransport,
    /// Upstream tool names to expose; empty = all.
    pub tools: Vec<String>,
    /// The server's kill switch at start.
    pub killed: bool,
    /// `/ready` waits for this server.
    pub required: bool,
    pub circuit_breaker: CircuitBreaker,
    pub rate_limit: Option<RateLimit>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum McpTransport {
    /// A stdio server harbormaster runs and supervises.
    Stdio(Box<StdioServer>),
    /// A Streamable HTTP server somewhere else.
    Http {
        url: String,
        headers: BTreeMap<String, String>,
    },
    /// A managed app's ready instances, at `path`.
    App { app: AppName, path: String },
}

#[derive(Debug, Clone, PartialEq)]
pub struct StdioServer {
    /// Program and arguments (non-empty).
    pub command: Vec<String>,
    pub env: BTreeMap<String, String>,
    /// Absolute.
    pub working_dir: PathBuf,
    pub restart: RestartConfig,
    /// Close stdin, wait this long, SIGTERM, wait the same again, SIGKILL.
    pub stop_timeout: Duration,
}

/// A token bucket: `calls` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub calls: NonZeroU32,
    pub per: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McpClient {
    /// The bearer token that names this client on the HTTP front.
    pub token: String,
    /// Every name is a key of [`McpConfig::roles`].
    pub roles: Vec<String>,
    pub rate_limit: Option<RateLimit>,
}

/// Globs over exposed tool names (`*` matches any run of characters).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct McpRole {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

/// Whether `name` is a valid MCP tool name: 1–128 of `[A-Za-z0-9_.-]`.
pub fn valid_tool_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}
