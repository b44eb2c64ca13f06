//! `GET /metrics` as Prometheus sees it: the exposition is parsed by the
//! reference parser (Python's `prometheus_client`, installed by
//! `scripts/deps/python-prometheus.sh` into target/peers/venv), and the
//! counters match the traffic and the events exactly.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::harbor::{eventually, request, testapp_command, Harbor};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// (sample name, labels, value) as the reference parser read them.
type Samples = Vec<(String, BTreeMap<String, String>, f64)>;

fn python() -> PathBuf {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peers/venv/bin/python");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/deps/python-prometheus.sh (scripts/test.sh does)",
        venv.display()
    );
    venv
}

/// Parses `text` with prometheus_client's parser for `format`
/// (`prometheus` or `openmetrics`); a parse error fails the test.
fn parse(text: &str, format: &str) -> Samples {
    let parser = match format {
        "openmetrics" => "prometheus_client.openmetrics.parser",
        _ => "prometheus_client.parser",
    };
    let script = format!(
        "import sys, json\nfrom {parser} import text_string_to_metric_families as parse\n\
         print(json.dumps([[s.name, s.labels, s.value] for f in parse(sys.stdin.read()) for s in f.samples]))"
    );
    let mut child = Command::new(python())
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the {format} parser refused the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn value(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && labels.len() == l.len()
                && labels
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
}

/// `GET /metrics` on the admin TCP listener, with an `Accept` header.
fn scrape_tcp(h: &Harbor, accept: &str) -> String {
    let headers = format!("Accept: {accept}\r\n");
    let (code, body) = request(h.admin(), "GET", "x", "/metrics", &headers).expect("metrics");
    assert_eq!(code, 200, "{body}");
    body
}

/// `GET /metrics` over `admin.sock`.
fn scrape_socket(h: &Harbor) -> String {
    let socket = find(&support::xdg(&h.dir), "admin.sock").expect("admin.sock");
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(SECS(10))).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out.split_once("\r\n\r\n").unwrap().1.to_string()
}

fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == name) {
            return Some(path);
        }
        if path.is_dir() {
            if let Some(found) = find(&path, name) {
                return Some(found);
            }
        }
    }
    None
}

