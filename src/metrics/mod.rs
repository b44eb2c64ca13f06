//! `GET /metrics`: Prometheus metrics with `prometheus-client`.
//!
//! Where each figure comes from (one seam each, nothing woven into the
//! gateway or the supervisor):
//! - requests, their duration: [`Metrics`] is an [`Observer`] of the
//!   gateway's one typed [`RequestOutcome`]; breaker trips from its
//!   breaker changes;
//! - restarts, drains, reloads: the harbor's event stream ([`Metrics::follow`]);
//! - instance states, breaker states, in-flight, connections, probe
//!   failures, the process's own figures: read at scrape time from the
//!   harbor ([`Scrape`]) and `/proc/self`.
//!
//! The hot path: per request one lookup of the app's handles in the calling
//! thread's own cache (an FNV hash of the app name, no lock; the handles are
//! made on the app's first request on that thread and kept), a scan of the
//! few (status, outcome) counters that app has seen there, one counter
//! increment and one histogram observation, both in the thread's own shard
//! ([`histogram`]). Nothing is allocated and no line is shared with another
//! worker after an app's first request of each kind (bench/RESULTS.md has
//! the measurement).

mod format;
mod histogram;
pub mod mcp;
mod process;

use std::cell::RefCell;
use std::sync::Mutex;
use std::time::Duration;

