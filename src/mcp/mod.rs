//! The MCP gateway: many MCP servers behind one endpoint for AI clients.
//!
//! - `upstream` supervises a stdio server (process group, restart, stop
//!   ladder) and keeps its connection (`conn`: JSON-RPC lines);
//! - `hub` owns the servers, builds the catalog (`catalog`: `SERVER__TOOL`
//!   names) and dispatches every client request, with the breaker, the
//!   `call_timeout`, the policy hook ([`Policy`]) and the audit record
//!   ([`audit::AuditSink`]) on the `tools/call` path;
//! - `front_http` (Streamable HTTP on the gateway listeners) and
//!   `front_stdio` (`harbormaster mcp`) turn transports into sessions.
//!
//! Errors and codes are in `errors` (INTERFACES.md "MCP gateway").

pub mod audit;
mod call;
pub mod catalog;
pub mod conn;
pub mod errors;
pub mod front_http;
pub mod front_stdio;
mod hub;
mod servers;
pub mod sse;
pub mod upstream;
mod upstream_http;

pub use audit::{AuditSink, CallRecord, CallStatus, Caller, Front};
pub use errors::McpError;
pub use hub::{AdmitAll, Catalog, McpGateway, Policy, Session, PROTOCOL_VERSION_META, SUPPORTED};
