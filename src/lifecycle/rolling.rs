//! Rolling restart of a managed app, one instance at a time: start a
//! replacement → wait until it is ready (and routed) → retire the old one
//! (no new requests) → wait for its in-flight requests (bounded by
//! `drain_timeout`) → stop it. If a replacement fails to become ready, it is
//! stopped and the old instances keep serving.

use std::sync::Arc;

use tokio::time::Instant;

use super::routing::Router;
use crate::config::{AppKind, AppName};
use crate::supervisor::state::State;

pub async fn restart(router: Arc<Router>, app: AppName) -> Result<(), String> {
    let config = router.current.load_full();
    let (supervisor, gateway) = (&router.supervisor, &router.gateway);
    let Some(app_cfg) = config.apps.get(&app) else {
        return Err(format!("unknown app `{app}`"));
    };
    if !matches!(app_cfg.kind, AppKind::Managed(_)) {
        return Err(format!(
            "`{app}` is external: there is no process to restart"
        ));
    }
    let started = Instant::now();
    tracing::info!(event = "restart_started", app = %app);
    for old in supervisor.indexes(&app) {
        let Some((new, mut status)) = supervisor.add_instance(app_cfg) else {
            return Err(format!("`{app}` is not running"));
        };
        loop {
            let state = status.borrow_and_update().state.clone();
            match state {
                State::Ready => break,
                State::Failed { .. } | State::Exited(_) | State::Stopped => {
                    supervisor.stop_instance(&app, new).await;
                    let why = format!("replacement {app}#{new} did not become ready ({state}); {app}#{old} keeps serving");
                    tracing::error!(event = "restart_failed", app = %app, reason = %why);
                    return Err(why);
                }
                _ => {}
            }
            if status.changed().await.is_err() {
                return Err(format!("replacement {app}#{new} disappeared"));
            }
        }
        // The replacement is routable before the old instance leaves.
        router.rebuild();
        let label = format!("{app}#{old}");
        let deadline = Instant::now() + config.gateway.drain_timeout;
        if !gateway.retire(&label, deadline).await {
            tracing::warn!(event = "app_drain_timeout", app = %app, instance = %label, cut = gateway.upstream_in_flight(&label));
        }
        supervisor.stop_instance(&app, old).await;
        router.rebuild();
        gateway.forget_upstream(&label);
        tracing::info!(event = "instance_replaced", app = %app, old = %label, new = %format!("{app}#{new}"));
    }
    tracing::info!(event = "restart_complete", app = %app, duration_ms = started.elapsed().as_millis() as u64);
    Ok(())
}
