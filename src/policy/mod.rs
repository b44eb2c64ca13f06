//! MCP call policy, in the order every `tools/call` meets it: kill switch →
//! rate limit → access (RBAC) → (the circuit breaker, the gateway's own
//! stage, last). Each stage is a small module tested alone; [`Pipeline`]
//! applies them in that order and returns the first refusal as a typed
//! [`Refusal`] that carries its JSON-RPC code and audit status.
//!
//! Built from plain data ([`PolicySpec`]: names, globs, limits), so the MCP
//! gateway's config model converts into it with a small adapter.

pub mod access;
pub mod kill;
pub mod mcp;
pub mod rate;

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::time::Instant;

use crate::audit::CallStatus;
pub use access::{Access, AccessError};
pub use kill::{KillSwitches, Target};
pub use rate::{Limit, Limited, RateLimits};

/// JSON-RPC error codes (INTERFACES.md "MCP gateway").
pub mod code {
    /// Unknown tool, or one the caller may not call (indistinguishable).
    pub const INVALID_PARAMS: i64 = -32602;
    pub const KILLED: i64 = -32010;
    pub const RATE_LIMITED: i64 = -32011;
}

/// The policy as written in the config.
#[derive(Debug, Clone, Default)]
pub struct PolicySpec {
    /// Between server and tool in exposed names (`[mcp] separator`).
    pub separator: String,
    /// `[mcp] kill_switch`.
    pub kill_all: bool,
    pub servers: Vec<ServerSpec>,
    pub clients: Vec<ClientSpec>,
    pub roles: Vec<RoleSpec>,
}

#[derive(Debug, Clone)]
pub struct ServerSpec {
    pub name: String,
    /// `[mcp.servers.X] killed`.
    pub killed: bool,
    pub rate_limit: Option<Limit>,
}

#[derive(Debug, Clone)]
pub struct ClientSpec {
    pub name: String,
    pub roles: Vec<String>,
    pub rate_limit: Option<Limit>,
}

#[derive(Debug, Clone)]
pub struct RoleSpec {
    pub name: String,
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

/// One `tools/call` as policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub client: &'a str,
    pub server: &'a str,
    /// The exposed name (`SERVER__TOOL`).
    pub tool: &'a str,
}

/// Why a call was refused before reaching the breaker.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("kill switch engaged for {target}")]
    Killed { target: String },
    #[error("rate limited; retry after {retry_after_ms} ms")]
    RateLimited { retry_after_ms: u64 },
    /// Answered exactly like an unknown tool; audited as `denied`.
    #[error("unknown tool: {tool}")]
    Denied { tool: String },
}

impl Refusal {
    /// The JSON-RPC `error.code`.
    pub fn code(&self) -> i64 {
        match self {
            Self::Killed { .. } => code::KILLED,
            Self::RateLimited { .. } => code::RATE_LIMITED,
            Self::Denied { .. } => code::INVALID_PARAMS,
        }
    }

    /// The `status` of its audit row.
    pub fn status(&self) -> CallStatus {
        match self {
            Self::Killed { .. } => CallStatus::Killed,
            Self::RateLimited { .. } => CallStatus::RateLimited,
            Self::Denied { .. } => CallStatus::Denied,
        }
    }

    /// The JSON-RPC `error.data`. For `Denied` the gateway must answer with
    /// its own unknown-tool error instead, so the two cannot be told apart.
    pub fn data(&self) -> serde_json::Value {
        match self {
            Self::Killed { target } => serde_json::json!({"reason": "killed", "target": target}),
            Self::RateLimited { retry_after_ms } => {
                serde_json::json!({"reason": "rate_limited", "retry_after_ms": retry_after_ms})
            }
            Self::Denied { .. } => serde_json::json!({"reason": "unknown_tool"}),
        }
    }
}

/// Kill switch → rate limit → access, as one call.
#[derive(Debug)]
pub struct Pipeline {
    pub separator: String,
    servers: BTreeSet<String>,
    /// The switches the config engaged (`kill_switch`, `killed`).
    initial: BTreeSet<Target>,
    /// Shared with the pipelines reloads build from this one.
    kill: Arc<KillSwitches>,
    rate: RateLimits,
    access: Access,
}

