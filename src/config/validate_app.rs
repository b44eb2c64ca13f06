//! Validation of one `[apps.NAME]` table: command or upstreams, routes,
//! probes, restart policy, circuit breaker and stop sequence.

use std::collections::BTreeMap;
use std::time::Duration;

use super::model::*;
use super::raw::*;
use super::values::{Checker, Zero};

const MS: fn(u64) -> Duration = Duration::from_millis;
const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Which probe a table configures; each has its own defaults.
#[derive(Clone, Copy)]
pub(crate) enum ProbeRole {
    Startup,
    Readiness,
    Liveness,
}

impl ProbeRole {
    /// (interval, timeout, success_threshold, failure_threshold)
    fn defaults(self) -> (Duration, Duration, u32, u32) {
        match self {
            Self::Startup => (MS(100), SECS(1), 1, 300),
            Self::Readiness => (SECS(1), SECS(1), 1, 3),
            Self::Liveness => (SECS(5), SECS(1), 1, 3),
        }
    }
}

impl Checker<'_, '_> {
    pub(crate) fn app(&mut self, name: AppName, raw: &S<RawApp>, key: &str) -> AppConfig {
        let app = raw.get_ref();
        let routes = self.routes(app, raw.span(), key);
        let kind = self.kind(app, raw.span(), key);
        let readiness = app
            .readiness
            .as_ref()
            .map(|p| self.probe(p, &format!("{key}.readiness"), ProbeRole::Readiness));
        let mut depends_on = BTreeMap::new();
        for (dep, cond) in app.depends_on.iter().flatten() {
            // Whether the app exists is checked across apps, in validate.rs.
            if let Ok(dep) = AppName::new(dep.get_ref()) {
                let cond = match cond.get_ref() {
                    RawDependsOn::Started => DependsOn::Started,
                    RawDependsOn::Ready => DependsOn::Ready,
                };
                depends_on.insert(dep, cond);
            }
        }
        AppConfig {
            name,
            routes,
            kind,
            required: app.required.unwrap_or(true),
            depends_on,
            balance: match app.balance {
                Some(RawBalance::LeastInFlight) => Balance::LeastInFlight,
                _ => Balance::RoundRobin,
            },
            readiness,
            circuit_breaker: self.circuit_breaker(app.circuit_breaker.as_ref(), key),
        }
    }

