//! Raw serde types: the configuration file exactly as written.
//!
//! Every table denies unknown keys, and every value that validation may
//! complain about is `Spanned`, so an error can point at its line and column.
//! Defaults live in `validate.rs`, not here: an absent key stays `None`, which
//! lets validation tell "not written" from "written with the default value".

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

pub type S<T> = Spanned<T>;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub gateway: Option<S<RawGateway>>,
    pub admin: Option<S<RawAdmin>>,
    pub runtime: Option<S<RawRuntime>>,
    #[serde(default)]
    pub apps: BTreeMap<S<String>, S<RawApp>>,
    pub audit: Option<S<super::audit::RawAudit>>,
    pub mcp: Option<S<super::raw_mcp::RawMcp>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateway {
    pub listen: Option<S<Vec<S<String>>>>,
    pub drain_timeout: Option<S<String>>,
    pub drain_delay: Option<S<String>>,
    pub stream_grace: Option<S<String>>,
    pub header_read_timeout: Option<S<String>>,
    pub upstream_connect_timeout: Option<S<String>>,
    pub upstream_response_timeout: Option<S<String>>,
    pub max_connections: Option<S<i64>>,
    pub max_header_bytes: Option<S<i64>>,
    pub access_log: Option<bool>,
    pub client_idle_timeout: Option<S<String>>,
    pub upstream_idle_timeout: Option<S<String>>,
    pub http2_max_concurrent_streams: Option<S<i64>>,
    pub max_upstream_connections: Option<S<i64>>,
    pub worker_cpu_affinity: Option<RawCpuAffinity>,
    pub tls: Option<S<super::tls::RawTls>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub listen: Option<S<String>>,
    pub tokens: Option<S<Vec<S<String>>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRuntime {
    pub dir: Option<S<String>>,
    pub state_dir: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawCommand {
    Argv(Vec<String>),
    Line(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawBalance {
    RoundRobin,
    LeastInFlight,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawCpuAffinity {
    Off,
    Auto,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawDependsOn {
    Started,
    Ready,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawApp {
    pub routes: Option<S<Vec<S<RawRoute>>>>,
    pub command: Option<S<RawCommand>>,
    pub shell: Option<bool>,
    pub working_dir: Option<S<String>>,
    pub env: Option<BTreeMap<S<String>, S<String>>>,
    pub env_file: Option<S<String>>,
    pub instances: Option<S<i64>>,
    pub port: Option<S<i64>>,
    pub required: Option<bool>,
    pub depends_on: Option<BTreeMap<S<String>, S<RawDependsOn>>>,
    pub balance: Option<RawBalance>,
    pub upstreams: Option<S<Vec<S<String>>>>,
    pub restart: Option<S<RawRestart>>,
    pub startup: Option<S<RawProbe>>,
    pub readiness: Option<S<RawProbe>>,
    pub liveness: Option<S<RawProbe>>,
    pub circuit_breaker: Option<S<RawCircuitBreaker>>,
    pub stop: Option<S<RawStop>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub host: Option<S<String>>,
    pub path: Option<S<String>>,
    pub strip_prefix: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawRestartPolicy {
    Always,
    // ARCHITECTURE.md spells it `on-failure`; accept both spellings.
    #[serde(alias = "on-failure")]
    OnFailure,
    Never,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRestart {
    pub policy: Option<RawRestartPolicy>,
    pub backoff_initial: Option<S<String>>,
    pub backoff_max: Option<S<String>>,
    pub backoff_multiplier: Option<S<f64>>,
    pub max_restarts: Option<S<i64>>,
    pub window: Option<S<String>>,
    pub reset_after: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    pub http: Option<S<String>>,
    pub tcp: Option<S<bool>>,
    pub exec: Option<S<Vec<String>>>,
    pub interval: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub success_threshold: Option<S<i64>>,
    pub failure_threshold: Option<S<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCircuitBreaker {
    pub failures: Option<S<i64>>,
    pub open_for: Option<S<String>>,
    pub max_open_for: Option<S<String>>,
    pub half_open_requests: Option<S<i64>>,
    pub trip_on_5xx: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStop {
    pub hooks: Option<Vec<S<RawStopHook>>>,
    pub signal: Option<S<String>>,
    pub timeout: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStopHook {
    pub method: Option<S<String>>,
    pub path: Option<S<String>>,
    pub timeout: Option<S<String>>,
    pub expect_exit: Option<bool>,
}
