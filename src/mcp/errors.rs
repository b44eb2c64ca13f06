//! The gateway's JSON-RPC errors: codes and `error.data` as promised in
//! INTERFACES.md ("MCP gateway"), in one place.

use std::time::Duration;

use serde_json::{json, Value};

use super::audit::CallStatus;

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
pub const KILLED: i64 = -32010;
pub const RATE_LIMITED: i64 = -32011;
pub const CIRCUIT_OPEN: i64 = -32013;
pub const TIMED_OUT: i64 = -32014;
pub const UNAVAILABLE: i64 = -32015;

/// A JSON-RPC error the gateway answers with.
#[derive(Debug, Clone, PartialEq)]
pub struct McpError {
    pub code: i64,
    pub message: String,
    /// `reason` (a word) and, where it applies, `retry_after_ms`.
    pub data: Option<Value>,
    /// The audit status when the wire form does not tell it (a denied call
    /// answers exactly like an unknown tool but is audited `denied`).
    pub audited_as: Option<CallStatus>,
}

impl McpError {
    fn with_reason(code: i64, message: impl Into<String>, reason: &str) -> Self {
        Self {
            code,
            message: message.into(),
            data: Some(json!({ "reason": reason })),
            audited_as: None,
        }
    }

    fn retry_after(mut self, after: Duration) -> Self {
        if let Some(Value::Object(data)) = &mut self.data {
            data.insert("retry_after_ms".into(), json!(after.as_millis() as u64));
        }
        self
    }

    /// Unknown tool — also a tool the caller may not use (indistinguishable).
    pub fn unknown_tool(name: &str) -> Self {
        Self::with_reason(
            INVALID_PARAMS,
            format!("unknown tool: {name}"),
            "unknown_tool",
        )
    }

    /// A tool the caller's roles do not allow: on the wire exactly
    /// [`Self::unknown_tool`], in the audit log `denied`.
    pub fn denied(name: &str) -> Self {
        Self {
            audited_as: Some(CallStatus::Denied),
            ..Self::unknown_tool(name)
        }
    }

    pub fn invalid_params(message: impl Into<String>) -> Self {
        Self::with_reason(INVALID_PARAMS, message, "invalid_params")
    }

    pub fn method_not_found(method: &str) -> Self {
        Self::with_reason(
            METHOD_NOT_FOUND,
            format!("method not found: {method}"),
            "method_not_found",
        )
    }

    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::with_reason(INVALID_REQUEST, message, "invalid_request")
    }

    pub fn parse_error(message: impl Into<String>) -> Self {
        Self::with_reason(PARSE_ERROR, message, "parse_error")
    }

    pub fn killed(target: &str) -> Self {
        Self::with_reason(
            KILLED,
            format!("kill switch engaged for {target}"),
            "killed",
        )
    }

    pub fn rate_limited(retry_after: Duration) -> Self {
        Self::with_reason(RATE_LIMITED, "rate limited", "rate_limited").retry_after(retry_after)
    }

    pub fn circuit_open(server: &str, retry_after: Duration) -> Self {
        Self::with_reason(
            CIRCUIT_OPEN,
            format!("circuit open for server {server}"),
            "circuit_open",
        )
        .retry_after(retry_after)
    }

    pub fn timed_out(server: &str, after: Duration) -> Self {
        Self::with_reason(
            TIMED_OUT,
            format!(
                "call to server {server} timed out after {}",
                humantime::format_duration(after)
            ),
            "timeout",
        )
    }

    pub fn unavailable(server: &str, why: &str) -> Self {
        Self::with_reason(
            UNAVAILABLE,
            format!("server {server} is unavailable ({why})"),
            "unavailable",
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::with_reason(INTERNAL_ERROR, message, "error")
    }

    /// An error the upstream server answered with, passed through as it is.
    pub fn upstream(error: &Value) -> Self {
        Self {
            code: error
                .get("code")
                .and_then(Value::as_i64)
                .unwrap_or(INTERNAL_ERROR),
            message: error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("upstream error")
                .to_string(),
            data: error.get("data").cloned(),
            audited_as: None,
        }
    }

    /// The audit status this error stands for.
    pub fn status(&self) -> CallStatus {
        if let Some(status) = self.audited_as {
            return status;
        }
        match self.code {
            KILLED => CallStatus::Killed,
            RATE_LIMITED => CallStatus::RateLimited,
            CIRCUIT_OPEN => CallStatus::CircuitOpen,
            TIMED_OUT => CallStatus::Timeout,
            UNAVAILABLE => CallStatus::Unavailable,
            _ => CallStatus::Error,
        }
    }

    /// The JSON-RPC `error` object.
    pub fn to_json(&self) -> Value {
        let mut e = json!({ "code": self.code, "message": self.message });
        if let Some(data) = &self.data {
            e["data"] = data.clone();
        }
        e
    }
}

impl std::fmt::Display for McpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for McpError {}

/// A JSON-RPC response carrying `error` for request `id`.
pub fn error_response(id: &Value, error: &McpError) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": error.to_json() })
}

/// A JSON-RPC response carrying `result` for request `id`.
pub fn result_response(id: &Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_carry_their_code_reason_and_retry_hint() {
        let e = McpError::circuit_open("slow", Duration::from_millis(1500));
        assert_eq!(e.code, -32013);
        assert_eq!(e.to_json()["data"]["reason"], "circuit_open");
        assert_eq!(e.to_json()["data"]["retry_after_ms"], 1500);
        assert_eq!(e.status(), CallStatus::CircuitOpen);
        assert_eq!(
            McpError::timed_out("s", Duration::from_secs(1)).code,
            -32014
        );
        assert_eq!(McpError::unavailable("s", "down").code, -32015);
        // A genuinely unknown tool is an `error`; a denied one looks the same.
        assert_eq!(McpError::unknown_tool("x").status(), CallStatus::Error);
        assert_eq!(McpError::denied("x").status(), CallStatus::Denied);
        assert_eq!(
            McpError::denied("x").to_json(),
            McpError::unknown_tool("x").to_json()
        );
        assert_eq!(McpError::invalid_params("x").status(), CallStatus::Error);
    }
}
