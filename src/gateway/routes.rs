//! The route table: an immutable snapshot of host/path → app → the instances
//! that may take traffic now. It is rebuilt whenever instance states change
//! and swapped atomically; requests read it without taking a lock.
//!
//! Matching: the most specific host first (exact, then the longest wildcard
//! suffix, then routes for any host); within a host, the longest path prefix
//! on a segment boundary (`/api` matches `/api` and `/api/x`, not `/apix`).
//! A host whose routes match no path falls through to less specific hosts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use super::inflight::Counter;
use crate::config::{AppName, Balance, Config, HostMatch};
use crate::health::breaker::{Admission, Breaker, BreakerState, Transition};
use crate::observe::{BreakerChange, Observers};

/// One instance (or external address) that may take traffic.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// For logs: `web#0` or `legacy@127.0.0.1:3999`.
    pub label: String,
    pub addr: SocketAddr,
    /// Requests in flight to this instance (least_in_flight, drain).
    pub in_flight: Arc<Counter>,
    /// Fed by request outcomes; an open breaker takes the instance out of rotation.
    pub breaker: Arc<InstanceBreaker>,
    /// Set when a rolling restart replaces this instance: no new requests.
    pub retired: Arc<AtomicBool>,
    /// One permit per open upstream connection (`max_upstream_connections`).
    pub conns: Arc<super::ConnLimit>,
}

impl Upstream {
    pub fn new(
        label: String,
        addr: SocketAddr,
        in_flight: Arc<Counter>,
        breaker: Arc<InstanceBreaker>,
    ) -> Self {
        Self {
            label,
            addr,
            in_flight,
            breaker,
            retired: Arc::default(),
            conns: super::ConnLimit::new(usize::MAX),
        }
    }

    /// Shares a retirement flag and connection limit kept across table snapshots.
    pub fn with_shared(mut self, retired: Arc<AtomicBool>, conns: Arc<super::ConnLimit>) -> Self {
        self.retired = retired;
        self.conns = conns;
        self
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.breaker.lock()
    }

    /// Asks the breaker to let one request through (logs a move to half-open).
    pub fn admit(&self, now: Instant) -> Admission {
        let (admission, transition) = self.lock().admit(now);
        if let Some(t) = transition {
            self.breaker.transitioned(&self.label, t);
        }
        admission
    }

    /// Whether the breaker is open (not yet due for half-open) at `now`.
    pub fn is_open(&self, now: Instant) -> bool {
        matches!(self.lock().state(now), BreakerState::Open { .. })
    }

    /// Records a request's outcome.
    pub fn record(&self, success: bool, now: Instant) {
        let transition = self.lock().record(success, now);
        if let Some(t) = transition {
            self.breaker.transitioned(&self.label, t);
        }
    }
}

/// An instance's circuit breaker, and who hears of its changes.
#[derive(Debug)]
pub struct InstanceBreaker {
    state: Mutex<Breaker>,
    /// The app, for the observers (`None`: nobody is told).
    app: Option<(String, Observers)>,
}

impl InstanceBreaker {
    pub fn new(breaker: Breaker) -> Self {
        Self {
            state: Mutex::new(breaker),
            app: None,
        }
    }

    /// Tells `observers` of every change, naming `app`.
    pub fn observed(mut self, app: &str, observers: Observers) -> Self {
        self.app = Some((app.to_string(), observers));
        self
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn transitioned(&self, label: &str, t: Transition) {
        let (from, to) = (t.from.name(), t.to.name());
        tracing::info!(event = "breaker", instance = %label, from, to);
        if let Some((app, observers)) = &self.app {
            observers.breaker(&BreakerChange {
                app,
                instance: label,
                from,
                to,
            });
        }
    }
}

/// Per-app state that outlives table snapshots.
#[derive(Debug, Default)]
pub struct AppShared {
    pub in_flight: Arc<Counter>,
    pub next: AtomicUsize,
    pub draining: AtomicBool,
}

#[derive(Debug)]
pub struct AppEntry {
    pub name: AppName,
    pub balance: Balance,
    /// Count 5xx answers as breaker failures.
    pub trip_on_5xx: bool,
    /// Shared, so admitting a request clones one `Arc` (an `Upstream`
    /// holds four and its label).
    pub upstreams: Vec<Arc<Upstream>>,
    pub shared: Arc<AppShared>,
}

#[derive(Debug)]
struct PathRoute {
    prefix: String,
    strip: bool,
    app: Arc<AppEntry>,
}

/// A matched route.
#[derive(Debug)]
pub struct Matched<'a> {
    pub app: &'a Arc<AppEntry>,
    /// Bytes to strip from the start of the path (0: none).
    pub strip: usize,
}

#[derive(Debug, Default)]
pub struct RouteTable {
    exact: HashMap<String, Vec<PathRoute>>,
    /// (".suffix", routes), longest suffix first.
    wildcard: Vec<(String, Vec<PathRoute>)>,
    any_host: Vec<PathRoute>,
}

