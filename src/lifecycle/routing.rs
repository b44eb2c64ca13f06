//! Where the supervisor and the gateway meet: instance states in, route
//! table snapshots out. Ready managed instances and external upstreams are
//! routable; everything else is not.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::config::{AppKind, AppName, Config};
use crate::gateway::{Gateway, RouteTable, Upstream};
use crate::supervisor::state::State;
use crate::supervisor::Supervisor;

/// A route table for the current instance states.
pub fn table(config: &Config, supervisor: &Supervisor, gateway: &Gateway) -> RouteTable {
    let mut upstreams: HashMap<AppName, Vec<Upstream>> = HashMap::new();
    for st in supervisor.snapshot() {
        if let (State::Ready, Some(port)) = (&st.state, st.port) {
            let label = format!("{}#{}", st.app, st.index);
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
            let counter = gateway.upstream_counter(&label);
            upstreams
                .entry(st.app.clone())
                .or_default()
                .push(Upstream::new(label, addr, counter));
        }
    }
    for (name, app) in &config.apps {
        if let AppKind::External { upstreams: addrs } = &app.kind {
            let list = addrs
                .iter()
                .map(|addr| {
                    let label = format!("{name}@{addr}");
                    let counter = gateway.upstream_counter(&label);
                    Upstream::new(label, *addr, counter)
                })
                .collect();
            upstreams.insert(name.clone(), list);
        }
    }
    for list in upstreams.values_mut() {
        list.sort_by(|a, b| a.label.cmp(&b.label));
    }
    let shared = gateway.apps_shared(config.apps.keys().cloned());
    RouteTable::build(config, &upstreams, &shared)
}

/// Publishes the current table now, then returns a task body that rebuilds
/// it on every instance state change until `cancel`. Subscribing before the
/// first build means no change falls between the two.
pub fn keep_updated(
    config: Arc<Config>,
    supervisor: Supervisor,
    gateway: Arc<Gateway>,
    cancel: CancellationToken,
) -> impl std::future::Future<Output = ()> {
    let mut changes = supervisor.subscribe();
    gateway.update(table(&config, &supervisor, &gateway));
    async move {
        loop {
            tokio::select! {
                change = changes.recv() => match change {
                    Ok(_) | Err(RecvError::Lagged(_)) => gateway.update(table(&config, &supervisor, &gateway)),
                    Err(RecvError::Closed) => return,
                },
                _ = cancel.cancelled() => return,
            }
        }
    }
}