    fn routes(&mut self, app: &RawApp, span: std::ops::Range<usize>, key: &str) -> Vec<Route> {
        let rkey = format!("{key}.routes");
        let Some(raw_routes) = &app.routes else {
            if !self.was_dropped(&rkey) {
                self.rep.error(
                    span,
                    key,
                    "app has no routes",
                    Some(
                        r#"add routes = [{ host = "app.localhost" }] or [{ path = "/app" }]"#
                            .into(),
                    ),
                );
            }
            return Vec::new();
        };
        if raw_routes.get_ref().is_empty() {
            self.rep.error(
                raw_routes.span(),
                &rkey,
                "app has no routes",
                Some(r#"add at least one route, such as { host = "app.localhost" } or { path = "/app" }"#.into()),
            );
        }
        let mut routes = Vec::new();
        for (i, r) in raw_routes.get_ref().iter().enumerate() {
            let k = format!("{rkey}[{i}]");
            let hint = "set host = \"…\", path = \"/…\", or both";
            if let Some(route) = self.route(r, &k, hint) {
                routes.push(route);
            }
        }
        routes
    }

    /// One `{ host, path, strip_prefix }` route (apps and the MCP front);
    /// `None` after reporting a route with neither host nor path.
    pub(crate) fn route(&mut self, r: &S<RawRoute>, k: &str, hint: &str) -> Option<Route> {
        let route = r.get_ref();
        if route.host.is_none() && route.path.is_none() {
            if !self.dropped_inside(k) {
                let why = "route has neither host nor path";
                self.rep.error(r.span(), k, why, Some(hint.into()));
            }
            return None;
        }
        let host = route
            .host
            .as_ref()
            .and_then(|h| self.host(h, &format!("{k}.host")));
        let path = route
            .path
            .as_ref()
            .map(|p| self.route_path(p, &format!("{k}.path")));
        Some(Route {
            host,
            path,
            strip_prefix: route.strip_prefix.unwrap_or(false),
        })
    }

    pub(crate) fn host(&mut self, value: &S<String>, key: &str) -> Option<HostMatch> {
        let text = value.get_ref().trim().to_ascii_lowercase();
        let (wildcard, name) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest.to_string()),
            None => (false, text.clone()),
        };
        let valid_label = |l: &str| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if name.is_empty() || !name.split('.').all(valid_label) {
            let hint = if text.contains(':') {
                "remove the port: routes match the host name whatever the port".to_string()
            } else {
                "write a host name such as \"web.localhost\", or \"*.web.localhost\" for every subdomain".to_string()
            };
            self.rep.error(
                value.span(),
                key,
                format!("invalid host \"{}\"", value.get_ref()),
                Some(hint),
            );
            return None;
        }
        Some(if wildcard {
            HostMatch::Wildcard(name)
        } else {
            HostMatch::Exact(name)
        })
    }

    pub(crate) fn route_path(&mut self, value: &S<String>, key: &str) -> String {
        let path = self.request_path(value, key);
        match path.trim_end_matches('/') {
            "" => "/".to_string(),
            trimmed => trimmed.to_string(),
        }
    }

    fn kind(&mut self, app: &RawApp, span: std::ops::Range<usize>, key: &str) -> AppKind {
        match (&app.command, &app.upstreams) {
            (Some(_), Some(up)) => {
                self.rep.error(
                    up.span(),
                    format!("{key}.upstreams"),
                    "app has both `command` and `upstreams`",
                    Some("keep `command` for a process harbormaster runs, or `upstreams` for addresses it only routes to".into()),
                );
                AppKind::Managed(Box::new(self.managed(app, key)))
            }
            (Some(_), None) => AppKind::Managed(Box::new(self.managed(app, key))),
            (None, Some(up)) => {
                self.external_only(app, key);
                let ukey = format!("{key}.upstreams");
                if up.get_ref().is_empty() {
                    self.rep.error(
                        up.span(),
                        &ukey,
                        "upstreams is empty",
                        Some("list at least one address, such as \"127.0.0.1:3000\"".into()),
                    );
                }
                let upstreams = up
                    .get_ref()
                    .iter()
                    .enumerate()
                    .filter_map(|(i, a)| self.socket_addr(a, &format!("{ukey}[{i}]")))
                    .collect();
                AppKind::External { upstreams }
            }
            (None, None) => {
                let dropped = self.was_dropped(&format!("{key}.command"))
                    || self.was_dropped(&format!("{key}.upstreams"));
                if !dropped {
                    self.rep.error(
                        span,
                        key,
                        "app has neither `command` nor `upstreams`",
                        Some(r#"add command = ["program", "{port}"] to run it, or upstreams = ["127.0.0.1:3000"] to route to it"#.into()),
                    );
                }
                AppKind::External {
                    upstreams: Vec::new(),
                }
            }
        }
    }

    /// Keys that only make sense for an app harbormaster runs itself.
    fn external_only(&mut self, app: &RawApp, key: &str) {
        let mut managed_only: Vec<(&str, std::ops::Range<usize>)> = Vec::new();
        if let Some(v) = &app.port {
            managed_only.push(("port", v.span()));
        }
        if let Some(v) = &app.instances {
            managed_only.push(("instances", v.span()));
        }
        if let Some(v) = &app.working_dir {
            managed_only.push(("working_dir", v.span()));
        }
        if let Some(v) = &app.env_file {
            managed_only.push(("env_file", v.span()));
        }
        if let Some(v) = &app.restart {
            managed_only.push(("restart", v.span()));
        }
        if let Some(v) = &app.startup {
            managed_only.push(("startup", v.span()));
        }
        if let Some(v) = &app.liveness {
            managed_only.push(("liveness", v.span()));
        }
        if let Some(v) = &app.stop {
            managed_only.push(("stop", v.span()));
        }
        for (name, span) in managed_only {
            self.rep.error(
                span,
                format!("{key}.{name}"),
                format!("`{name}` applies only to apps with a `command`"),
                Some(
                    "remove it: external upstreams are only routed to and get readiness probes"
                        .into(),
                ),
            );
        }
    }

    fn managed(&mut self, app: &RawApp, key: &str) -> ManagedApp {
        let ckey = format!("{key}.command");
        let shell = app.shell.unwrap_or(false);
        let command = match app.command.as_ref().map(|c| (c.get_ref(), c.span())) {
            Some((RawCommand::Argv(argv), span)) if !shell => {
                if argv.first().is_none_or(|p| p.trim().is_empty()) {
                    self.rep.error(
                        span,
                        &ckey,
                        "command is empty",
                        Some(r#"name the program to run: command = ["program", "arg"]"#.into()),
                    );
                }
                Command::Argv(argv.clone())
            }
            Some((RawCommand::Line(line), span)) if shell => {
                if line.trim().is_empty() {
                    self.rep.error(
                        span,
                        &ckey,
                        "command is empty",
                        Some("write the shell command line to run".into()),
                    );
                }
                Command::Shell(line.clone())
            }
            Some((RawCommand::Line(line), span)) => {
                self.rep.error(
                    span,
                    &ckey,
                    "command is a string but `shell` is false",
                    Some(r#"write command = ["program", "arg"], or set shell = true to run the string with /bin/sh -c"#.into()),
                );
                Command::Shell(line.clone())
            }
            Some((RawCommand::Argv(argv), span)) => {
                self.rep.error(
                    span,
                    &ckey,
                    "with shell = true, command must be one string",
                    Some(r#"write command = "program arg | other", or set shell = false"#.into()),
                );
                Command::Argv(argv.clone())
            }
            None => Command::Argv(Vec::new()),
        };

        let working_dir = match &app.working_dir {
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
        let env_file = app.env_file.as_ref().map(|f| {
            let path = self.resolve(f.get_ref());
            if !path.is_file() {
                self.rep.error(
                    f.span(),
                    format!("{key}.env_file"),
                    format!("env_file {} does not exist", path.display()),
                    Some("create it, or remove env_file (relative paths start at the config file's folder)".into()),
                );
            }
            path
        });
        let mut env = BTreeMap::new();
        for (k, v) in app.env.iter().flatten() {
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

        let instances = self.positive(app.instances.as_ref(), &format!("{key}.instances"), 1);
        let port = self.int(app.port.as_ref(), &format!("{key}.port"), 0, 0, 65535) as u16;
        if let (Some(p), true) = (&app.port, port != 0 && instances.get() > 1) {
            self.rep.error(
                p.span(),
                format!("{key}.port"),
                format!("a fixed port ({port}) cannot be shared by {instances} instances"),
                Some(
                    "set port = 0 to give each instance its own free port, or instances = 1".into(),
                ),
            );
        }

        ManagedApp {
            command,
            working_dir,
            env,
            env_file,
            instances,
            port,
            restart: self.restart(app.restart.as_ref(), key),
            startup: app
                .startup
                .as_ref()
                .map(|p| self.probe(p, &format!("{key}.startup"), ProbeRole::Startup)),
            liveness: app
                .liveness
                .as_ref()
                .map(|p| self.probe(p, &format!("{key}.liveness"), ProbeRole::Liveness)),
            stop: self.stop(app.stop.as_ref(), key),
        }
    }

    pub(crate) fn restart(&mut self, raw: Option<&S<RawRestart>>, key: &str) -> RestartConfig {
        let key = format!("{key}.restart");
        let default = RawRestart::default();
        let r = raw.map(|r| r.get_ref()).unwrap_or(&default);
        let initial = self.duration(
            r.backoff_initial.as_ref(),
            &format!("{key}.backoff_initial"),
            MS(100),
            Zero::Allowed,
        );
        let max = self.duration(
            r.backoff_max.as_ref(),
            &format!("{key}.backoff_max"),
            SECS(30),
            Zero::Allowed,
        );
        let multiplier = r.backoff_multiplier.as_ref().map_or(2.0, |m| *m.get_ref());
        let backoff = match Backoff::try_new(initial, max, multiplier) {
            Ok(b) => b,
            Err(message) => {
                let (field, span, hint) = if initial > max {
                    (
                        "backoff_initial",
                        r.backoff_initial
                            .as_ref()
                            .or(r.backoff_max.as_ref())
                            .map(|s| s.span()),
                        "make backoff_initial at most backoff_max",
                    )
                } else {
                    (
                        "backoff_multiplier",
                        r.backoff_multiplier.as_ref().map(|s| s.span()),
                        "use a multiplier of 1.0 or more, such as 2.0",
                    )
                };
                self.rep.error(
                    span.unwrap_or(0..0),
                    format!("{key}.{field}"),
                    message,
                    Some(hint.into()),
                );
                Backoff::try_new(MS(100), SECS(30), 2.0).expect("default backoff is valid")
            }
        };
        RestartConfig {
            policy: match r.policy {
                Some(RawRestartPolicy::Always) => RestartPolicy::Always,
                Some(RawRestartPolicy::Never) => RestartPolicy::Never,
                _ => RestartPolicy::OnFailure,
            },
            backoff,
            max_restarts: self.int(
                r.max_restarts.as_ref(),
                &format!("{key}.max_restarts"),
                5,
                0,
                1_000_000,
            ),
            window: self.duration(
                r.window.as_ref(),
                &format!("{key}.window"),
                SECS(60),
                Zero::Rejected,
            ),
            reset_after: self.duration(
                r.reset_after.as_ref(),
                &format!("{key}.reset_after"),
                SECS(30),
                Zero::Allowed,
            ),
        }
    }

    pub(crate) fn probe(&mut self, raw: &S<RawProbe>, key: &str, role: ProbeRole) -> Probe {
        let p = raw.get_ref();
        let mut kinds: Vec<(&str, ProbeKind, std::ops::Range<usize>)> = Vec::new();
        if let Some(path) = &p.http {
            let path = self.request_path(path, &format!("{key}.http"));
            kinds.push((
                "http",
                ProbeKind::Http { path },
                p.http.as_ref().map(|s| s.span()).unwrap_or_default(),
            ));
        }
        if let Some(tcp) = &p.tcp {
            if *tcp.get_ref() {
                kinds.push(("tcp", ProbeKind::Tcp, tcp.span()));
            } else {
                self.rep.error(
                    tcp.span(),
                    format!("{key}.tcp"),
                    "tcp = false does not choose a probe",
                    Some("remove it, or set tcp = true".into()),
                );
            }
        }
        if let Some(argv) = &p.exec {
            if argv.get_ref().first().is_none_or(|a| a.trim().is_empty()) {
                self.rep.error(
                    argv.span(),
                    format!("{key}.exec"),
                    "exec is empty",
                    Some(r#"name the program: exec = ["program", "arg"]"#.into()),
                );
            }
            kinds.push((
                "exec",
                ProbeKind::Exec {
                    argv: argv.get_ref().clone(),
                },
                argv.span(),
            ));
        }
        if kinds.is_empty() && !self.dropped_inside(key) {
            self.rep.error(
                raw.span(),
                key,
                "probe has no kind",
                Some(
                    r#"set exactly one of http = "/path", tcp = true or exec = ["program"]"#.into(),
                ),
            );
        }
        if kinds.len() > 1 {
            let names: Vec<&str> = kinds.iter().map(|k| k.0).collect();
            self.rep.error(
                kinds[1].2.clone(),
                format!("{key}.{}", kinds[1].0),
                format!("probe has more than one kind ({})", names.join(" and ")),
                Some("keep exactly one of http, tcp and exec".into()),
            );
        }
        let (interval, timeout, success, failure) = role.defaults();
        Probe {
            kind: kinds.into_iter().next().map_or(ProbeKind::Tcp, |k| k.1),
            interval: self.duration(
                p.interval.as_ref(),
                &format!("{key}.interval"),
                interval,
                Zero::Rejected,
            ),
            timeout: self.duration(
                p.timeout.as_ref(),
                &format!("{key}.timeout"),
                timeout,
                Zero::Rejected,
            ),
            success_threshold: self.positive(
                p.success_threshold.as_ref(),
                &format!("{key}.success_threshold"),
                success,
            ),
            failure_threshold: self.positive(
                p.failure_threshold.as_ref(),
                &format!("{key}.failure_threshold"),
                failure,
            ),
        }
    }

    pub(crate) fn circuit_breaker(
        &mut self,
        raw: Option<&S<RawCircuitBreaker>>,
        key: &str,
    ) -> CircuitBreaker {
        let key = format!("{key}.circuit_breaker");
        let default = RawCircuitBreaker::default();
        let c = raw.map(|c| c.get_ref()).unwrap_or(&default);
        let open_for = self.duration(
            c.open_for.as_ref(),
            &format!("{key}.open_for"),
            SECS(10),
            Zero::Rejected,
        );
        let mut max_open_for = self.duration(
            c.max_open_for.as_ref(),
            &format!("{key}.max_open_for"),
            SECS(300),
            Zero::Rejected,
        );
        if max_open_for < open_for {
            let span = c
                .max_open_for
                .as_ref()
                .or(c.open_for.as_ref())
                .map(|s| s.span())
                .unwrap_or_default();
            self.rep.error(
                span,
                format!("{key}.max_open_for"),
                "max_open_for is shorter than open_for",
                Some("make max_open_for at least open_for".into()),
            );
            max_open_for = open_for;
        }
        CircuitBreaker {
            failures: self.positive(c.failures.as_ref(), &format!("{key}.failures"), 5),
            open_for,
            max_open_for,
            half_open_requests: self.positive(
                c.half_open_requests.as_ref(),
                &format!("{key}.half_open_requests"),
                1,
            ),
            trip_on_5xx: c.trip_on_5xx.unwrap_or(false),
        }
    }

    fn stop(&mut self, raw: Option<&S<RawStop>>, key: &str) -> StopConfig {
        let key = format!("{key}.stop");
        let default = RawStop::default();
        let s = raw.map(|s| s.get_ref()).unwrap_or(&default);
        let mut hooks = Vec::new();
        for (i, h) in s.hooks.iter().flatten().enumerate() {
            let hkey = format!("{key}.hooks[{i}]");
            let hook = h.get_ref();
            let method = match &hook.method {
                Some(m)
                    if !m.get_ref().is_empty()
                        && m.get_ref().chars().all(|c| c.is_ascii_alphabetic()) =>
                {
                    m.get_ref().to_ascii_uppercase()
                }
                Some(m) => {
                    self.rep.error(
                        m.span(),
                        format!("{hkey}.method"),
                        format!("invalid HTTP method \"{}\"", m.get_ref()),
                        Some("use a method such as \"POST\" or \"GET\"".into()),
                    );
                    "POST".into()
                }
                None => "POST".into(),
            };
            let Some(path) = &hook.path else {
                if !self.dropped_inside(&hkey) {
                    self.rep.error(
                        h.span(),
                        &hkey,
                        "stop hook has no path",
                        Some(
                            "add path = \"/admin/shutdown\" (the request goes to the instance)"
                                .into(),
                        ),
                    );
                }
                continue;
            };
            let path = self.request_path(path, &format!("{hkey}.path"));
            let timeout = self.duration(
                hook.timeout.as_ref(),
                &format!("{hkey}.timeout"),
                SECS(5),
                Zero::Rejected,
            );
            hooks.push(StopHook {
                method,
                path,
                timeout,
                expect_exit: hook.expect_exit.unwrap_or(false),
            });
        }
        StopConfig {
            hooks,
            signal: self.signal(s.signal.as_ref(), &format!("{key}.signal")),
            timeout: self.duration(
                s.timeout.as_ref(),
                &format!("{key}.timeout"),
                SECS(10),
                Zero::Allowed,
            ),
        }
    }
}
