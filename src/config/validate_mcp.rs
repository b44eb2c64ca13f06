//! Validation of the `[mcp]` table into [`McpConfig`]: fronts, servers
//! (exactly one of `command`, `url`, `app`), tool names, clients and roles.
//! Restart and breaker tables reuse the app checks in `validate_app.rs`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::Duration;

use super::mcp::*;
use super::model::{AppName, Route};
use super::raw::{RawApp, RawRoute, S};
use super::raw_mcp::*;
use super::values::{Checker, Zero};

const SECS: fn(u64) -> Duration = Duration::from_secs;

impl Checker<'_, '_> {
    pub(crate) fn mcp(&mut self, raw: &RawMcp, apps: &BTreeMap<S<String>, S<RawApp>>) -> McpConfig {
        let separator = match &raw.separator {
            Some(s)
                if s.get_ref().is_empty()
                    || s.get_ref().len() > 8
                    || !valid_tool_name(s.get_ref()) =>
            {
                self.rep.error(
                    s.span(),
                    "mcp.separator",
                    format!("invalid separator \"{}\"", s.get_ref()),
                    Some("use 1 to 8 characters of letters, digits, '_', '.' and '-', such as \"__\"".into()),
                );
                "__".to_string()
            }
            Some(s) => s.get_ref().clone(),
            None => "__".to_string(),
        };
        let routes = self.mcp_routes(raw.routes.as_ref(), apps);
        let call_timeout = self.duration(
            raw.call_timeout.as_ref(),
            "mcp.call_timeout",
            SECS(60),
            Zero::Rejected,
        );
        let stdio_client = raw
            .stdio_client
            .as_ref()
            .map_or("local".to_string(), |c| c.get_ref().clone());
        let mut allowed_origins = Vec::new();
        for (i, o) in raw
            .allowed_origins
            .iter()
            .flat_map(|l| l.get_ref())
            .enumerate()
        {
            let text = o
                .get_ref()
                .trim()
                .trim_end_matches('/')
                .to_ascii_lowercase();
            let valid = text.split_once("://").is_some_and(|(scheme, host)| {
                !scheme.is_empty() && !host.is_empty() && !host.contains('/')
            });
            if !valid {
                self.rep.error(
                    o.span(),
                    format!("mcp.allowed_origins[{i}]"),
                    format!("invalid origin \"{}\"", o.get_ref()),
                    Some("write scheme://host[:port], such as \"https://app.example.com\"".into()),
                );
                continue;
            }
            allowed_origins.push(text);
        }

        let mut servers = BTreeMap::new();
        for (name, server) in &raw.servers {
            let key = format!("mcp.servers.{}", name.get_ref());
            let valid = AppName::new(name.get_ref()).and_then(|n| {
                if n.as_str().contains(separator.as_str()) {
                    Err(format!("contains the separator \"{separator}\""))
                } else {
                    Ok(n)
                }
            });
            let server_name = match valid {
                Ok(n) => n,
                Err(why) => {
                    self.rep.error(
                        name.span(),
                        &key,
                        format!("invalid server name \"{}\": {why}", name.get_ref()),
                        Some("rename the server, for example [mcp.servers.files]".into()),
                    );
                    continue;
                }
            };
            let config = self.mcp_server(server_name.clone(), server, &key, apps);
            servers.insert(server_name, config);
        }

        let mut roles = BTreeMap::new();
        for (name, role) in &raw.roles {
            let key = format!("mcp.roles.{}", name.get_ref());
            let r = role.get_ref();
            let allow = self.globs(r.allow.as_ref(), &format!("{key}.allow"));
            let deny = self.globs(r.deny.as_ref(), &format!("{key}.deny"));
            roles.insert(name.get_ref().clone(), McpRole { allow, deny });
        }

        let mut clients = BTreeMap::new();
        for (name, client) in &raw.clients {
            let key = format!("mcp.clients.{}", name.get_ref());
            let c = client.get_ref();
            let token = match &c.token {
                Some(t)
                    if t.get_ref().len() < 16 || t.get_ref().chars().any(char::is_whitespace) =>
                {
                    self.rep.error(
                        t.span(),
                        format!("{key}.token"),
                        "a client token must be at least 16 characters without spaces",
                        Some("use a long random value, e.g. token = \"${ALICE_TOKEN}\" with `openssl rand -hex 32`".into()),
                    );
                    continue;
                }
                Some(t) => t.get_ref().clone(),
                None => {
                    if !self.was_dropped(&format!("{key}.token")) {
                        self.rep.error(
                            client.span(),
                            &key,
                            "client has no token",
                            Some("add token = \"${CLIENT_TOKEN}\": the bearer token this client sends".into()),
                        );
                    }
                    continue;
                }
            };
            let mut role_names = Vec::new();
            for (i, r) in c.roles.iter().flat_map(|l| l.get_ref()).enumerate() {
                if !raw.roles.keys().any(|k| k.get_ref() == r.get_ref()) {
                    let known = raw.roles.keys().map(|k| k.get_ref().as_str());
                    let hint = match super::error::did_you_mean(r.get_ref(), known) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None => "define it as [mcp.roles.NAME] with allow = [\"server__*\"]".into(),
                    };
                    self.rep.error(
                        r.span(),
                        format!("{key}.roles[{i}]"),
                        format!("unknown role `{}`", r.get_ref()),
                        Some(hint),
                    );
                    continue;
                }
                role_names.push(r.get_ref().clone());
            }
            let rate_limit = self.rate_limit(c.rate_limit.as_ref(), &format!("{key}.rate_limit"));
            clients.insert(
                name.get_ref().clone(),
                McpClient {
                    token,
                    roles: role_names,
                    rate_limit,
                },
            );
        }
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for (name, client) in &raw.clients {
            if let Some(t) = &client.get_ref().token {
                if let Some(first) = seen.insert(t.get_ref(), name.get_ref()) {
                    self.rep.error(
                        t.span(),
                        format!("mcp.clients.{}.token", name.get_ref()),
                        format!("the same token as client `{first}`"),
                        Some("give every client its own token: the token is its identity".into()),
                    );
                }
            }
        }

