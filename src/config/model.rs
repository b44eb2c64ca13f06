//! The validated configuration: typed values whose invariants hold by construction.
//!
//! Everything here was checked by `validate.rs`; code that receives a
//! [`Config`] never re-validates it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

/// A validated configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Absolute path of the file this came from.
    pub source: PathBuf,
    pub gateway: GatewayConfig,
    pub admin: AdminConfig,
    pub runtime: RuntimeConfig,
    pub apps: BTreeMap<AppName, AppConfig>,
    /// `None`: no audit log (neither `[audit]` nor `[mcp]` is written).
    pub audit: Option<super::AuditConfig>,
    /// `[mcp]`, when written: the MCP gateway.
    pub mcp: Option<super::mcp::McpConfig>,
}

impl Config {
    /// App names in start order: every app after the apps it depends on.
    /// Validation rejected cycles, so this always covers every app.
    pub fn start_order(&self) -> Vec<AppName> {
        let mut order: Vec<AppName> = Vec::with_capacity(self.apps.len());
        fn visit(config: &Config, name: &AppName, order: &mut Vec<AppName>) {
            if order.contains(name) {
                return;
            }
            for dep in config.apps[name].depends_on.keys() {
                visit(config, dep, order);
            }
            order.push(name.clone());
        }
        for name in self.apps.keys() {
            visit(self, name, &mut order);
        }
        order
    }
}

/// The name of an app: ASCII letters, digits, `-` and `_`, at most 64 characters,
/// so it is safe in URLs, file names and log fields.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppName(String);

impl AppName {
    pub const MAX_LEN: usize = 64;

    pub fn new(name: &str) -> Result<Self, String> {
        if name.is_empty() || name.len() > Self::MAX_LEN {
            return Err(format!("must be 1 to {} characters long", Self::MAX_LEN));
        }
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err("may contain only ASCII letters, digits, '-' and '_'".into());
        }
        Ok(Self(name.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for AppName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct GatewayConfig {
    pub listen: Vec<SocketAddr>,
    pub drain_timeout: Duration,
    pub drain_delay: Duration,
    pub stream_grace: Duration,
    pub header_read_timeout: Duration,
    pub upstream_connect_timeout: Duration,
    pub upstream_response_timeout: Duration,
    /// `None`: derived from the open-file limit at start (see `gateway::limits`).
    pub max_connections: Option<u32>,
    pub max_header_bytes: u32,
    pub access_log: bool,
    /// Idle keep-alive client connections (HTTP/1 and HTTP/2) close after this.
    pub client_idle_timeout: Duration,
    /// Pooled upstream connections idle this long are closed, never reused.
    pub upstream_idle_timeout: Duration,
    pub http2_max_concurrent_streams: u32,
    /// Open connections per upstream instance, all workers together.
    pub max_upstream_connections: u32,
    /// `worker_cpu_affinity = "auto"`: each gateway worker thread is pinned
    /// to one CPU the process may run on.
    pub pin_workers: bool,
    /// `[gateway.tls]`: TLS listeners and certificates, when written.
    pub tls: Option<super::tls::TlsConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdminConfig {
    pub listen: SocketAddr,
    /// Bearer tokens accepted for mutating calls over TCP (empty: TCP
    /// mutations always answer 401; `admin.sock` needs no token).
    pub tokens: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeConfig {
    /// `[runtime] dir` when written (absolute; relative paths were resolved
    /// against the config file's folder). `None`: the private per-user
    /// default, see `lifecycle::runtime_dir::locate`.
    pub dir: Option<PathBuf>,
    /// `[runtime] state_dir` (absolute): logs and other state kept across runs.
    pub state_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AppConfig {
    pub name: AppName,
    pub routes: Vec<Route>,
    pub kind: AppKind,
    pub required: bool,
    pub depends_on: BTreeMap<AppName, DependsOn>,
    pub balance: Balance,
    /// `None`: readiness is a TCP connect to the instance's port.
    pub readiness: Option<Probe>,
    pub circuit_breaker: CircuitBreaker,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AppKind {
    /// harbormaster runs and supervises the processes.
    Managed(Box<ManagedApp>),
    /// harbormaster only routes to and health-checks these addresses.
    External { upstreams: Vec<SocketAddr> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ManagedApp {
    pub command: Command,
    /// Absolute.
    pub working_dir: PathBuf,
    pub env: BTreeMap<String, String>,
    /// Absolute.
    pub env_file: Option<PathBuf>,
    pub instances: NonZeroU32,
    /// 0 = allocate a free loopback port per instance.
    pub port: u16,
    pub restart: RestartConfig,
    pub startup: Option<Probe>,
    pub liveness: Option<Probe>,
    pub stop: StopConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Program and arguments; `{port}` in any argument is the instance's port.
    Argv(Vec<String>),
    /// One line run by `/bin/sh -c`.
    Shell(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub host: Option<HostMatch>,
    /// Starts with `/`; no trailing `/` except for the root.
    pub path: Option<String>,
    pub strip_prefix: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostMatch {
    /// Lowercase host name.
    Exact(String),
    /// `*.example.com`: stored as the lowercase suffix `example.com`; matches
    /// any host ending in `.example.com`, not `example.com` itself.
    Wildcard(String),
}

impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(h) => f.write_str(h),
            Self::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DependsOn {
    Started,
    Ready,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Balance {
    RoundRobin,
    LeastInFlight,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RestartConfig {
    pub policy: RestartPolicy,
    pub backoff: Backoff,
    pub max_restarts: u32,
    pub window: Duration,
    pub reset_after: Duration,
}

/// Exponential backoff bounds; full jitter is applied by whoever uses it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    multiplier: f64,
}

impl Backoff {
    pub fn try_new(initial: Duration, max: Duration, multiplier: f64) -> Result<Self, String> {
        if initial > max {
            return Err(format!(
                "backoff_initial ({}) is greater than backoff_max ({})",
                humantime::format_duration(initial),
                humantime::format_duration(max)
            ));
        }
        if !(multiplier.is_finite() && multiplier >= 1.0) {
            return Err(format!(
                "backoff_multiplier must be a finite number >= 1.0, got {multiplier}"
            ));
        }
        Ok(Self {
            initial,
            max,
            multiplier,
        })
    }

    pub fn initial(&self) -> Duration {
        self.initial
    }

    pub fn max(&self) -> Duration {
        self.max
    }

    pub fn multiplier(&self) -> f64 {
        self.multiplier
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub kind: ProbeKind,
    pub interval: Duration,
    pub timeout: Duration,
    pub success_threshold: NonZeroU32,
    pub failure_threshold: NonZeroU32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeKind {
    /// GET this path on the instance; 2xx passes.
    Http { path: String },
    /// Connect to the instance's port.
    Tcp,
    /// Run this program; exit 0 within the timeout passes.
    Exec { argv: Vec<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct CircuitBreaker {
    pub failures: NonZeroU32,
    pub open_for: Duration,
    pub max_open_for: Duration,
    pub half_open_requests: NonZeroU32,
    pub trip_on_5xx: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StopConfig {
    pub hooks: Vec<StopHook>,
    pub signal: Signal,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopHook {
    /// An HTTP method token, uppercase.
    pub method: String,
    pub path: String,
    pub timeout: Duration,
    /// A 2xx answer means the app exits by itself: wait `stop.timeout` for
    /// it before sending the signal.
    pub expect_exit: bool,
}
