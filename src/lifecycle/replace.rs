//! The one blue-green replacement, used by reload (a changed app) and by
//! rolling restart: start new instances → every one ready before the
//! deadline → route → retire the old ones (no new requests) → drain them by
//! count (`drain_timeout`) → stop → forget their per-upstream state.
//!
//! A replacement that is not ready in time is stopped and the old instances
//! keep serving; nothing else changed. Peak: the old instances plus
//! `instances` new ones, never more.

use tokio::time::Instant;

use super::harbor::HarborCtx;
use crate::admin::HarborError;
use crate::config::{AppConfig, AppKind};

impl HarborCtx {
    /// Replaces `app`'s instances with ones running its definition `app`.
    /// An app with no instance (never started, or waiting) is started:
    /// `force` starts it whatever its dependencies (`restart`); otherwise
    /// it waits for them like at startup (`reload`).
    pub(super) async fn replace(
        &self,
        app: &AppConfig,
        deadline: Instant,
        force: bool,
    ) -> Result<(), HarborError> {
        let name = &app.name;
        let AppKind::Managed(_) = &app.kind else {
            // External: swap the monitors.
            self.externals.watch_app(name, app, &self.cancel);
            tracing::info!(event = "app_replaced", app = %name);
            return Ok(());
        };
        let old = self.supervisor.ids(name);
        if old.is_empty() && !force {
            self.supervisor.start_app(app);
            return Ok(());
        }
        let fresh = self.supervisor.start_now(app);
        if let Err(not_ready) = self.supervisor.wait_ready(&fresh, deadline).await {
            if !old.is_empty() {
                for id in &fresh {
                    self.supervisor.stop_instance(id).await;
                }
                self.publish_routes();
            }
            return Err(not_ready.into());
        }
        // The new instances are routable before the old ones leave.
        self.publish_routes();
        let drain = Instant::now() + self.config.load().gateway.drain_timeout;
        let retire = old.iter().map(|id| async move {
            let label = id.to_string();
            if !self.gateway.retire(&label, drain).await {
                let cut = self.gateway.upstream_in_flight(&label);
                tracing::warn!(event = "app_drain_timeout", app = %name, instance = %label, cut);
            }
            self.supervisor.stop_instance(id).await;
            self.gateway.forget_upstream(&label);
        });
        futures_util::future::join_all(retire).await;
        self.publish_routes();
        let new: Vec<String> = fresh.iter().map(|id| id.to_string()).collect();
        tracing::info!(event = "app_replaced", app = %name, instances = %new.join(", "));
        Ok(())
    }
}
