//! MCP and audit-log metrics: `tools/call`s by server, tool and status
//! (the tool label is bounded by the catalog: a name no server offers is
//! counted as `tool=""`), call duration per server, and the audit writer's
//! queue depth, records written, write errors and waits (read from
//! `/health`'s audit counters at scrape time).
//!
//! Calls are seen through [`Counted`], an [`AuditSink`] in front of the
//! real one: every call already makes exactly one record there.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Durations;
use crate::audit::StatsSnapshot;
use crate::mcp::{AuditSink, CallRecord, McpGateway};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    server: String,
    tool: String,
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabel {
    server: String,
}

#[derive(Default)]
pub(super) struct McpMetrics {
    calls: Family<CallLabels, Counter>,
    durations: Family<ServerLabel, Durations>,
    queue_depth: Gauge,
    written: Counter,
    write_errors: Counter,
    waits: Counter,
}

impl McpMetrics {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "harbormaster_mcp_calls",
            "MCP tools/call answered, by server, tool (only tools in the catalog) and audit status",
            self.calls.clone(),
        );
        r.register(
            "harbormaster_mcp_call_duration_seconds",
            "Time from a tools/call's arrival to its answer, by server",
            self.durations.clone(),
        );
        r.register(
            "harbormaster_audit_queue_depth",
            "Audit records waiting to be written",
            self.queue_depth.clone(),
        );
        r.register(
            "harbormaster_audit_records_written",
            "Audit records written to the database",
            self.written.clone(),
        );
        r.register(
            "harbormaster_audit_write_errors",
            "Failed audit writes (each one retried)",
            self.write_errors.clone(),
        );
        r.register(
            "harbormaster_audit_waits",
            "Callers that found the audit queue full and waited",
            self.waits.clone(),
        );
    }

    fn call(&self, r: &CallRecord, in_catalog: bool) {
        let tool = if in_catalog {
            r.tool.clone()
        } else {
            String::new()
        };
        let labels = CallLabels {
            server: r.server.clone(),
            tool,
            status: r.status.as_str(),
        };
        self.calls.get_or_create(&labels).inc();
        let server = ServerLabel {
            server: r.server.clone(),
        };
        self.durations.get_or_create(&server).observe(r.latency);
    }

    pub(super) fn audit(&self, s: &StatsSnapshot) {
        self.queue_depth.set(s.queue_depth as i64);
        for (c, v) in [
            (&self.written, s.written),
            (&self.write_errors, s.write_errors),
            (&self.waits, s.waits),
        ] {
            c.inc_by(v.saturating_sub(c.get()));
        }
    }
}

/// Counts each call, then hands its record on to the audit log.
pub struct Counted {
    pub inner: Arc<dyn AuditSink>,
    pub metrics: Arc<super::Metrics>,
    pub gateway: Weak<McpGateway>,
}

impl AuditSink for Counted {
    fn record(&self, r: CallRecord) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let in_catalog = self.gateway.upgrade().is_some_and(|g| {
            g.catalog()
                .tools
                .iter()
                .any(|t| t["name"].as_str() == Some(r.tool.as_str()))
        });
        self.metrics.mcp.call(&r, in_catalog);
        self.inner.record(r)
    }
}
