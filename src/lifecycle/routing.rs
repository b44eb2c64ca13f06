//! Where the supervisor and the gateway meet: instance states in, route
//! table snapshots out, published by one function on every path. Ready managed instances and ready external upstreams
//! are routable; everything else is not.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::harbor::{lock, HarborCtx};
use crate::config::{AppKind, AppName, Config};
use crate::gateway::{Gateway, RouteTable, Upstream};
use crate::health::upstreams::ExternalHealth;
use crate::supervisor::state::State;
use crate::supervisor::Supervisor;

/// A route table for the current instance states.
pub fn table(
    config: &Config,
    supervisor: &Supervisor,
    externals: &ExternalHealth,
    gateway: &Gateway,
) -> RouteTable {
    let upstream = |app: &AppName, label: String, addr: SocketAddr| {
        gateway.upstream(app, &label, addr, &config.apps[app].circuit_breaker)
    };
    let mut upstreams: HashMap<AppName, Vec<Upstream>> = HashMap::new();
    for st in supervisor.snapshot() {
        if let (State::Ready, Some(port), true) =
            (&st.state, st.port, config.apps.contains_key(&st.id.app))
        {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let app = &st.id.app;
            let ready = upstream(app, st.id.to_string(), addr);
            upstreams.entry(app.clone()).or_default().push(ready);
        }
    }
    for (name, app) in &config.apps {
        if let AppKind::External { upstreams: addrs } = &app.kind {
            let ready = addrs.iter().filter_map(|addr| {
                let label = ExternalHealth::label(name.as_str(), *addr);
                externals
                    .get(&label)
                    .ready
                    .then(|| upstream(name, label, *addr))
            });
            upstreams.entry(name.clone()).or_default().extend(ready);
        }
    }
    for list in upstreams.values_mut() {
        list.sort_by(|a, b| a.label.cmp(&b.label));
    }
    let shared = gateway.apps_shared(config.apps.keys().cloned());
    RouteTable::build(config, &upstreams, &shared)
}

impl HarborCtx {
    /// The one publisher of route tables. Loading the config, building and
    /// storing happen under one lock, so a rebuild that starts later always
    /// publishes later: a stale table cannot overwrite a newer one.
    pub(super) fn publish_routes(&self) {
        let _one = lock(&self.routes);
        let config = self.config.load();
        let (supervisor, externals) = (&self.supervisor, &self.externals);
        self.gateway
            .update(table(&config, supervisor, externals, &self.gateway));
    }
}

/// Publishes the current table now, then returns a task body that rebuilds
/// it on every instance or upstream readiness change until `cancel`.
/// Subscribing before the first build means no change falls between the two.
pub(super) fn keep_updated(
    h: Arc<HarborCtx>,
    cancel: CancellationToken,
) -> impl std::future::Future<Output = ()> {
    let mut changes = h.supervisor.subscribe();
    let mut upstream_changes = h.externals.changes();
    h.publish_routes();
    async move {
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(_) | Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
                changed = upstream_changes.changed() => if changed.is_err() { return },
                _ = cancel.cancelled() => return,
            }
            h.publish_routes();
        }
    }
}
