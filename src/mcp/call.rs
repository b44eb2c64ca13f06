//! The `tools/call` path, in INTERFACES.md's order: name → server, the
//! policy stages ([`McpGateway::admit`]: kill switch → rate limit →
//! access), the server's state, the breaker, the upstream call with
//! `call_timeout` (a dropped call tells the server `notifications/cancelled`)
//! — and one audit record per call, also for refused and cancelled ones.
//! Other requests to one server (`prompts/get`, `resources/read`) go
//! through [`McpGateway::forward`].

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::audit::{AuditSink, CallRecord, CallStatus, Caller};
use super::catalog;
use super::conn::{Lost, ProgressRoute};
use super::errors::McpError;
use super::hub::{lock, read, InFlight, McpGateway, Session};
use super::upstream::ServerState;
use crate::health::breaker::{Admission, BreakerState};

impl McpGateway {
    /// A request to one server as it is (names already mapped back).
    pub(super) async fn forward(
        &self,
        server: &str,
        method: &str,
        params: Value,
        out: &mpsc::UnboundedSender<Value>,
    ) -> Result<Value, McpError> {
        // Counted like calls, so a shutdown's drain waits for it too.
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let _counted = InFlight(self);
        let upstream = self
            .server(server)
            .ok_or_else(|| McpError::invalid_params(format!("unknown server: {server}")))?;
        let conn = upstream
            .conn()
            .ok_or_else(|| McpError::unavailable(server, upstream.snapshot().state.name()))?;
        let timeout = self.config().call_timeout;
        let progress = progress_route(&params, out);
        let call = conn
            .start_with(method, params, progress)
            .map_err(|Lost| McpError::unavailable(server, "connection lost"))?;
        match tokio::time::timeout(timeout, call.answer()).await {
            Err(_) => Err(McpError::timed_out(server, timeout)),
            Ok(Err(Lost)) => Err(McpError::unavailable(server, "connection lost")),
            Ok(Ok(Ok(result))) => Ok(result),
            Ok(Ok(Err(e))) => Err(McpError::upstream(&e)),
        }
    }

    /// Where the policy stages run, in order: kill switch → rate limit →
    /// access. Called before the breaker.
    pub fn admit(&self, caller: &Caller, server: &str, tool: &str) -> Result<(), McpError> {
        read(&self.policy).admit(caller, server, tool)
    }

    pub(super) async fn call_tool(
        &self,
        session: &Session,
        params: Value,
        out: &mpsc::UnboundedSender<Value>,
    ) -> Result<Value, McpError> {
        let name = params["name"].as_str().unwrap_or("").to_string();
        let mut audit = Audited {
            sink: read(&self.audit),
            started: Instant::now(),
            record: Some(CallRecord {
                ts: SystemTime::now(),
                client: session.caller.client.clone(),
                front: session.caller.front,
                session: session.caller.session.clone(),
                server: String::new(),
                tool: name.clone(),
                status: CallStatus::Error,
                latency: Default::default(),
                request_bytes: params.to_string().len() as u64,
                response_bytes: 0,
                error: None,
            }),
        };
        let mut server_name = String::new();
        let result = if self.accepting.load(Ordering::Acquire) {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
            let _counted = InFlight(self);
            let result = self
                .call_tool_inner(session, &name, params, out, &mut server_name)
                .await;
            if let Some(r) = audit.record.as_mut() {
                r.server = server_name;
            }
            result
        } else {
            Err(McpError::unavailable("harbormaster", "shutting down"))
        };
        let (status, response_bytes, error) = match &result {
            Ok(r) if r["isError"].as_bool() == Some(true) => {
                (CallStatus::ToolError, r.to_string().len() as u64, None)
            }
            Ok(r) => (CallStatus::Ok, r.to_string().len() as u64, None),
            Err(e) => (e.status(), 0, Some(e.message.clone())),
        };
        audit.finish(status, response_bytes, error).await;
        result
    }

