//! The admin API's JSON types: one module for the daemon and the CLI, so the
//! two cannot drift (INTERFACES.md).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `GET /live`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Live {
    pub status: String,
}

/// `GET /ready`: 200 `ready`, or 503 `not_ready` with the reasons.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ready {
    pub status: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
}

/// `GET /health`: everything an operator needs at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub version: String,
    pub pid: u32,
    /// Whole seconds (integers everywhere: no float noise in JSON).
    pub uptime_s: u64,
    /// `ok`, `degraded` (a required app is not ready) or `shutting_down`.
    pub status: String,
    pub in_flight: usize,
    pub apps: BTreeMap<String, AppHealth>,
    /// The last reload (ok or error, when, what).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reload: Option<ReloadReport>,
    /// The audit writer's counters, when the audit log is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<crate::audit::StatsSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppHealth {
    /// `managed` or `external`.
    pub kind: String,
    pub required: bool,
    pub ready: bool,
    pub draining: bool,
    /// A rolling restart is under way.
    #[serde(default)]
    pub restarting: bool,
    /// What the app waits for before it starts (`waiting for api to be ready`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// Why the last rolling restart failed, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_error: Option<String>,
    pub in_flight: usize,
    pub instances: Vec<InstanceHealth>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceHealth {
    /// `web#0`, or `legacy@127.0.0.1:3999` for an external upstream.
    pub id: String,
    /// The supervisor state (`ready`, `restarting`, …); `ready`/`not_ready` for upstreams.
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Live processes of the instance: its group plus descendants that left
    /// it (found by `HARBORMASTER_INSTANCE`). Absent for external upstreams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub processes: Option<usize>,
    pub ready: bool,
    /// `closed`, `open` or `half_open`.
    pub breaker: String,
    pub in_flight: usize,
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uptime_s: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_probe: Option<ProbeReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_death: Option<DeathReport>,
    /// Earlier deaths, oldest first, without their last lines (the output
    /// they share is in `last_death`, once).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deaths: Vec<DeathReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbeReport {
    pub ok: bool,
    /// Whole milliseconds; `latency_us` has the precision.
    pub latency_ms: u64,
    #[serde(default)]
    pub latency_us: u64,
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeathReport {
    /// RFC 3339.
    pub at: String,
    /// `exit code 3`, `killed by SIGKILL`, or absent when it never started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<String>,
    /// Whole seconds; `uptime_ms` has the precision.
    pub uptime_s: u64,
    #[serde(default)]
    pub uptime_ms: u64,
    pub reason: String,
    pub last_lines: Vec<String>,
}

/// `runtime.json`: written once the listeners are bound, removed on clean exit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuntimeInfo {
    pub pid: u32,
    pub version: String,
    pub started_at: String,
    pub config: String,
    pub gateway: Vec<String>,
    /// `http://127.0.0.1:40123`.
    pub admin: String,
    /// `admin.sock`: the CLI's channel (no token needed; mode 0600).
    #[serde(default)]
    pub socket: String,
}

/// The answer of accepted mutating calls (`202`) and of errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Accepted {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// The answer of `POST /v1/reload`: 200 `applied`, or 422 `invalid` with the
/// same errors as `check` (nothing changed), or 409 `refused`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadResult {
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// Parts of an applied plan that failed (the old state was kept for them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<String>,
}

/// `POST /v1/dashboard/login` (over `admin.sock`): a one-time login path,
/// valid 60 s; the CLI puts it after the admin URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DashboardLogin {
    /// `/login/<64 hex>`.
    pub path: String,
    pub expires_in_s: u64,
}

/// `GET /v1/apps/{app}/logs?lines=N`: the app's recent output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogTail {
    pub app: String,
    pub lines: Vec<String>,
}

/// The last reload, for status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadReport {
    pub at: String,
    pub ok: bool,
    pub message: String,
}

/// One event of `GET /v1/events` and of `Harbor::subscribe`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339, UTC, milliseconds.
    pub ts: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    /// `web#0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    #[serde(flatten)]
    pub what: EventKind,
}

/// What happened; `kind` in the JSON and the SSE `event:` line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventKind {
    StateChange {
        from: String,
        to: String,
        reason: String,
    },
    /// An instance started or stopped taking traffic.
    Readiness {
        ready: bool,
    },
    /// An instance's circuit breaker moved: `closed`, `open`, `half_open`.
    Breaker {
        from: String,
        to: String,
    },
    /// The app waits for its dependencies (`reason`), or no longer does.
    Waiting {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    Drain {
        draining: bool,
    },
    Reload {
        ok: bool,
        message: String,
    },
    /// `started`, `done` or `failed` (with `error`).
    Restart {
        outcome: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// `running`, `draining`, `stopping_apps`, `flushing`, `stopped`.
    Shutdown {
        phase: String,
    },
}

impl Event {
    pub fn new(app: Option<String>, instance: Option<String>, what: EventKind) -> Self {
        Self {
            ts: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            app,
            instance,
            what,
        }
    }

    /// The SSE event name.
    pub fn kind(&self) -> &'static str {
        match self.what {
            EventKind::StateChange { .. } => "state_change",
            EventKind::Readiness { .. } => "readiness",
            EventKind::Breaker { .. } => "breaker",
            EventKind::Waiting { .. } => "waiting",
            EventKind::Drain { .. } => "drain",
            EventKind::Reload { .. } => "reload",
            EventKind::Restart { .. } => "restart",
            EventKind::Shutdown { .. } => "shutdown",
        }
    }
}

/// `POST /v1/upgrade`: the binary to hand over to (absolute path).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpgradeRequest {
    pub binary: String,
    /// How long the new process may take to become ready (default 120 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// The answer of a completed upgrade: the new process serves; the old one drains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpgradeDone {
    pub pid: u32,
    pub binary: String,
}
