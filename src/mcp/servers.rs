//! The servers as a set: start, reload (add, remove after their calls,
//! replace), the shutdown halves (drain calls, stop servers), readiness
//! and the status behind `GET /v1/mcp`.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::time::Instant;

use super::catalog;
use super::hub::{lock, McpGateway, Shared};
use super::upstream::{ServerState, Upstream};
use crate::config::{McpConfig, McpServer};

/// Attempts a server gets to come up before clients stop waiting for it
/// (`settled`).
const FIRST_STARTS: u32 = 3;

impl McpGateway {
    /// What servers get from the harbor (set before the servers start):
    /// how `app` servers find a ready instance, where pid records go.
    pub fn set_host(&self, host: super::upstream::Host) {
        *self.host.write().unwrap_or_else(|p| p.into_inner()) = host;
    }

    /// Starts every configured server.
    pub fn start(&self) {
        let config = self.config();
        for server in config.servers.values() {
            self.add_server(server.clone());
        }
    }

    fn add_server(&self, config: McpServer) {
        let weak: Weak<Shared> = Arc::downgrade(&self.shared);
        let on_change = Arc::new(move || {
            if let Some(shared) = weak.upgrade() {
                shared.rebuild();
            }
        });
        let name = config.name.to_string();
        let host = self.host.read().unwrap_or_else(|p| p.into_inner()).clone();
        let upstream = Upstream::new(config, &self.logs, on_change, host);
        self.shared
            .servers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name.clone(), upstream.clone());
        let task = tokio::spawn(upstream.run());
        lock(&self.tasks).insert(name, task);
    }

    /// Stops one server (its in-flight calls answered -32015) and waits.
    async fn remove_server(&self, name: &str) {
        let upstream = self
            .shared
            .servers
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
        if let Some(u) = upstream {
            u.stop();
        }
        self.shared.rebuild();
        let task = lock(&self.tasks).remove(name);
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    /// Applies a reloaded `[mcp]`: removed servers stop (after their calls
    /// in flight finish, bounded by `drain`), added ones start, changed ones
    /// are replaced. Returns (added, removed, replaced).
    pub async fn reload(
        &self,
        next: McpConfig,
        drain: Duration,
    ) -> (Vec<String>, Vec<String>, Vec<String>) {
        let old = self.config();
        *self
            .shared
            .config
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Arc::new(next.clone());
        let (mut added, mut removed, mut replaced) = (Vec::new(), Vec::new(), Vec::new());
        for (name, server) in &old.servers {
            match next.servers.get(name) {
                None => removed.push(name.to_string()),
                Some(new) if new != server => replaced.push(name.to_string()),
                Some(_) => {}
            }
        }
        for name in next.servers.keys() {
            if !old.servers.contains_key(name) {
                added.push(name.to_string());
            }
        }
        for name in removed.iter().chain(&replaced) {
            if let Some(u) = self.server(name) {
                let deadline = Instant::now() + drain;
                while u.conn().is_some_and(|c| c.in_flight() > 0) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            self.remove_server(name).await;
        }
        for name in added.iter().chain(&replaced) {
            let server = next
                .servers
                .values()
                .find(|s| s.name.as_str() == name)
                .cloned();
            if let Some(server) = server {
                self.add_server(server);
            }
        }
        self.shared.rebuild();
        if let Err(e) = self.policy().reconfigure(&next) {
            tracing::error!(event = "mcp_policy_not_reloaded", error = %e);
        }
        (added, removed, replaced)
    }

    /// Shutdown, first half: refuse new calls, wait for those in flight
    /// (at most until `deadline`). Returns whether they all finished.
    pub async fn drain(&self, deadline: Instant) -> bool {
        self.accepting.store(false, Ordering::Release);
        loop {
            let idle = self.idle.notified();
            if self.in_flight.load(Ordering::Acquire) == 0 {
                return true;
            }
            tokio::select! {
                _ = idle => {}
                _ = tokio::time::sleep_until(deadline) => return self.in_flight.load(Ordering::Acquire) == 0,
            }
        }
    }

    /// Shutdown, second half: stop every server (stop ladders in parallel).
    pub async fn stop_servers(&self) {
        for server in self.servers() {
            server.stop();
        }
        let tasks: Vec<_> = lock(&self.tasks).drain().map(|(_, t)| t).collect();
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Waits (at most `limit`) until no configured server is still coming
    /// up for the first time — not started yet, starting, or restarting
    /// after a first start that
    /// failed (a slow start on a loaded machine can run into its
    /// handshake timeout), up to [`FIRST_STARTS`] attempts — so a client
    /// that lists tools right after connecting sees every server that can
    /// start. A server that never comes up delays only the first clients.
    pub async fn settled(&self, limit: Duration) {
        let mut changes = self.shared.changes.subscribe();
        let deadline = Instant::now() + limit;
        loop {
            // A configured server not started yet counts too: the front
            // can take its first call before the harbor starts the servers.
            let config = self.config();
            let first_start = config.servers.keys().any(|name| {
                self.server(name.as_str()).is_none_or(|s| {
                    let snap = s.snapshot();
                    matches!(snap.state, ServerState::Starting | ServerState::Restarting)
                        && snap.protocol.is_none()
                        && snap.restarts < FIRST_STARTS
                })
            });
            if !first_start {
                return;
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = tokio::time::sleep_until(deadline) => return,
            }
        }
    }

    /// Why `/ready` must wait: required servers that are not ready.
    /// Required servers by the config, so one not started yet counts too.
    pub fn not_ready(&self) -> Vec<String> {
        let config = self.config();
        let required = config.servers.values().filter(|s| s.required);
        required
            .filter_map(|s| {
                let state = self.server(s.name.as_str()).map(|u| u.snapshot().state);
                let state = state.map_or("starting", ServerState::name);
                (state != "ready").then(|| format!("mcp server {} is {state}", s.name))
            })
            .collect()
    }

    /// The data behind `GET /v1/mcp`.
    pub fn status(&self) -> Value {
        let config = self.config();
        let now = Instant::now();
        let servers: Vec<Value> = self
            .servers()
            .iter()
            .map(|s| {
                let snap = s.snapshot();
                let breaker = lock(&s.breaker).state(now);
                let tools = catalog::rename_items(&snap.lists.tools, s.name(), &config.separator, &s.config.tools);
                json!({
                    "name": s.name(),
                    "transport": match &s.config.transport {
                        crate::config::McpTransport::Stdio(_) => "stdio",
                        crate::config::McpTransport::Http { .. } => "http",
                        crate::config::McpTransport::App { .. } => "app",
                    },
                    "state": snap.state.name(),
                    "required": s.config.required,
                    "breaker": breaker.name(),
                    "tools": tools.len(),
                    "tool_names": tools.iter().filter_map(|t| t["name"].as_str()).collect::<Vec<_>>(),
                    "restarts": snap.restarts,
                    "pid": snap.pid,
                    "protocol": snap.protocol,
                    "in_flight": s.conn().map_or(0, |c| c.in_flight()),
                    "reason": snap.reason,
                    "killed": s.config.killed,
                })
            })
            .collect();
        json!({
            "servers": servers,
            "kill_switch": config.kill_switch,
            "kill_switches": self.policy().engaged(),
            "in_flight": self.in_flight.load(Ordering::Acquire),
            "accepting": self.accepting.load(Ordering::Acquire),
        })
    }
}
