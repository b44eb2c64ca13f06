//! Raw serde types of the `[mcp]` table, exactly as written (see `raw.rs`
//! for the conventions: unknown keys denied, values `Spanned`, no defaults).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::raw::{RawCircuitBreaker, RawRestart, RawRoute, S};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMcp {
    pub routes: Option<S<Vec<S<RawRoute>>>>,
    pub separator: Option<S<String>>,
    pub call_timeout: Option<S<String>>,
    pub stdio_client: Option<S<String>>,
    pub allowed_origins: Option<S<Vec<S<String>>>>,
    pub kill_switch: Option<bool>,
    #[serde(default)]
    pub servers: BTreeMap<S<String>, S<RawMcpServer>>,
    #[serde(default)]
    pub clients: BTreeMap<S<String>, S<RawMcpClient>>,
    #[serde(default)]
    pub roles: BTreeMap<S<String>, S<RawMcpRole>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMcpServer {
    pub command: Option<S<Vec<String>>>,
    pub url: Option<S<String>>,
    pub app: Option<S<String>>,
    pub path: Option<S<String>>,
    pub headers: Option<BTreeMap<S<String>, S<String>>>,
    pub env: Option<BTreeMap<S<String>, S<String>>>,
    pub working_dir: Option<S<String>>,
    pub tools: Option<S<Vec<S<String>>>>,
    pub killed: Option<bool>,
    pub required: Option<bool>,
    pub restart: Option<S<RawRestart>>,
    pub circuit_breaker: Option<S<RawCircuitBreaker>>,
    pub rate_limit: Option<S<RawRateLimit>>,
    pub stop: Option<S<RawMcpStop>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub calls: Option<S<i64>>,
    pub per: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMcpStop {
    pub timeout: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMcpClient {
    pub token: Option<S<String>>,
    pub roles: Option<S<Vec<S<String>>>>,
    pub rate_limit: Option<S<RawRateLimit>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMcpRole {
    pub allow: Option<S<Vec<S<String>>>>,
    pub deny: Option<S<Vec<S<String>>>>,
}