impl RouteTable {
    /// Builds a snapshot from the config, each app's routable upstreams and
    /// the per-app state kept across snapshots.
    pub fn build(
        config: &Config,
        upstreams: &HashMap<AppName, Vec<Upstream>>,
        shared: &HashMap<AppName, Arc<AppShared>>,
    ) -> Self {
        let mut table = Self::default();
        for (name, app) in &config.apps {
            let entry = Arc::new(AppEntry {
                name: name.clone(),
                balance: app.balance,
                trip_on_5xx: app.circuit_breaker.trip_on_5xx,
                upstreams: upstreams
                    .get(name)
                    .map(|list| list.iter().cloned().map(Arc::new).collect())
                    .unwrap_or_default(),
                shared: shared.get(name).cloned().unwrap_or_default(),
            });
            for route in &app.routes {
                let path = PathRoute {
                    prefix: route.path.clone().unwrap_or_else(|| "/".into()),
                    strip: route.strip_prefix,
                    app: entry.clone(),
                };
                match &route.host {
                    Some(HostMatch::Exact(h)) => {
                        table.exact.entry(h.clone()).or_default().push(path)
                    }
                    Some(HostMatch::Wildcard(s)) => {
                        let suffix = format!(".{s}");
                        match table.wildcard.iter_mut().find(|(w, _)| *w == suffix) {
                            Some((_, routes)) => routes.push(path),
                            None => table.wildcard.push((suffix, vec![path])),
                        }
                    }
                    None => table.any_host.push(path),
                }
            }
        }
        let by_length =
            |v: &mut Vec<PathRoute>| v.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        table.exact.values_mut().for_each(by_length);
        table.wildcard.iter_mut().for_each(|(_, v)| by_length(v));
        table.wildcard.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        by_length(&mut table.any_host);
        table
    }

    /// The route for `host` (lowercase, without port) and `path`.
    pub fn find(&self, host: &str, path: &str) -> Option<Matched<'_>> {
        let exact = self.exact.get(host).into_iter();
        let wild = self
            .wildcard
            .iter()
            .filter(|(suffix, _)| host.len() > suffix.len() && host.ends_with(suffix.as_str()))
            .map(|(_, routes)| routes);
        exact
            .chain(wild)
            .chain(std::iter::once(&self.any_host))
            .find_map(|routes| routes.iter().find(|r| prefix_matches(&r.prefix, path)))
            .map(|r| Matched {
                app: &r.app,
                strip: if r.strip && r.prefix != "/" {
                    r.prefix.len()
                } else {
                    0
                },
            })
    }

    /// Every app entry of this snapshot, by name.
    pub fn apps(&self) -> HashMap<&AppName, &Arc<AppEntry>> {
        self.exact
            .values()
            .flatten()
            .chain(self.wildcard.iter().flat_map(|(_, v)| v))
            .chain(&self.any_host)
            .map(|r| (&r.app.name, &r.app))
            .collect()
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    prefix == "/"
        || path.starts_with(prefix)
            && matches!(path.as_bytes().get(prefix.len()), None | Some(b'/'))
}

/// The host of a request: `Host` (or the URI authority), lowercase, port
/// removed. Borrows when nothing needs changing (the common case).
pub fn normalize_host(raw: &str) -> std::borrow::Cow<'_, str> {
    let host = if raw.starts_with('[') {
        // [::1]:8080 → [::1]
        raw.split_once(']')
            .map_or(raw, |(h, _)| &raw[..h.len() + 1])
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                h
            } else {
                raw
            }
        })
    };
    let host = host.trim_end_matches('.');
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        std::borrow::Cow::Owned(host.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(host)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(toml: &str) -> RouteTable {
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/t.toml"));
        let config = crate::config::from_str_with_env(toml, path, &|_| None).unwrap();
        RouteTable::build(&config, &HashMap::new(), &HashMap::new())
    }

    fn hit(t: &RouteTable, host: &str, path: &str) -> Option<(String, usize)> {
        t.find(host, path)
            .map(|m| (m.app.name.to_string(), m.strip))
    }

    const APPS: &str = r#"
[apps.web]
routes = [{ host = "web.localhost" }, { host = "*.web.localhost" }]
upstreams = ["127.0.0.1:1"]
[apps.api]
routes = [{ path = "/api", strip_prefix = true }, { host = "web.localhost", path = "/api/v2" }]
upstreams = ["127.0.0.1:2"]
[apps.deep]
routes = [{ host = "*.eu.web.localhost" }]
upstreams = ["127.0.0.1:3"]
[apps.root]
routes = [{ path = "/" }]
upstreams = ["127.0.0.1:4"]
"#;

    #[test]
    fn exact_host_wins_then_longest_path() {
        let t = table(APPS);
        assert_eq!(hit(&t, "web.localhost", "/"), Some(("web".into(), 0)));
        assert_eq!(
            hit(&t, "web.localhost", "/api/v2/x"),
            Some(("api".into(), 0))
        );
        assert_eq!(hit(&t, "web.localhost", "/api/v1"), Some(("web".into(), 0)));
    }

    #[test]
    fn wildcards_match_subdomains_only_longest_suffix_first() {
        let t = table(APPS);
        assert_eq!(hit(&t, "a.web.localhost", "/"), Some(("web".into(), 0)));
        assert_eq!(hit(&t, "x.eu.web.localhost", "/"), Some(("deep".into(), 0)));
        assert_eq!(hit(&t, "eu.web.localhost", "/"), Some(("web".into(), 0)));
    }

    #[test]
    fn path_prefixes_respect_segment_boundaries_and_strip() {
        let t = table(APPS);
        assert_eq!(hit(&t, "other", "/api"), Some(("api".into(), 4)));
        assert_eq!(hit(&t, "other", "/api/users"), Some(("api".into(), 4)));
        assert_eq!(hit(&t, "other", "/apix"), Some(("root".into(), 0)));
    }

    #[test]
    fn no_match_without_a_catch_all() {
        let t = table("[apps.a]\nroutes = [{ host = \"a.localhost\", path = \"/x\" }]\nupstreams = [\"127.0.0.1:1\"]\n");
        assert!(t.find("a.localhost", "/y").is_none());
        assert!(t.find("b.localhost", "/x").is_none());
    }

    #[test]
    fn host_normalization_drops_port_and_case() {
        assert_eq!(normalize_host("Web.LocalHost:8080"), "web.localhost");
        assert_eq!(normalize_host("web.localhost."), "web.localhost");
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert_eq!(normalize_host("127.0.0.1"), "127.0.0.1");
    }
}