    async fn call_tool_inner(
        &self,
        session: &Session,
        name: &str,
        params: Value,
        out: &mpsc::UnboundedSender<Value>,
        server_name: &mut String,
    ) -> Result<Value, McpError> {
        let config = self.config();
        let (server, tool) =
            catalog::split(name, &config.separator).ok_or_else(|| McpError::unknown_tool(name))?;
        let upstream = self
            .server(server)
            .ok_or_else(|| McpError::unknown_tool(name))?;
        *server_name = server.to_string();
        if !catalog::allowed(&upstream.config.tools, tool) {
            return Err(McpError::unknown_tool(name));
        }
        self.admit(&session.caller, server, name)?;
        let snap = upstream.snapshot();
        if snap.state != ServerState::Ready {
            return Err(McpError::unavailable(server, snap.state.name()));
        }
        if !snap.lists.tools.iter().any(|t| t["name"] == tool) {
            return Err(McpError::unknown_tool(name));
        }
        let now = Instant::now();
        let (admission, transition) = lock(&upstream.breaker).admit(now);
        log_transition(server, transition);
        if let Admission::Deny { retry_after } = admission {
            return Err(McpError::circuit_open(server, retry_after));
        }
        let Some(conn) = upstream.conn() else {
            return Err(McpError::unavailable(server, "restarting"));
        };
        let mut params = params;
        params["name"] = json!(tool);
        let progress = progress_route(&params, out);
        let timeout = config.call_timeout;
        let outcome = match conn.start_with("tools/call", params, progress) {
            Err(Lost) => Err(McpError::unavailable(server, "connection lost")),
            // Dropping the call on timeout sends notifications/cancelled upstream.
            Ok(call) => match tokio::time::timeout(timeout, call.answer()).await {
                Err(_) => Err(McpError::timed_out(server, timeout)),
                Ok(Err(Lost)) => Err(McpError::unavailable(
                    server,
                    "the server exited during the call",
                )),
                Ok(Ok(Ok(result))) => Ok(result),
                Ok(Ok(Err(e))) => Err(McpError::upstream(&e)),
            },
        };
        // Transport errors and timeouts count against the breaker.
        let failed = matches!(&outcome, Err(e) if e.code == super::errors::TIMED_OUT || e.code == super::errors::UNAVAILABLE);
        let transition = lock(&upstream.breaker).record(!failed, Instant::now());
        log_transition(server, transition);
        outcome
    }
}

fn log_transition(server: &str, t: Option<crate::health::breaker::Transition>) {
    if let Some(t) = t {
        let level_open = matches!(t.to, BreakerState::Open { .. });
        if level_open {
            tracing::warn!(
                event = "mcp_breaker",
                server,
                from = t.from.name(),
                to = t.to.name()
            );
        } else {
            tracing::info!(
                event = "mcp_breaker",
                server,
                from = t.from.name(),
                to = t.to.name()
            );
        }
    }
}

fn progress_route(params: &Value, out: &mpsc::UnboundedSender<Value>) -> Option<ProgressRoute> {
    let token = params.get("_meta")?.get("progressToken")?;
    Some(ProgressRoute {
        to: out.clone(),
        token: token.clone(),
    })
}

/// One call's audit record: written when the call ends, or — when the call
/// is dropped (the client cancelled it or went away) — from `Drop`, as
/// `error` "cancelled by the client". Never lost either way.
struct Audited {
    sink: Arc<dyn AuditSink>,
    started: Instant,
    record: Option<CallRecord>,
}

impl Audited {
    async fn finish(&mut self, status: CallStatus, response_bytes: u64, error: Option<String>) {
        let Some(mut record) = self.record.take() else {
            return;
        };
        record.status = status;
        record.response_bytes = response_bytes;
        record.error = error;
        record.latency = self.started.elapsed();
        self.sink.record(record).await;
    }
}

impl Drop for Audited {
    fn drop(&mut self) {
        let Some(mut record) = self.record.take() else {
            return;
        };
        record.status = CallStatus::Error;
        record.error = Some("cancelled by the client".into());
        record.latency = self.started.elapsed();
        let sink = self.sink.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move { sink.record(record).await });
        }
    }
}
