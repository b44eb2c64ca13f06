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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::{CallStatus, Front, Policy};

    fn caller(client: &str) -> Caller {
        Caller {
            client: client.into(),
            roles: vec![],
            front: Front::Http,
            session: "s".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_config_becomes_the_pipeline_and_refusals_map_to_gateway_errors() {
        let text =
            "[mcp]\n[mcp.servers.s]\ncommand = [\"x\"]\nrate_limit = { calls = 1, per = \"1s\" }\n\
                    [mcp.servers.t]\ncommand = [\"x\"]\nkilled = true\n\
                    [mcp.clients.a]\ntoken = \"token-of-a-0123456789abcdef\"\nroles = [\"r\"]\n\
                    [mcp.roles.r]\nallow = [\"s__*\"]\ndeny = [\"s__secret\"]\n";
        let config = crate::config::from_str(text, std::path::Path::new("/h/h.toml")).unwrap();
        let mcp = config.mcp.unwrap();
        let p = McpPolicy::new(&mcp).unwrap();
        let a = caller("a");
        assert_eq!(p.engaged(), vec!["t"]);
        assert_eq!(p.admit(&a, "t", "t__x").unwrap_err().code, -32010);
        let denied = p.admit(&a, "s", "s__secret").unwrap_err();
        assert_eq!(
            denied.to_json(),
            McpError::unknown_tool("s__secret").to_json()
        );
        assert_eq!(denied.status(), CallStatus::Denied);
        let limited = p.admit(&a, "s", "s__ok").unwrap_err();
        assert_eq!(limited.code, -32011);
        assert_eq!(limited.to_json()["data"]["retry_after_ms"], 1000);
        assert!(p.visible(&a, "s__ok") && !p.visible(&a, "s__secret") && !p.visible(&a, "t__x"));
        assert!(
            p.visible(&caller("anonymous"), "t__x"),
            "no roles: everything"
        );
        assert_eq!(p.kill("s__ok", true).unwrap(), vec!["t", "s__ok"]);
        assert!(p
            .kill("nope", true)
            .unwrap_err()
            .contains("unknown MCP server `nope`"));
        // A reload with t no longer killed: its config switch goes, s__ok stays.
        let text = text.replace("killed = true\n", "");
        let next = crate::config::from_str(&text, std::path::Path::new("/h/h.toml")).unwrap();
        p.reconfigure(&next.mcp.unwrap()).unwrap();
        assert_eq!(p.engaged(), vec!["s__ok"]);
    }
}