impl Pipeline {
    pub fn new(spec: &PolicySpec, now: Instant) -> Result<Self, AccessError> {
        let mut initial: Vec<Target> = spec
            .servers
            .iter()
            .filter(|s| s.killed)
            .map(|s| Target::Server(s.name.clone()))
            .collect();
        if spec.kill_all {
            initial.push(Target::All);
        }
        let rate = RateLimits::new(
            spec.servers
                .iter()
                .filter_map(|s| Some((s.name.clone(), s.rate_limit?))),
            spec.clients
                .iter()
                .filter_map(|c| Some((c.name.clone(), c.rate_limit?))),
            now,
        );
        let access = Access::new(
            spec.roles
                .iter()
                .map(|r| (r.name.clone(), r.allow.clone(), r.deny.clone())),
            spec.clients
                .iter()
                .map(|c| (c.name.clone(), c.roles.clone())),
        )?;
        Ok(Self {
            separator: spec.separator.clone(),
            servers: spec.servers.iter().map(|s| s.name.clone()).collect(),
            initial: initial.iter().cloned().collect(),
            kill: Arc::new(KillSwitches::new(initial)),
            rate,
            access,
        })
    }

    /// The stages in order; the first refusal wins. `Ok`: on to the breaker.
    pub fn admit(&self, call: Call<'_>, now: Instant) -> Result<(), Refusal> {
        if let Some(target) = self.kill.stopping(call.server, call.tool) {
            return Err(Refusal::Killed {
                target: target.name().to_string(),
            });
        }
        if let Err(limited) = self.rate.admit(call.server, call.client, now) {
            return Err(Refusal::RateLimited {
                retry_after_ms: limited.retry_after_ms(),
            });
        }
        if !self.access.allows(call.client, call.tool) {
            return Err(Refusal::Denied {
                tool: call.tool.to_string(),
            });
        }
        Ok(())
    }

    /// For a reload: the pipeline for `spec`, sharing this one's kill
    /// switches (a switch engaged meanwhile, on either, holds for both).
    /// Switches engaged at runtime stay engaged while their server exists; the
    /// ones the config sets follow the new config. Buckets start afresh.
    pub fn reconfigure(&self, spec: &PolicySpec, now: Instant) -> Result<Self, AccessError> {
        let mut new = Self::new(spec, now)?;
        for gone in self.initial.difference(&new.initial) {
            self.kill.clear(gone);
        }
        for target in self.kill.targets() {
            if new.target(target.name()).is_err() {
                self.kill.clear(&target);
            }
        }
        for target in &new.initial {
            self.kill.engage(target.clone());
        }
        new.kill = self.kill.clone();
        Ok(new)
    }

    /// Parses a kill/unkill target (`*`, `SERVER`, `SERVER__TOOL`).
    pub fn target(&self, text: &str) -> Result<Target, String> {
        Target::parse(text, &self.separator, &self.servers)
    }

    pub fn kill_switches(&self) -> &KillSwitches {
        &self.kill
    }

