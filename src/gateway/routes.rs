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
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    /// Requests in flight to its app (the app's drain).
    pub app_in_flight: Arc<Counter>,
    /// Requests in flight through the gateway (shutdown's drain).
    pub gateway_in_flight: Arc<Counter>,
    /// Fed by request outcomes; an open breaker takes the instance out of rotation.
    pub breaker: Arc<InstanceBreaker>,
    /// Set when a rolling restart replaces this instance: no new requests.
    pub retired: Arc<AtomicBool>,
    /// One permit per open upstream connection (`max_upstream_connections`).
    pub conns: Arc<super::ConnLimit>,
    /// Who hears of the requests it answers (the gateway's observers): a
    /// request's outcome, told when its guard drops, finds them here
    /// rather than in a copy of its own.
    pub observers: Observers,
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
            app_in_flight: Arc::default(),
            gateway_in_flight: Arc::default(),
            breaker,
            retired: Arc::default(),
            conns: super::ConnLimit::new(usize::MAX),
            observers: Observers::default(),
        }
    }

    /// Shares a retirement flag and connection limit kept across table
    /// snapshots, and the in-flight counts of its app and of the gateway.
    pub fn with_shared(
        mut self,
        retired: Arc<AtomicBool>,
        conns: Arc<super::ConnLimit>,
        app_in_flight: Arc<Counter>,
        gateway_in_flight: Arc<Counter>,
    ) -> Self {
        self.retired = retired;
        self.conns = conns;
        self.app_in_flight = app_in_flight;
        self.gateway_in_flight = gateway_in_flight;
        self
    }

    /// Tells `observers` of the requests it answers.
    pub fn observed(mut self, observers: Observers) -> Self {
        self.observers = observers;
        self
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Asks the breaker to let one request through (logs a move to half-open).
    pub fn admit(&self, now: Instant) -> Admission {
        if self.breaker.is_clean() {
            return Admission::Allow;
        }
        let (admission, transition) = self.breaker.update(|b| b.admit(now));
        if let Some(t) = transition {
            self.breaker.transitioned(&self.label, t);
        }
        admission
    }

    /// Whether the breaker is open (not yet due for half-open) at `now`.
    pub fn is_open(&self, now: Instant) -> bool {
        !self.breaker.is_clean() && matches!(self.breaker.state(now), BreakerState::Open { .. })
    }

    /// Records a request's outcome.
    pub fn record(&self, success: bool, now: Instant) {
        if success && self.breaker.is_clean() {
            return;
        }
        let transition = self.breaker.update(|b| b.record(success, now));
        if let Some(t) = transition {
            self.breaker.transitioned(&self.label, t);
        }
    }
}

/// An instance's circuit breaker, and who hears of its changes.
///
/// Both gateway workers ask it about every request. While it is closed and
/// has seen no failure, admitting and recording a success change nothing,
/// so they read one flag instead of taking the mutex (whose line the two
/// cores would pass back and forth). A request that reads the flag just
/// before another's failure is set is ordered before that failure.
#[derive(Debug)]
pub struct InstanceBreaker {
    state: Mutex<Breaker>,
    /// `Breaker::is_clean`, as of the last change under the mutex.
    clean: AtomicBool,
    /// The app, for the observers (`None`: nobody is told).
    app: Option<(String, Observers)>,
}

impl InstanceBreaker {
    pub fn new(breaker: Breaker) -> Self {
        Self {
            clean: AtomicBool::new(breaker.is_clean()),
            state: Mutex::new(breaker),
            app: None,
        }
    }

    /// Tells `observers` of every change, naming `app`.
    pub fn observed(mut self, app: &str, observers: Observers) -> Self {
        self.app = Some((app.to_string(), observers));
        self
    }