        McpConfig {
            routes,
            separator,
            call_timeout,
            stdio_client,
            allowed_origins,
            kill_switch: raw.kill_switch.unwrap_or(false),
            servers,
            clients,
            roles,
        }
    }

    fn mcp_routes(
        &mut self,
        raw: Option<&S<Vec<S<RawRoute>>>>,
        apps: &BTreeMap<S<String>, S<RawApp>>,
    ) -> Vec<Route> {
        let Some(raw) = raw else {
            return vec![Route {
                host: None,
                path: Some("/mcp".into()),
                strip_prefix: false,
            }];
        };
        let mut routes = Vec::new();
        for (i, r) in raw.get_ref().iter().enumerate() {
            let k = format!("mcp.routes[{i}]");
            let hint = "set path = \"/mcp\", host = \"…\", or both";
            let Some(mut route) = self.route(r, &k, hint) else {
                continue;
            };
            // The MCP front answers at the path it was given.
            route.strip_prefix = false;
            let same = |other: &RawRoute| {
                let host = other
                    .host
                    .as_ref()
                    .map(|h| h.get_ref().trim().to_ascii_lowercase());
                let path = other
                    .path
                    .as_ref()
                    .map(|p| match p.get_ref().trim_end_matches('/') {
                        "" => "/".to_string(),
                        t => t.to_string(),
                    });
                host == route.host.as_ref().map(ToString::to_string) && path == route.path
            };
            if let Some((app, _)) = apps.iter().find(|(_, a)| {
                a.get_ref()
                    .routes
                    .iter()
                    .flat_map(|l| l.get_ref())
                    .any(|o| same(o.get_ref()))
            }) {
                self.rep.error(
                    r.span(),
                    &k,
                    format!("this route is already claimed by app `{}`", app.get_ref()),
                    Some("give the MCP front or the app a different host or path".into()),
                );
            }
            routes.push(route);
        }
        routes
    }

    fn mcp_server(
        &mut self,
        name: ServerName,
        raw: &S<RawMcpServer>,
        key: &str,
        apps: &BTreeMap<S<String>, S<RawApp>>,
    ) -> McpServer {
        let s = raw.get_ref();
        let mut kinds: Vec<(&str, Range<usize>)> = Vec::new();
        if let Some(c) = &s.command {
            kinds.push(("command", c.span()));
        }
        if let Some(u) = &s.url {
            kinds.push(("url", u.span()));
        }
        if let Some(a) = &s.app {
            kinds.push(("app", a.span()));
        }
        if kinds.len() > 1 {
            let names: Vec<&str> = kinds.iter().map(|k| k.0).collect();
            self.rep.error(
                kinds[1].1.clone(),
                format!("{key}.{}", kinds[1].0),
                format!("server has more than one of command, url and app ({})", names.join(" and ")),
                Some("keep exactly one: command (a stdio server), url (a remote server) or app (a managed app)".into()),
            );
        }
        let dropped = ["command", "url", "app"]
            .iter()
            .any(|k| self.was_dropped(&format!("{key}.{k}")));
        if kinds.is_empty() && !dropped {
            self.rep.error(
                raw.span(),
                key,
                "server has none of command, url and app",
                Some(r#"add command = ["program", "arg"] for a stdio server, url = "http://…/mcp", or app = "NAME" with path = "/mcp""#.into()),
            );
        }
        let transport = match kinds.first().map(|k| k.0) {
            Some("url") => self.mcp_http(s, key),
            Some("app") => self.mcp_app(s, key, apps),
            _ => self.mcp_stdio(s, key),
        };
        let mut wrong_kind: Vec<(&str, Range<usize>, &str)> = Vec::new();
        let is_stdio = matches!(transport, McpTransport::Stdio(_));
        if !is_stdio {
            for (k, span) in [
                (
                    "env",
                    s.env
                        .as_ref()
                        .and_then(|e| e.keys().next())
                        .map(|k| k.span()),
                ),
                ("working_dir", s.working_dir.as_ref().map(|v| v.span())),
                ("restart", s.restart.as_ref().map(|v| v.span())),
                ("stop", s.stop.as_ref().map(|v| v.span())),
            ] {
                if let Some(span) = span {
                    wrong_kind.push((k, span, "command"));
                }
            }
        }
        if !matches!(transport, McpTransport::Http { .. }) {
            if let Some(h) = s.headers.as_ref().and_then(|h| h.keys().next()) {
                wrong_kind.push(("headers", h.span(), "url"));
            }
        }
        if !matches!(transport, McpTransport::App { .. }) {
            if let Some(p) = &s.path {
                wrong_kind.push(("path", p.span(), "app"));
            }
        }
        for (k, span, owner) in wrong_kind {
            self.rep.error(
                span,
                format!("{key}.{k}"),
                format!("`{k}` applies only to servers with `{owner}`"),
                Some("remove it".into()),
            );
        }
        let mut tools = Vec::new();
        for (i, t) in s.tools.iter().flat_map(|l| l.get_ref()).enumerate() {
            if !valid_tool_name(t.get_ref()) {
                self.rep.error(
                    t.span(),
                    format!("{key}.tools[{i}]"),
                    format!("invalid tool name \"{}\"", t.get_ref()),
                    Some(
                        "tool names are 1 to 128 characters of letters, digits, '_', '.' and '-'"
                            .into(),
                    ),
                );
                continue;
            }
            tools.push(t.get_ref().clone());
        }
        McpServer {
            name,
            transport,
            tools,
            killed: s.killed.unwrap_or(false),
            required: s.required.unwrap_or(false),
            circuit_breaker: self.circuit_breaker(s.circuit_breaker.as_ref(), key),
            rate_limit: self.rate_limit(s.rate_limit.as_ref(), &format!("{key}.rate_limit")),
        }
    }

    fn mcp_stdio(&mut self, s: &RawMcpServer, key: &str) -> McpTransport {
        let command = s.command.as_ref().map_or_else(Vec::new, |c| {
            if c.get_ref().first().is_none_or(|p| p.trim().is_empty()) {
                self.rep.error(
                    c.span(),
                    format!("{key}.command"),
                    "command is empty",
                    Some(r#"name the program to run: command = ["program", "arg"]"#.into()),
                );
            }
            c.get_ref().clone()
        });
        let working_dir = match &s.working_dir {
            Some(dir) => {
                let path = self.resolve(dir.get_ref());
                if !path.is_dir() {
                    self.rep.error(
                        dir.span(),
                        format!("{key}.working_dir"),
                        format!("working_dir {} is not a directory", path.display()),
                        Some("create it, or give a directory that exists (relative paths start at the config file's folder)".into()),
                    );
                }
                path
            }
            None => self.base_dir.clone(),
        };
        let mut env = BTreeMap::new();
        for (k, v) in s.env.iter().flatten() {
            let name = k.get_ref();
            if name.is_empty() || name.contains(['=', '\0']) || v.get_ref().contains('\0') {
                self.rep.error(
                    k.span(),
                    format!("{key}.env.{name}"),
                    "invalid environment variable",
                    Some(
                        "names must be non-empty without '=' and values must not contain NUL"
                            .into(),
                    ),
                );
                continue;
            }
            env.insert(name.clone(), v.get_ref().clone());
        }
        let stop_timeout = self.duration(
            s.stop.as_ref().and_then(|st| st.get_ref().timeout.as_ref()),
            &format!("{key}.stop.timeout"),
            SECS(5),
            Zero::Allowed,
        );
        McpTransport::Stdio(Box::new(StdioServer {
            command,
            env,
            working_dir,
            restart: self.restart(s.restart.as_ref(), key),
            stop_timeout,
        }))
    }

    fn mcp_http(&mut self, s: &RawMcpServer, key: &str) -> McpTransport {
        let url = s.url.as_ref().map_or(String::new(), |u| {
            let ok = u
                .get_ref()
                .parse::<hyper::Uri>()
                .ok()
                .is_some_and(|uri| uri.scheme_str() == Some("http") && uri.host().is_some());
            if !ok {
                self.rep.error(
                    u.span(),
                    format!("{key}.url"),
                    format!("invalid MCP server URL \"{}\"", u.get_ref()),
                    Some(
                        "write an http:// URL with a host, such as \"http://127.0.0.1:9000/mcp\""
                            .into(),
                    ),
                );
            }
            u.get_ref().clone()
        });
        let mut headers = BTreeMap::new();
        for (k, v) in s.headers.iter().flatten() {
            let valid = hyper::header::HeaderName::from_bytes(k.get_ref().as_bytes()).is_ok()
                && hyper::header::HeaderValue::from_str(v.get_ref()).is_ok();
            if !valid {
                self.rep.error(
                    k.span(),
                    format!("{key}.headers.{}", k.get_ref()),
                    "invalid HTTP header",
                    Some("use a header name of letters, digits and '-', and a value without control characters".into()),
                );
                continue;
            }
            headers.insert(k.get_ref().clone(), v.get_ref().clone());
        }
        McpTransport::Http { url, headers }
    }

    fn mcp_app(
        &mut self,
        s: &RawMcpServer,
        key: &str,
        apps: &BTreeMap<S<String>, S<RawApp>>,
    ) -> McpTransport {
        let app = s.app.as_ref().expect("chosen because app is set");
        if !apps.keys().any(|k| k.get_ref() == app.get_ref()) {
            let known = apps.keys().map(|k| k.get_ref().as_str());
            let hint = match super::error::did_you_mean(app.get_ref(), known) {
                Some(s) => format!("did you mean `{s}`?"),
                None => "name an app defined under [apps]".into(),
            };
            self.rep.error(
                app.span(),
                format!("{key}.app"),
                format!("unknown app `{}`", app.get_ref()),
                Some(hint),
            );
        }
        let path = match &s.path {
            Some(p) => self.request_path(p, &format!("{key}.path")),
            None => "/mcp".to_string(),
        };
        McpTransport::App {
            app: AppName::new(app.get_ref())
                .unwrap_or_else(|_| AppName::new("invalid").expect("valid")),
            path,
        }
    }

    fn rate_limit(&mut self, raw: Option<&S<RawRateLimit>>, key: &str) -> Option<RateLimit> {
        let raw = raw?;
        let r = raw.get_ref();
        if r.calls.is_none() && !self.dropped_inside(key) {
            self.rep.error(
                raw.span(),
                key,
                "rate_limit has no calls",
                Some("write rate_limit = { calls = 10, per = \"1s\" }".into()),
            );
        }
        Some(RateLimit {
            calls: self.positive(r.calls.as_ref(), &format!("{key}.calls"), 1),
            per: self.duration(
                r.per.as_ref(),
                &format!("{key}.per"),
                SECS(1),
                Zero::Rejected,
            ),
        })
    }

    fn globs(&mut self, raw: Option<&S<Vec<S<String>>>>, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        for (i, g) in raw.iter().flat_map(|l| l.get_ref()).enumerate() {
            let ok = g
                .get_ref()
                .chars()
                .all(|c| c == '*' || valid_tool_name(&c.to_string()));
            if g.get_ref().is_empty() || !ok {
                self.rep.error(
                    g.span(),
                    format!("{key}[{i}]"),
                    format!("invalid tool pattern \"{}\"", g.get_ref()),
                    Some("write an exposed tool name, '*' matching any characters, such as \"files__*\"".into()),
                );
                continue;
            }
            out.push(g.get_ref().clone());
        }
        out
    }
}