    /// The tools `client` may call (`tools/list`).
    pub fn visible<'t>(
        &self,
        client: &str,
        tools: impl IntoIterator<Item = &'t str>,
    ) -> Vec<&'t str> {
        self.access.visible(client, tools)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// Server `s` at 1 call/s; alice may call only `s__ok`.
    fn pipeline(now: Instant) -> Pipeline {
        Pipeline::new(&spec(), now).unwrap()
    }

    fn spec() -> PolicySpec {
        PolicySpec {
            separator: "__".into(),
            kill_all: false,
            servers: vec![ServerSpec {
                name: "s".into(),
                killed: false,
                rate_limit: Some(Limit {
                    calls: 1,
                    per: Duration::from_secs(1),
                }),
            }],
            clients: vec![ClientSpec {
                name: "alice".into(),
                roles: vec!["r".into()],
                rate_limit: None,
            }],
            roles: vec![RoleSpec {
                name: "r".into(),
                allow: vec!["s__ok".into()],
                deny: vec![],
            }],
        }
    }

    fn call(tool: &str) -> Call<'_> {
        Call {
            client: "alice",
            server: "s",
            tool,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn kill_switch_comes_before_rate_limit_before_access() {
        let now = Instant::now();
        let p = pipeline(now);
        // A denied tool, killed and over the limit would all refuse: kill wins.
        p.kill_switches().engage(Target::All);
        let refused = p.admit(call("s__secret"), now).unwrap_err();
        assert_eq!(refused.code(), code::KILLED);
        assert_eq!(refused.status(), CallStatus::Killed);
        // A killed call takes no token: after unkill the bucket is still full.
        p.kill_switches().clear(&Target::All);
        // Denied but a token is there: the token goes, then access refuses.
        let refused = p.admit(call("s__secret"), now).unwrap_err();
        assert_eq!(
            refused,
            Refusal::Denied {
                tool: "s__secret".into()
            }
        );
        assert_eq!(refused.code(), code::INVALID_PARAMS);
        // Now over the limit and denied: rate limit wins.
        let refused = p.admit(call("s__secret"), now).unwrap_err();
        assert_eq!(
            refused,
            Refusal::RateLimited {
                retry_after_ms: 1000
            }
        );
        assert_eq!(refused.code(), code::RATE_LIMITED);
        assert_eq!(refused.data()["retry_after_ms"], 1000);
        // Over the limit, allowed: still rate limited.
        assert!(matches!(
            p.admit(call("s__ok"), now),
            Err(Refusal::RateLimited { .. })
        ));
        // Killed server, over the limit: killed.
        p.kill_switches().engage(p.target("s").unwrap());
        let refused = p.admit(call("s__ok"), now).unwrap_err();
        assert_eq!(refused, Refusal::Killed { target: "s".into() });
        p.kill_switches().clear(&Target::Server("s".into()));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(p.admit(call("s__ok"), Instant::now()), Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_rebuilt_pipeline_keeps_the_engaged_switches() {
        let now = Instant::now();
        let old = pipeline(now);
        old.kill_switches().engage(Target::Tool("s__ok".into()));
        old.kill_switches().engage(Target::All);
        let spec = spec();
        let new = old.reconfigure(&spec, now).unwrap();
        assert_eq!(new.kill_switches().engaged(), vec!["*", "s__ok"]);
        // One set of switches: an unkill on the old one (a call that was
        // under way during the reload) holds for the new one.
        old.kill_switches().clear(&Target::All);
        assert_eq!(new.kill_switches().engaged(), vec!["s__ok"]);
        // A server the new config no longer has: its switch goes with it.
        let spec = PolicySpec {
            separator: "__".into(),
            ..Default::default()
        };
        old.kill_switches().engage(Target::All);
        let empty = new.reconfigure(&spec, now).unwrap();
        assert_eq!(empty.kill_switches().engaged(), vec!["*"]);
        // A switch the old config set and the new one does not: released.
        let mut spec = PolicySpec {
            separator: "__".into(),
            kill_all: true,
            ..Default::default()
        };
        let killed_by_config = Pipeline::new(&spec, now).unwrap();
        spec.kill_all = false;
        let new = killed_by_config.reconfigure(&spec, now).unwrap();
        assert!(new.kill_switches().engaged().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn config_initializes_the_switches() {
        let mut spec = PolicySpec {
            separator: "__".into(),
            kill_all: true,
            ..Default::default()
        };
        spec.servers.push(ServerSpec {
            name: "t".into(),
            killed: true,
            rate_limit: None,
        });
        let p = Pipeline::new(&spec, Instant::now()).unwrap();
        assert_eq!(p.kill_switches().engaged(), vec!["*", "t"]);
        p.kill_switches().clear(&Target::All);
        let c = Call {
            client: "x",
            server: "t",
            tool: "t__a",
        };
        assert_eq!(
            p.admit(c, Instant::now()),
            Err(Refusal::Killed { target: "t".into() })
        );
    }
}