use fnv::FnvHashMap;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::admin::api::{Event, EventKind, Health};
use crate::observe::{BreakerChange, Observer, RequestOutcome};
pub use format::{to_prometheus_text, wants_openmetrics, OPENMETRICS, PROMETHEUS_TEXT};
pub use histogram::{Durations, Hits, BUCKETS};
pub use process::ProcessStats;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    app: String,
    code: u16,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabel {
    app: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InstanceLabels {
    app: String,
    instance: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    app: String,
    instance: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    app: String,
    probe: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerLabel {
    listener: &'static str,
}

/// One app's request handles, resolved once per thread.
struct AppHandles {
    duration: Durations,
    /// (status << 8 | outcome) → its counter; a handful per app.
    requests: Vec<(u32, Hits)>,
}

/// The handles of each app a thread counted requests for.
type AppsHandles = FnvHashMap<Box<str>, AppHandles>;

thread_local! {
    /// Per [`Metrics`] (by id), this thread's handles. A harbor's metrics
    /// live as long as its gateway workers, so what a thread keeps goes
    /// with it.
    static HANDLES: RefCell<Vec<(u64, AppsHandles)>> = const { RefCell::new(Vec::new()) };
}

/// What the harbor is like at scrape time.
#[derive(Debug)]
pub struct Scrape<'a> {
    pub health: &'a Health,
    /// Gateway client connections open now.
    pub connections: usize,
    /// ((app, probe kind), failures so far).
    pub probe_failures: Vec<((String, &'static str), u64)>,
}

/// Every harbormaster metric; one per harbor.
pub struct Metrics {
    registry: Registry,
    /// Tells this harbor's handles from another's in [`HANDLES`].
    id: u64,
    requests: Family<RequestLabels, Hits>,
    durations: Family<AppLabel, Durations>,
    in_flight: Family<AppLabel, Gauge>,
    instance_state: Family<StateLabels, Gauge>,
    restarts: Family<AppLabel, Counter>,
    breaker_state: Family<InstanceLabels, Gauge>,
    breaker_trips: Family<AppLabel, Counter>,
    probe_failures: Family<ProbeLabels, Counter>,
    reloads: Family<ResultLabel, Counter>,
    drains: Family<AppLabel, Counter>,
    connections: Family<ListenerLabel, Gauge>,
    resident: Gauge,
    fds: Gauge,
    cpu: Counter<f64, std::sync::atomic::AtomicU64>,
    mcp: mcp::McpMetrics,
    /// One scrape at a time (a scrape resets the per-instance gauges).
    scraping: Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let m = Self {
            registry: Registry::default(),
            id: crate::sharded::owner_id(),
            requests: Family::default(),
            durations: Family::default(),
            in_flight: Family::default(),
            instance_state: Family::default(),
            restarts: Family::default(),
            breaker_state: Family::default(),
            breaker_trips: Family::default(),
            probe_failures: Family::default(),
            reloads: Family::default(),
            drains: Family::default(),
            connections: Family::default(),
            resident: Gauge::default(),
            fds: Gauge::default(),
            cpu: Counter::default(),
            mcp: Default::default(),
            scraping: Mutex::default(),
        };
        let mut r = Registry::default();
        r.register(
            "harbormaster_http_requests",
            "Requests answered, by app (empty: no route), status code and outcome",
            m.requests.clone(),
        );
        r.register(
            "harbormaster_http_request_duration_seconds",
            "Time from a request's arrival to its response's last byte",
            m.durations.clone(),
        );
        r.register(
            "harbormaster_http_in_flight",
            "Requests in flight",
            m.in_flight.clone(),
        );
        r.register(
            "harbormaster_instance_state",
            "1 for each instance's current state",
            m.instance_state.clone(),
        );
        r.register(
            "harbormaster_instance_restarts",
            "Instances restarted after they ended on their own",
            m.restarts.clone(),
        );
        r.register(
            "harbormaster_breaker_state",
            "Circuit breaker: 0 closed, 1 half-open, 2 open",
            m.breaker_state.clone(),
        );
        r.register(
            "harbormaster_breaker_trips",
            "Circuit breakers that opened",
            m.breaker_trips.clone(),
        );
        r.register(
            "harbormaster_probe_failures",
            "Failed health probes, by probe kind (http, tcp, exec)",
            m.probe_failures.clone(),
        );
        r.register(
            "harbormaster_reloads",
            "Config reloads, by result (ok, error)",
            m.reloads.clone(),
        );
        r.register("harbormaster_drains", "Drains of an app", m.drains.clone());
        r.register(
            "harbormaster_connections",
            "Client connections open",
            m.connections.clone(),
        );
        r.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            m.resident.clone(),
        );
        r.register("process_open_fds", "Open file descriptors", m.fds.clone());
        r.register(
            "process_cpu_seconds",
            "User and system CPU time spent, in seconds",
            m.cpu.clone(),
        );
        m.mcp.register(&mut r);
        Self { registry: r, ..m }
    }

    /// Counts a request of `app` in the calling thread's handles.
    fn count(&self, app: &str, status: u16, outcome: crate::observe::Kind, took: Duration) {
        HANDLES.with(|handles| {
            let mut handles = handles.borrow_mut();
            let apps = crate::sharded::entry(&mut handles, self.id);
            let key = u32::from(status) << 8 | outcome as u32;
            if let Some(h) = apps.get_mut(app) {
                h.duration.observe(took);
                if let Some((_, c)) = h.requests.iter().find(|(k, _)| *k == key) {
                    c.inc();
                    return;
                }
            }
            // This thread's first request of `app`, or of this kind.
            let h = apps.entry(app.into()).or_insert_with(|| {
                let label = AppLabel { app: app.into() };
                let duration = self.durations.get_or_create(&label).clone();
                duration.observe(took);
                let requests = Vec::new();
                AppHandles { duration, requests }
            });
            let labels = RequestLabels {
                app: app.to_string(),
                code: status,
                outcome: outcome.name(),
            };
            let counter = self.requests.get_or_create(&labels).clone();
            counter.inc();
            h.requests.push((key, counter));
        });
    }

    /// Counts restarts, drains and reloads from the harbor's events until
    /// `cancel` (subscribe before the apps start: none is missed).
    pub async fn follow(&self, mut events: broadcast::Receiver<Event>, cancel: CancellationToken) {
        loop {
            let event = tokio::select! {
                e = events.recv() => e,
                _ = cancel.cancelled() => return,
            };
            let event = match event {
                Ok(e) => e,
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "metrics missed events");
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            self.event(&event);
        }
    }

    fn event(&self, event: &Event) {
        let app = || AppLabel {
            app: event.app.clone().unwrap_or_default(),
        };
        match &event.what {
            EventKind::StateChange { to, .. } if to == "restarting" => {
                self.restarts.get_or_create(&app()).inc();
            }
            EventKind::Drain { draining: true } => {
                self.drains.get_or_create(&app()).inc();
            }
            EventKind::Reload { ok, .. } => {
                let result = if *ok { "ok" } else { "error" };
                self.reloads.get_or_create(&ResultLabel { result }).inc();
            }
            _ => {}
        }
    }

    /// The exposition: OpenMetrics, or the Prometheus text format.
    pub fn render(&self, s: &Scrape<'_>, openmetrics: bool) -> String {
        let _one = self.scraping.lock().unwrap_or_else(|p| p.into_inner());
        self.in_flight.clear();
        self.instance_state.clear();
        self.breaker_state.clear();
        for result in ["ok", "error"] {
            let _ = self.reloads.get_or_create(&ResultLabel { result });
        }
        for (name, app) in &s.health.apps {
            let label = AppLabel { app: name.clone() };
            // Every app has its counters from the start, at 0.
            for family in [&self.restarts, &self.drains, &self.breaker_trips] {
                let _ = family.get_or_create(&label);
            }
            let _ = self.durations.get_or_create(&label);
            self.in_flight
                .get_or_create(&label)
                .set(app.in_flight as i64);
            for i in &app.instances {
                let instance = InstanceLabels {
                    app: name.clone(),
                    instance: i.id.clone(),
                };
                let state = StateLabels {
                    app: name.clone(),
                    instance: i.id.clone(),
                    state: i.state.clone(),
                };
                self.instance_state.get_or_create(&state).set(1);
                let breaker = match i.breaker.as_str() {
                    "half_open" => 1,
                    "open" => 2,
                    _ => 0,
                };
                self.breaker_state.get_or_create(&instance).set(breaker);
            }
        }
        for ((app, probe), n) in &s.probe_failures {
            let c = self.probe_failures.get_or_create(&ProbeLabels {
                app: app.clone(),
                probe,
            });
            c.inc_by(n.saturating_sub(c.get()));
        }
        self.connections
            .get_or_create(&ListenerLabel {
                listener: "gateway",
            })
            .set(s.connections as i64);
        if let Some(audit) = &s.health.audit {
            self.mcp.audit(audit);
        }
        let p = ProcessStats::read();
        self.resident.set(p.resident_bytes.unwrap_or(0) as i64);
        self.fds.set(p.open_fds.unwrap_or(0) as i64);
        if let Some(cpu) = p.cpu_seconds {
            let seen = self.cpu.get();
            if cpu > seen {
                self.cpu.inc_by(cpu - seen);
            }
        }
        let mut text = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(error = %e, "cannot encode the metrics");
        }
        if openmetrics {
            text
        } else {
            to_prometheus_text(&text)
        }
    }
}

impl Observer for Metrics {
    fn request(&self, o: &RequestOutcome<'_>) {
        self.count(o.app.unwrap_or(""), o.status, o.kind, o.duration);
    }

    /// Labels are bounded: no path, host or method is ever read.
    fn reads_request_line(&self) -> bool {
        false
    }

    fn breaker(&self, change: &BreakerChange<'_>) {
        if change.to == "open" {
            let app = AppLabel {
                app: change.app.into(),
            };
            self.breaker_trips.get_or_create(&app).inc();
        }
    }
}

#[cfg(test)]
mod tests;