    /// The breaker's state at `now`.
    pub fn state(&self, now: Instant) -> BreakerState {
        self.lock().state(now)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes the breaker under its mutex and republishes the flag.
    fn update<R>(&self, f: impl FnOnce(&mut Breaker) -> R) -> R {
        let mut breaker = self.lock();
        let r = f(&mut breaker);
        self.clean.store(breaker.is_clean(), Ordering::Release);
        r
    }

    fn is_clean(&self) -> bool {
        self.clean.load(Ordering::Acquire)
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
    /// The round robin's turn, one for the app (a turn per worker would
    /// send a client's consecutive connections, landing on different
    /// workers, to the same instance).
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
    /// holds several and its label); in a worker's copy of the table
    /// (`published`), only that worker writes its count.
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

    /// A copy for one worker thread: the same routes to new `AppEntry` and
    /// `Upstream` allocations (whose reference counts only that thread
    /// writes), sharing their counters, breakers and flags with the
    /// original (`published`).
    pub fn per_thread_copy(&self) -> Self {
        let mut apps: HashMap<*const AppEntry, Arc<AppEntry>> = HashMap::new();
        let mut copy = |routes: &Vec<PathRoute>| -> Vec<PathRoute> {
            routes
                .iter()
                .map(|r| PathRoute {
                    prefix: r.prefix.clone(),
                    strip: r.strip,
                    app: apps
                        .entry(Arc::as_ptr(&r.app))
                        .or_insert_with(|| {
                            Arc::new(AppEntry {
                                upstreams: r
                                    .app
                                    .upstreams
                                    .iter()
                                    .map(|u| Arc::new(Upstream::clone(u)))
                                    .collect(),
                                shared: r.app.shared.clone(),
                                name: r.app.name.clone(),
                                ..*r.app
                            })
                        })
                        .clone(),
                })
                .collect()
        };
        Self {
            exact: self
                .exact
                .iter()
                .map(|(h, r)| (h.clone(), copy(r)))
                .collect(),
            wildcard: self
                .wildcard
                .iter()
                .map(|(s, r)| (s.clone(), copy(r)))
                .collect(),
            any_host: copy(&self.any_host),
        }
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

/// Tables and instances for the gateway's unit tests.
#[cfg(test)]
pub(super) mod testing {
    use super::*;

    /// The table for `toml`'s apps (without upstreams).
    pub fn table(toml: &str) -> RouteTable {
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/t.toml"));
        let config = crate::config::from_str_with_env(toml, path, &|_| None).unwrap();
        RouteTable::build(&config, &HashMap::new(), &HashMap::new())
    }

    /// `web#n` at 127.0.0.1:(1000 + n), its breaker opening at the first
    /// failure for 10 s.
    pub fn upstream(n: u16) -> Upstream {
        let cb = crate::config::CircuitBreaker {
            failures: std::num::NonZeroU32::MIN,
            open_for: std::time::Duration::from_secs(10),
            max_open_for: std::time::Duration::from_secs(60),
            half_open_requests: std::num::NonZeroU32::MIN,
            trip_on_5xx: false,
        };
        let breaker = Arc::new(InstanceBreaker::new(Breaker::new(cb)));
        let addr = ([127, 0, 0, 1], 1000 + n).into();
        Upstream::new(format!("web#{n}"), addr, Arc::default(), breaker)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::table;
    use super::*;

    /// `APPS`, with one upstream for `web`.
    fn table_with_upstream() -> RouteTable {
        let path = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/t.toml"));
        let config = crate::config::from_str_with_env(APPS, path, &|_| None).unwrap();
        let web = AppName::new("web").unwrap();
        let upstreams = HashMap::from([(web, vec![super::testing::upstream(0)])]);
        RouteTable::build(&config, &upstreams, &HashMap::new())
    }

    #[test]
    fn a_per_thread_copy_routes_alike_with_its_own_entries_and_the_same_counters() {
        let t = table_with_upstream();
        let copy = t.per_thread_copy();
        for (host, path) in [
            ("web.localhost", "/"),
            ("a.web.localhost", "/x"),
            ("x", "/api/1"),
        ] {
            assert_eq!(hit(&copy, host, path), hit(&t, host, path));
        }
        let original = t.find("web.localhost", "/").unwrap().app;
        let mine = copy.find("web.localhost", "/").unwrap().app;
        assert!(!Arc::ptr_eq(original, mine), "the worker's own entry");
        assert!(Arc::ptr_eq(&original.shared, &mine.shared));
        let (u, v) = (&original.upstreams[0], &mine.upstreams[0]);
        assert!(!Arc::ptr_eq(u, v), "the worker's own instance");
        assert!(Arc::ptr_eq(&u.in_flight, &v.in_flight));
        assert!(Arc::ptr_eq(&u.breaker, &v.breaker));
        assert!(Arc::ptr_eq(&u.retired, &v.retired));
        // Both routes of `web` lead to the one copy of its entry.
        let wild = copy.find("a.web.localhost", "/").unwrap().app;
        assert!(Arc::ptr_eq(mine, wild));
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
