//! The MCP gateway as a component of the harbor: built with the config,
//! mounted on the gateway listeners at launch, servers started with the
//! apps, drained with the gateway (fronts stop taking calls, in-flight
//! calls finish), servers stopped before the apps, reloaded with the config.

use std::sync::Arc;

use tokio::time::Instant;

use super::HarborCtx;
use crate::config::Config;
use crate::mcp::front_http::{Door, HttpFront, MountedFront};
use crate::mcp::McpGateway;

/// The MCP gateway for `config`, when it has `[mcp]`.
pub(super) fn gateway_for(config: &Config) -> Option<Arc<McpGateway>> {
    let mcp = config.mcp.clone()?;
    Some(McpGateway::new(mcp, &config.runtime.state_dir.join("logs")))
}

impl HarborCtx {
    /// The MCP gateway, when the config has `[mcp]`.
    pub fn mcp(&self) -> Option<&Arc<McpGateway>> {
        self.mcp.as_ref()
    }

    /// The policy stages (kill switch → rate limit → access) and the audit
    /// log plugged into the gateway, before it takes any call.
    pub(super) fn plug_mcp_policy_and_audit(&self) -> anyhow::Result<()> {
        if let Some(mcp) = &self.mcp {
            mcp.set_policy(crate::policy::mcp::McpPolicy::new(&mcp.config())?);
            let sink: Arc<dyn crate::mcp::AuditSink> = match self.audit.get() {
                Some(audit) => Arc::new(audit.clone()),
                None => Arc::new(crate::mcp::audit::NoAudit),
            };
            mcp.set_audit(Arc::new(crate::metrics::mcp::Counted {
                inner: sink,
                metrics: self.metrics.clone(),
                gateway: Arc::downgrade(mcp),
            }));
        }
        Ok(())
    }

    pub(super) fn mount_mcp(&self) {
        if let Some(mcp) = &self.mcp {
            let front = HttpFront::new(mcp.clone(), Door::Gateway, self.mcp_closing.clone());
            self.gateway.mount(Some(Arc::new(MountedFront(front))));
            let supervisor = self.supervisor.clone();
            let apps: crate::mcp::upstream::AppResolver = Arc::new(move |app| {
                let ready = crate::supervisor::state::State::Ready;
                let instances = supervisor.snapshot_of(app).into_iter();
                instances.filter(|i| i.state == ready).find_map(|i| i.port)
            });
            mcp.set_host(crate::mcp::upstream::Host {
                apps: Some(apps),
                pids_dir: Some(self.supervisor.pids_dir().to_path_buf()),
            });
            let socket = HttpFront::new(mcp.clone(), Door::Socket, self.mcp_closing.clone());
            let _ = self.mcp_socket.set(socket);
        }
    }

    /// The MCP front `admin.sock` serves (`harbormaster mcp` bridges to it).
    pub fn mcp_socket_front(&self) -> Option<Arc<HttpFront>> {
        self.mcp_socket.get().cloned()
    }

    pub(super) fn start_mcp(&self) {
        if let Some(mcp) = &self.mcp {
            mcp.start();
        }
    }

    /// Calls in flight finish (none start); true when none is left by `deadline`.
    pub(super) async fn drain_mcp(&self, deadline: Instant) -> bool {
        match &self.mcp {
            Some(mcp) => {
                let idle = mcp.drain(deadline).await;
                if !idle {
                    tracing::warn!(
                        event = "mcp_drain_timeout",
                        "MCP calls still in flight at drain_timeout"
                    );
                }
                idle
            }
            None => true,
        }
    }

    pub(super) async fn stop_mcp_servers(&self) {
        if let Some(mcp) = &self.mcp {
            mcp.stop_servers().await;
        }
    }

    /// Servers added, removed (after their calls) and replaced by a reload.
    pub(super) async fn reload_mcp(&self, new: &Config) {
        let (Some(mcp), Some(next)) = (&self.mcp, &new.mcp) else {
            if self.mcp.is_none() != new.mcp.is_none() {
                tracing::warn!(
                    event = "reload_not_applied",
                    setting = "mcp",
                    "adding or removing the whole [mcp] table needs a restart of harbormaster"
                );
            }
            return;
        };
        let (added, removed, replaced) = mcp.reload(next.clone(), new.gateway.drain_timeout).await;
        tracing::info!(event = "mcp_reloaded", ?added, ?removed, ?replaced);
    }
}
