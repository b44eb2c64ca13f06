//! The policy stages plugged into the MCP gateway: [`PolicySpec`] from
//! `[mcp]` (servers' `killed`/`rate_limit`, clients, roles), and
//! [`McpPolicy`], the gateway's [`crate::mcp::Policy`] over one
//! [`Pipeline`], swapped on reload with the runtime-engaged switches kept.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;

use super::{Call, ClientSpec, Limit, Pipeline, PolicySpec, Refusal, RoleSpec, ServerSpec};
use crate::config::{McpConfig, RateLimit};
use crate::mcp::{Caller, McpError};

fn limit(r: &Option<RateLimit>) -> Option<Limit> {
    r.as_ref().map(|r| Limit {
        calls: r.calls.get(),
        per: r.per,
    })
}

impl From<&McpConfig> for PolicySpec {
    fn from(c: &McpConfig) -> Self {
        Self {
            separator: c.separator.clone(),
            kill_all: c.kill_switch,
            servers: c
                .servers
                .values()
                .map(|s| ServerSpec {
                    name: s.name.to_string(),
                    killed: s.killed,
                    rate_limit: limit(&s.rate_limit),
                })
                .collect(),
            clients: c
                .clients
                .iter()
                .map(|(name, cl)| ClientSpec {
                    name: name.clone(),
                    roles: cl.roles.clone(),
                    rate_limit: limit(&cl.rate_limit),
                })
                .collect(),
            roles: c
                .roles
                .iter()
                .map(|(name, r)| RoleSpec {
                    name: name.clone(),
                    allow: r.allow.clone(),
                    deny: r.deny.clone(),
                })
                .collect(),
        }
    }
}

/// Kill switch → rate limit → access for the gateway; the breaker follows
/// in the gateway's own call path.
pub struct McpPolicy(ArcSwap<Pipeline>);

impl McpPolicy {
    pub fn new(config: &McpConfig) -> anyhow::Result<Arc<Self>> {
        let pipeline = Pipeline::new(&PolicySpec::from(config), Instant::now())?;
        Ok(Arc::new(Self(ArcSwap::from_pointee(pipeline))))
    }
}

impl crate::mcp::Policy for McpPolicy {
    fn admit(&self, caller: &Caller, server: &str, tool: &str) -> Result<(), McpError> {
        let call = Call {
            client: &caller.client,
            server,
            tool,
        };
        self.0
            .load()
            .admit(call, Instant::now())
            .map_err(|refusal| match refusal {
                Refusal::Killed { target } => McpError::killed(&target),
                Refusal::RateLimited { retry_after_ms } => {
                    McpError::rate_limited(Duration::from_millis(retry_after_ms))
                }
                Refusal::Denied { tool } => McpError::denied(&tool),
            })
    }

    fn visible(&self, caller: &Caller, tool: &str) -> bool {
        !self.0.load().visible(&caller.client, [tool]).is_empty()
    }

    fn kill(&self, target: &str, engage: bool) -> Result<Vec<String>, String> {
        let pipeline = self.0.load();
        let target = pipeline.target(target)?;
        let switches = pipeline.kill_switches();
        if engage {
            switches.engage(target);
        } else {
            switches.clear(&target);
        }
        Ok(switches.engaged())
    }

    fn engaged(&self) -> Vec<String> {
        self.0.load().kill_switches().engaged()
    }

    fn reconfigure(&self, config: &McpConfig) -> Result<(), String> {
        let spec = PolicySpec::from(config);
        let new = self
            .0
            .load()
            .reconfigure(&spec, Instant::now())
            .map_err(|e| e.to_string())?;
        self.0.store(Arc::new(new));
        Ok(())
    }
}
