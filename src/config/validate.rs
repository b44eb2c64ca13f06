//! Raw config → [`Config`]: the top-level tables and the checks that span
//! apps (route conflicts, dependencies). Per-app checks are in `validate_app.rs`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use super::model::*;
use super::raw::*;
use super::values::{Checker, Zero};

const SECS: fn(u64) -> Duration = Duration::from_secs;

impl Checker<'_, '_> {
    pub(crate) fn config(&mut self, raw: &RawConfig, source: std::path::PathBuf) -> Config {
        let gateway = self.gateway(raw.gateway.as_ref().map(|g| g.get_ref()));
        let raw_admin = raw.admin.as_ref().map(|a| a.get_ref());
        let admin = AdminConfig {
            listen: raw_admin
                .and_then(|a| a.listen.as_ref())
                .and_then(|l| self.socket_addr(l, "admin.listen"))
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0))),
            tokens: self.tokens(raw_admin.and_then(|a| a.tokens.as_ref())),
        };
        let raw_runtime = raw.runtime.as_ref().map(|r| r.get_ref());
        let runtime = RuntimeConfig {
            dir: raw_runtime
                .and_then(|r| r.dir.as_ref())
                .map(|d| self.resolve(d.get_ref())),
            state_dir: self.resolve(
                raw_runtime
                    .and_then(|r| r.state_dir.as_ref())
                    .map_or(".harbormaster", |d| d.get_ref().as_str()),
            ),
        };

        let mut apps = BTreeMap::new();
        for (name, app) in &raw.apps {
            let key = format!("apps.{}", name.get_ref());
            let app_name = match AppName::new(name.get_ref()) {
                Ok(n) => n,
                Err(why) => {
                    self.rep.error(
                        name.span(),
                        &key,
                        format!("invalid app name \"{}\": {why}", name.get_ref()),
                        Some("rename the app, for example [apps.my-app]".into()),
                    );
                    continue;
                }
            };
            let config = self.app(app_name.clone(), app, &key);
            apps.insert(app_name, config);
        }
        self.route_conflicts(raw);
        self.dependencies(raw, &apps);
        self.port_conflicts(raw, &gateway, &admin);
        let mcp = raw.mcp.as_ref().map(|m| self.mcp(m.get_ref(), &raw.apps));

        // `[mcp]` turns the audit log on too (every tools/call is recorded).
        let audit_on = raw.audit.is_some() || raw.mcp.is_some();
        let audit = self.audit(raw.audit.as_ref(), audit_on, &runtime.state_dir);
        Config {
            source,
            gateway,
            admin,
            runtime,
            apps,
            audit,
            mcp,
        }
    }

    /// `[admin] tokens`: each one long enough to resist guessing.
    fn tokens(&mut self, raw: Option<&S<Vec<S<String>>>>) -> Vec<String> {
        let mut tokens = Vec::new();
        for (i, t) in raw
            .map(|l| l.get_ref().as_slice())
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            if t.get_ref().len() < 16 || t.get_ref().chars().any(|c| c.is_whitespace()) {
                self.rep.error(
                    t.span(),
                    format!("admin.tokens[{i}]"),
                    "an admin token must be at least 16 characters without spaces",
                    Some("use a long random value, e.g. tokens = [\"${HM_ADMIN_TOKEN}\"] with `openssl rand -hex 32`".into()),
                );
            } else {
                tokens.push(t.get_ref().clone());
            }
        }
        tokens
    }

    fn gateway(&mut self, g: Option<&RawGateway>) -> GatewayConfig {
        let default = RawGateway::default();
        let g = g.unwrap_or(&default);
        let mut listen = Vec::new();
        match &g.listen {
            None => listen.push(SocketAddr::from(([127, 0, 0, 1], 18080))),
            Some(list) if list.get_ref().is_empty() => self.rep.error(
                list.span(),
                "gateway.listen",
                "no listen address",
                Some("list at least one address, such as [\"127.0.0.1:8080\"]".into()),
            ),
            Some(list) => {
                for (i, a) in list.get_ref().iter().enumerate() {
                    let key = format!("gateway.listen[{i}]");
                    let Some(addr) = self.socket_addr(a, &key) else {
                        continue;
                    };
                    if listen.contains(&addr) && addr.port() != 0 {
                        self.rep.error(
                            a.span(),
                            &key,
                            format!("{addr} is listed twice"),
                            Some("remove the duplicate".into()),
                        );
                    }
                    listen.push(addr);
                }
            }
        }
        let d = |c: &mut Self, v: &Option<S<String>>, k: &str, default, zero| {
            c.duration(v.as_ref(), &format!("gateway.{k}"), default, zero)
        };
        GatewayConfig {
            listen: listen.clone(),
            drain_timeout: d(
                self,
                &g.drain_timeout,
                "drain_timeout",
                SECS(30),
                Zero::Allowed,
            ),
            drain_delay: d(self, &g.drain_delay, "drain_delay", SECS(0), Zero::Allowed),
            stream_grace: d(
                self,
                &g.stream_grace,
                "stream_grace",
                SECS(5),
                Zero::Allowed,
            ),
            header_read_timeout: d(
                self,
                &g.header_read_timeout,
                "header_read_timeout",
                SECS(10),
                Zero::Rejected,
            ),
            upstream_connect_timeout: d(
                self,
                &g.upstream_connect_timeout,
                "upstream_connect_timeout",
                SECS(2),
                Zero::Rejected,
            ),
            upstream_response_timeout: d(
                self,
                &g.upstream_response_timeout,
                "upstream_response_timeout",
                SECS(60),
                Zero::Rejected,
            ),
            max_connections: g
                .max_connections
                .as_ref()
                .map(|v| self.int(Some(v), "gateway.max_connections", 10_000, 1, 1_000_000)),
            max_header_bytes: self.int(
                g.max_header_bytes.as_ref(),
                "gateway.max_header_bytes",
                65_536,
                1024,
                16 << 20,
            ),
            access_log: g.access_log.unwrap_or(false),
            client_idle_timeout: d(
                self,
                &g.client_idle_timeout,
                "client_idle_timeout",
                SECS(60),
                Zero::Rejected,
            ),
            upstream_idle_timeout: d(
                self,
                &g.upstream_idle_timeout,
                "upstream_idle_timeout",
                SECS(4),
                Zero::Rejected,
            ),
            http2_max_concurrent_streams: self.int(
                g.http2_max_concurrent_streams.as_ref(),
                "gateway.http2_max_concurrent_streams",
                100,
                1,
                10_000,
            ),
            max_upstream_connections: self.int(
                g.max_upstream_connections.as_ref(),
                "gateway.max_upstream_connections",
                512,
                1,
                1_000_000,
            ),
            pin_workers: g.worker_cpu_affinity == Some(super::raw::RawCpuAffinity::Auto),
            tls: g.tls.as_ref().and_then(|t| self.tls(t, &listen)),
        }
    }

    /// A fixed port claimed twice: by two apps, or by an app and a listener
    /// (the second to bind would fail at start, or after a restart).
    fn port_conflicts(&mut self, raw: &RawConfig, gateway: &GatewayConfig, admin: &AdminConfig) {
        let mut taken: HashMap<u16, String> = HashMap::new();
        for addr in gateway.listen.iter().chain([&admin.listen]) {
            if addr.port() != 0 {
                let key = if addr == &admin.listen {
                    "admin.listen"
                } else {
                    "gateway.listen"
                };
                taken
                    .entry(addr.port())
                    .or_insert(format!("{key} ({addr})"));
            }
        }
        for (name, app) in &raw.apps {
            let Some(port) = &app.get_ref().port else {
                continue;
            };
            let Ok(p) = u16::try_from(*port.get_ref()) else {
                continue; // out of range: reported by the app's own check
            };
            if p == 0 {
                continue;
            }
            match taken.get(&p) {
                Some(owner) => self.rep.error(
                    port.span(),
                    format!("apps.{}.port", name.get_ref()),
                    format!("port {p} is already used by {owner}"),
                    Some(
                        "give every app and listener its own port, or set port = 0 for a free one"
                            .into(),
                    ),
                ),
                None => {
                    taken.insert(p, format!("apps.{}", name.get_ref()));
                }
            }
        }
    }

    /// Two routes (in one app or two) that claim the same host and path.
    fn route_conflicts(&mut self, raw: &RawConfig) {
        let mut claimed: HashMap<(Option<String>, String), String> = HashMap::new();
        for (name, app) in &raw.apps {
            let Some(routes) = &app.get_ref().routes else {
                continue;
            };
            for (i, r) in routes.get_ref().iter().enumerate() {
                let route = r.get_ref();
                if route.host.is_none() && route.path.is_none() {
                    continue;
                }
                let host = route
                    .host
                    .as_ref()
                    .map(|h| h.get_ref().trim().to_ascii_lowercase());
                let path = route.path.as_ref().map_or("/".to_string(), |p| {
                    match p.get_ref().trim_end_matches('/') {
                        "" => "/".to_string(),
                        t => t.to_string(),
                    }
                });
                let owner = name.get_ref().clone();
                if let Some(first) = claimed.get(&(host.clone(), path.clone())) {
                    let what = match &host {
                        Some(h) => format!("host \"{h}\" with path \"{path}\""),
                        None => format!("path \"{path}\" on any host"),
                    };
                    let by = if *first == owner {
                        "an earlier route of this app".to_string()
                    } else {
                        format!("app `{first}`")
                    };
                    self.rep.error(
                        r.span(),
                        format!("apps.{owner}.routes[{i}]"),
                        format!("{what} is already claimed by {by}"),
                        Some("give one of the routes a different host or path".into()),
                    );
                } else {
                    claimed.insert((host, path), owner);
                }
            }
        }
    }

    /// `depends_on` must name known apps and must not form a cycle.
    fn dependencies(&mut self, raw: &RawConfig, apps: &BTreeMap<AppName, AppConfig>) {
        let mut edges: BTreeMap<String, Vec<(String, std::ops::Range<usize>)>> = BTreeMap::new();
        for (name, app) in &raw.apps {
            for dep in app.get_ref().depends_on.iter().flat_map(|d| d.keys()) {
                let key = format!("apps.{}.depends_on.{}", name.get_ref(), dep.get_ref());
                if !raw.apps.keys().any(|n| n.get_ref() == dep.get_ref()) {
                    let known = apps.keys().map(AppName::as_str);
                    let hint = match super::error::did_you_mean(dep.get_ref(), known) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => "name an app defined under [apps]".into(),
                    };
                    self.rep.error(
                        dep.span(),
                        key,
                        format!("depends on unknown app `{}`", dep.get_ref()),
                        Some(hint),
                    );
                    continue;
                }
                edges
                    .entry(name.get_ref().clone())
                    .or_default()
                    .push((dep.get_ref().clone(), dep.span()));
            }
        }
        // Depth-first search; a back edge closes a cycle.
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            Active,
            Done,
        }
        fn visit(
            node: &str,
            edges: &BTreeMap<String, Vec<(String, std::ops::Range<usize>)>>,
            marks: &mut HashMap<String, Mark>,
            stack: &mut Vec<String>,
            cycles: &mut Vec<(Vec<String>, std::ops::Range<usize>)>,
        ) {
            marks.insert(node.to_string(), Mark::Active);
            stack.push(node.to_string());
            for (dep, span) in edges.get(node).into_iter().flatten() {
                match marks.get(dep.as_str()) {
                    Some(Mark::Active) => {
                        let start = stack.iter().position(|n| n == dep).unwrap_or(0);
                        let mut cycle = stack[start..].to_vec();
                        cycle.push(dep.clone());
                        cycles.push((cycle, span.clone()));
                    }
                    Some(Mark::Done) => {}
                    None => visit(dep, edges, marks, stack, cycles),
                }
            }
            stack.pop();
            marks.insert(node.to_string(), Mark::Done);
        }
        let mut marks = HashMap::new();
        let mut cycles = Vec::new();
        for node in edges.keys() {
            if !marks.contains_key(node.as_str()) {
                visit(node, &edges, &mut marks, &mut Vec::new(), &mut cycles);
            }
        }
        for (cycle, span) in cycles {
            let last = &cycle[cycle.len() - 2];
            self.rep.error(
                span,
                format!("apps.{last}.depends_on.{}", cycle[cycle.len() - 1]),
                format!("dependency cycle: {}", cycle.join(" -> ")),
                Some("remove one of these depends_on entries".into()),
            );
        }
    }
}
