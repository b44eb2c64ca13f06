use std::collections::BTreeMap;
use std::time::Duration;

use super::*;
use crate::admin::api::{AppHealth, InstanceHealth};
use crate::observe::Kind;

fn outcome(app: Option<&str>, status: u16, kind: Kind) -> RequestOutcome<'_> {
    RequestOutcome {
        app,
        instance: None,
        client: std::net::Ipv4Addr::LOCALHOST.into(),
        method: "GET",
        host: "web.localhost",
        path: "/secret/path",
        status,
        kind,
        bytes_in: 0,
        bytes_out: 0,
        duration: Duration::from_micros(300),
    }
}

fn health() -> Health {
    let instance = InstanceHealth {
        id: "web#0".into(),
        state: "ready".into(),
        ready: true,
        breaker: "open".into(),
        ..Default::default()
    };
    let app = AppHealth {
        kind: "managed".into(),
        required: true,
        ready: true,
        draining: false,
        restarting: false,
        waiting: None,
        restart_error: None,
        in_flight: 2,
        instances: vec![instance],
    };
    Health {
        version: "0".into(),
        pid: 1,
        uptime_s: 1,
        status: "ok".into(),
        in_flight: 2,
        apps: BTreeMap::from([("web".to_string(), app)]),
        last_reload: None,
        audit: None,
    }
}

fn scrape(m: &Metrics, openmetrics: bool) -> String {
    let health = health();
    let s = Scrape {
        health: &health,
        connections: 3,
        probe_failures: vec![(("web".into(), "http"), 4)],
    };
    m.render(&s, openmetrics)
}

#[test]
fn requests_are_counted_by_app_code_and_outcome_without_paths() {
    let m = Metrics::new();
    for _ in 0..3 {
        m.request(&outcome(Some("web"), 200, Kind::Ok));
    }
    m.request(&outcome(Some("web"), 503, Kind::Draining));
    m.request(&outcome(None, 404, Kind::NoRoute));
    let text = scrape(&m, false);
    assert!(text
        .contains("harbormaster_http_requests_total{app=\"web\",code=\"200\",outcome=\"ok\"} 3\n"));
    assert!(text.contains(
        "harbormaster_http_requests_total{app=\"web\",code=\"503\",outcome=\"draining\"} 1\n"
    ));
    assert!(text.contains(
        "harbormaster_http_requests_total{app=\"\",code=\"404\",outcome=\"no_route\"} 1\n"
    ));
    assert!(text.contains("harbormaster_http_request_duration_seconds_count{app=\"web\"} 4\n"));
    assert!(text.contains("# TYPE harbormaster_http_requests_total counter\n"));
    assert!(!text.contains("secret"), "no paths in labels");
    assert!(!text.contains("# EOF"));
}

#[test]
fn scrape_reads_states_breakers_in_flight_and_probes() {
    let m = Metrics::new();
    let text = scrape(&m, true);
    for line in [
        "harbormaster_instance_state{app=\"web\",instance=\"web#0\",state=\"ready\"} 1",
        "harbormaster_breaker_state{app=\"web\",instance=\"web#0\"} 2",
        "harbormaster_http_in_flight{app=\"web\"} 2",
        "harbormaster_probe_failures_total{app=\"web\",probe=\"http\"} 4",
        "harbormaster_instance_restarts_total{app=\"web\"} 0",
        "harbormaster_connections{listener=\"gateway\"} 3",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    assert!(text.ends_with("# EOF\n"));
    // A second scrape does not count probe failures twice.
    assert!(scrape(&m, true)
        .contains("harbormaster_probe_failures_total{app=\"web\",probe=\"http\"} 4"));
}

#[test]
fn events_count_restarts_drains_and_reloads() {
    let m = Metrics::new();
    let restart = EventKind::StateChange {
        from: "ready".into(),
        to: "restarting".into(),
        reason: "killed".into(),
    };
    m.event(&Event::new(
        Some("web".into()),
        Some("web#0".into()),
        restart,
    ));
    m.event(&Event::new(
        Some("web".into()),
        None,
        EventKind::Drain { draining: true },
    ));
    m.event(&Event::new(
        Some("web".into()),
        None,
        EventKind::Drain { draining: false },
    ));
    let reload = EventKind::Reload {
        ok: false,
        message: "bad".into(),
    };
    m.event(&Event::new(None, None, reload));
    let text = scrape(&m, false);
    assert!(text.contains("harbormaster_instance_restarts_total{app=\"web\"} 1\n"));
    assert!(text.contains("harbormaster_drains_total{app=\"web\"} 1\n"));
    assert!(text.contains("harbormaster_reloads_total{result=\"error\"} 1\n"));
    assert!(text.contains("harbormaster_reloads_total{result=\"ok\"} 0\n"));
}