fn config(extra: &str) -> String {
    format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\n[apps.web]\nroutes = [{{ host = \"web.localhost\" }}]\ncommand = {}\n{extra}\n",
        testapp_command(&["--port", "{port}"])
    )
}

fn get(h: &Harbor, path: &str) -> u16 {
    request(h.gateway(0), "GET", "web.localhost", path, "")
        .map(|(code, _)| code)
        .unwrap_or(0)
}

#[test]
fn counters_are_exactly_the_traffic_sent() {
    let python = python(); // fail early without the parser
    drop(python);
    let h = Harbor::start(&config(""));
    // Warm up on a status of its own, so the counted ones stay exact.
    eventually(SECS(20), "web answers", || get(&h, "/status/202") == 202);
    for _ in 0..100 {
        assert_eq!(get(&h, "/"), 200);
    }
    for _ in 0..7 {
        assert_eq!(get(&h, "/status/404"), 404);
    }
    let drained = support::verb(&h.dir, &["drain", "web"]);
    assert_eq!(drained.code, 0, "{drained:?}");
    for _ in 0..3 {
        assert_eq!(get(&h, "/"), 503);
    }
    let count = |s: &Samples, code: &str, outcome: &str| {
        let labels = [("app", "web"), ("code", code), ("outcome", outcome)];
        value(s, "harbormaster_http_requests_total", &labels)
    };
    // The last outcome is recorded when its response body has ended.
    eventually(SECS(10), "the counters catch up", || {
        let s = parse(&scrape_tcp(&h, "text/plain"), "prometheus");
        count(&s, "200", "ok") == Some(100.0) && count(&s, "503", "draining") == Some(3.0)
    });
    let s = parse(&scrape_tcp(&h, "text/plain"), "prometheus");
    assert_eq!(count(&s, "200", "ok"), Some(100.0));
    assert_eq!(count(&s, "404", "ok"), Some(7.0));
    assert_eq!(count(&s, "503", "draining"), Some(3.0));
    let web = [("app", "web")];
    let drains = value(&s, "harbormaster_drains_total", &web);
    assert_eq!(drains, Some(1.0));
    let warmups = count(&s, "202", "ok").unwrap();
    let observed = value(&s, "harbormaster_http_request_duration_seconds_count", &web);
    let not_ready = count(&s, "503", "no_ready_instance").unwrap_or(0.0);
    assert_eq!(observed, Some(110.0 + warmups + not_ready));
    let state = [("app", "web"), ("instance", "web#0"), ("state", "ready")];
    assert_eq!(value(&s, "harbormaster_instance_state", &state), Some(1.0));
    let breaker = [("app", "web"), ("instance", "web#0")];
    assert_eq!(value(&s, "harbormaster_breaker_state", &breaker), Some(0.0));
    assert_eq!(value(&s, "harbormaster_http_in_flight", &web), Some(0.0));
    let gateway = [("listener", "gateway")];
    assert!(value(&s, "harbormaster_connections", &gateway).is_some());
    assert!(value(&s, "process_resident_memory_bytes", &[]).unwrap() > 1e6);
    assert!(value(&s, "process_open_fds", &[]).unwrap() > 3.0);
    assert!(value(&s, "process_cpu_seconds_total", &[]).is_some());
    // Bounded labels: no path, no client address.
    let text = scrape_tcp(&h, "*/*");
    assert!(
        !text.contains("/status/404") && !text.contains("127.0.0.1"),
        "{text}"
    );

    // The same figures in OpenMetrics when asked, and over admin.sock.
    let om = scrape_tcp(&h, "application/openmetrics-text; version=1.0.0");
    assert!(om.ends_with("# EOF\n"));
    let s = parse(&om, "openmetrics");
    assert_eq!(count(&s, "200", "ok"), Some(100.0));
    let s = parse(&scrape_socket(&h), "prometheus");
    assert_eq!(count(&s, "404", "ok"), Some(7.0));
}

/// A response without a body (204) is never polled by hyper: it still
/// counts as answered, not as a client that went away.
#[test]
fn an_empty_response_counts_as_ok() {
    let h = Harbor::start(&config(""));
    eventually(SECS(20), "web answers", || get(&h, "/status/202") == 202);
    for _ in 0..5 {
        assert_eq!(get(&h, "/status/204"), 204);
    }
    let count = |outcome: &str| {
        let s = parse(&scrape_tcp(&h, "text/plain"), "prometheus");
        let labels = [("app", "web"), ("code", "204"), ("outcome", outcome)];
        value(&s, "harbormaster_http_requests_total", &labels)
    };
    eventually(SECS(10), "five 204s counted", || count("ok") == Some(5.0));
    assert_eq!(count("client_gone"), None);
}

#[test]
fn restarts_rise_by_one_after_kill_9() {
    let h = Harbor::start(&config(
        "[apps.web.readiness]\nhttp = \"/ready\"\ninterval = \"200ms\"\n",
    ));
    let spawned = h.wait_spawned("web#0", 0);
    h.wait_state("web#0", "ready", 0);
    let restarts =
        |s: &Samples| value(s, "harbormaster_instance_restarts_total", &[("app", "web")]);
    let before = parse(&scrape_tcp(&h, "text/plain"), "prometheus");
    assert_eq!(restarts(&before), Some(0.0));
    let pid = spawned["reason"]
        .as_str()
        .and_then(|r| r.strip_prefix("pid "))
        .and_then(|r| r.split(',').next())
        .and_then(|p| p.parse::<i32>().ok())
        .expect("the instance's pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    h.wait_state("web#0", "ready", 1);
    eventually(SECS(10), "the restart is counted", || {
        restarts(&parse(&scrape_tcp(&h, "text/plain"), "prometheus")) == Some(1.0)
    });
    let failures = [("app", "web"), ("probe", "http")];
    let after = parse(&scrape_tcp(&h, "text/plain"), "prometheus");
    assert_eq!(restarts(&after), Some(1.0));
    // The readiness probe failed against the dead instance at most a few
    // times; the family is there once it did.
    let _ = value(&after, "harbormaster_probe_failures_total", &failures);
}
