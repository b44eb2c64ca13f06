//! Failures that recover by themselves, through the real binary: dependents
//! that wait and start once their dependency is ready, `start` that fails
//! fast, restarts with a deadline, reloads and restarts that take turns, and
//! the event stream.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use support::harbor::{eventually, testapp_command, Harbor};

const SECS: fn(u64) -> Duration = Duration::from_secs;
const NO_WATCH: &[&str] = &["--no-watch"];
const LISTEN: &str = "[gateway]\nlisten = [\"127.0.0.1:0\"]\ndrain_timeout = \"5s\"\n";

/// `api` runs testapp only once `flag` exists, else exits 1; `web` needs it ready.
fn api_and_web(flag: &std::path::Path, restart: &str) -> String {
    let testapp = support::harbor::testapp().display().to_string();
    format!(
        "{LISTEN}[apps.api]\nroutes = [{{ host = \"api.localhost\" }}]\nshell = true\n\
         command = \"echo api needs {flag}; test -f '{flag}' && exec '{testapp}'; exit 1\"\n\
         [apps.api.restart]\n{restart}\n\
         [apps.web]\nroutes = [{{ path = \"/\" }}]\ncommand = {web}\ndepends_on = {{ api = \"ready\" }}\n",
        flag = flag.display(),
        web = testapp_command(&[]),
    )
}

fn status_json(h: &Harbor) -> Value {
    serde_json::from_str(&support::verb(&h.dir, &["status", "--json"]).stdout).unwrap()
}

#[test]
fn a_dependent_waits_visibly_and_starts_once_its_dependency_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("api-may-start");
    let restart = "backoff_initial = \"50ms\"\nbackoff_max = \"200ms\"\nmax_restarts = 1000";
    let h = Harbor::start_in(dir.path(), &api_and_web(&flag, restart), NO_WATCH);
    h.wait_state("api#0", "restarting", 0);
    eventually(SECS(10), "web is shown waiting", || {
        status_json(&h)["apps"]["web"]["waiting"] == "waiting for api to be ready"
    });
    let table = support::verb(&h.dir, &["status"]);
    assert_eq!(table.code, 0, "{table:?}");
    assert!(table.stdout.contains("web  -"), "{}", table.stdout);
    assert!(
        table.stdout.contains("↳ waiting for api to be ready"),
        "{}",
        table.stdout
    );
    assert!(table.stdout.lines().all(|l| l.chars().count() <= 100));

    // No CLI call: the dependency's own backoff brings it up, then web starts.
    std::fs::write(&flag, "").unwrap();
    h.wait_state("api#0", "ready", 0);
    h.wait_state("web#0", "ready", 0);
    assert!(status_json(&h)["apps"]["web"]["waiting"].is_null());
}

#[test]
fn a_failed_dependency_fixed_by_reload_starts_its_dependent() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("api-may-start");
    let restart = "backoff_initial = \"0ms\"\nbackoff_max = \"10ms\"\nmax_restarts = 1";
    let h = Harbor::start_in(dir.path(), &api_and_web(&flag, restart), NO_WATCH);
    h.wait_state("api#0", "failed", 0);
    let status = support::verb(&h.dir, &["status"]);
    assert_eq!(status.code, 1, "a required app failed: {status:?}");
    assert!(status.stderr.contains("api"), "{status:?}");

    // Fixed (the flag exists) and changed (so the reload replaces api).
    std::fs::write(&flag, "").unwrap();
    let fixed = api_and_web(&flag, restart).replace(
        "[apps.api.restart]",
        "env = { FIXED = \"1\" }\n[apps.api.restart]",
    );
    std::fs::write(h.dir.join("harbormaster.toml"), fixed).unwrap();
    let out = support::verb(&h.dir, &["reload"]);
    assert_eq!(out.code, 0, "{out:?}");
    h.wait_state("api#1", "ready", 0);
    h.wait_state("web#0", "ready", 0);
    assert_eq!(support::verb(&h.dir, &["status"]).code, 0);
}

#[test]
fn restart_of_a_failed_app_starts_it_with_a_fresh_budget() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("api-may-start");
    let restart = "backoff_initial = \"0ms\"\nbackoff_max = \"10ms\"\nmax_restarts = 1";
    let h = Harbor::start_in(dir.path(), &api_and_web(&flag, restart), NO_WATCH);
    h.wait_state("api#0", "failed", 0);
    std::fs::write(&flag, "").unwrap();
    let out = support::verb(&h.dir, &["restart", "api"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), "api: restarted (api#1)");
    h.wait_state("web#0", "ready", 0);
}

#[test]
// Wall-clock time of a real process is the point here (no tokio runtime).
#[allow(clippy::disallowed_types)]
fn start_returns_1_within_seconds_when_a_required_app_keeps_exiting() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{LISTEN}[apps.job]\nroutes = [{{ path = \"/\" }}]\nshell = true\n\
         command = \"echo 'the last words of job'; exit 3\"\n\
         [apps.job.restart]\nbackoff_initial = \"0ms\"\nbackoff_max = \"10ms\"\nmax_restarts = 2\n"
    );
    std::fs::write(dir.path().join("harbormaster.toml"), text).unwrap();
    let began = std::time::Instant::now();
    let out = support::verb(dir.path(), &["start"]);
    let took = began.elapsed();
    assert_eq!(out.code, 1, "{out:?}");
    assert!(took < SECS(5), "took {took:?}: {out:?}");
    assert!(out.stderr.contains("required app job failed"), "{out:?}");
    assert!(out.stderr.contains("the last words of job"), "{out:?}");
    // Nothing is left running for it.
    assert_eq!(support::verb(dir.path(), &["status"]).code, 3);
}

/// `web` runs testapp, or (once `flag` exists) a process that never listens.
fn web_unless(flag: &std::path::Path, extra: &str) -> String {
    let testapp = support::harbor::testapp().display().to_string();
    format!(
        "{LISTEN}[apps.web]\nroutes = [{{ path = \"/\" }}]\nshell = true\n\
         command = \"test -f '{flag}' && exec sleep 30; exec '{testapp}'\"\n{extra}\n",
        flag = flag.display(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_whose_replacement_never_gets_ready_fails_at_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("never-ready");
    let h = Harbor::start_in(dir.path(), &web_unless(&flag, "instances = 2"), NO_WATCH);
    h.wait_routable(2, "x", "/");
    let gw = h.gateway(0);
    let load = support::load::Load::start(
        (0..8)
            .map(|_| (reqwest::Method::GET, format!("http://{gw}/")))
            .collect(),
    );
    std::fs::write(&flag, "").unwrap();
    let began = tokio::time::Instant::now();
    let out = support::verb_in(&h.dir, &["restart", "web", "--timeout", "2s"])
        .await
        .unwrap();
    assert_eq!(out.code, 1, "{out:?}");
    assert!(began.elapsed() < SECS(10), "{:?}", began.elapsed());
    assert!(out.stderr.contains("did not become ready"), "{out:?}");
    std::fs::remove_file(&flag).unwrap();
    let again = support::verb_in(&h.dir, &["restart", "web"]).await.unwrap();
    assert_eq!(again.code, 0, "{again:?}");
    let (served, bad) = load.finish().await;
    assert!(bad.is_empty(), "failed requests: {bad:?}");
    assert!(served > 50, "too little load: {served}");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    // The failed replacements are gone; the next ones took their indexes.
    support::load::only_from(&client, gw, &["web-2-", "web-3-"], 6).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_during_a_rolling_restart_leaves_exactly_the_new_instances() {
    let app = |env: &str| {
        format!(
            "{LISTEN}[apps.web]\nroutes = [{{ path = \"/\" }}]\ncommand = {}\ninstances = 2\nenv = {{ V = \"{env}\" }}\n",
            testapp_command(&["--startup-delay", "700ms"])
        )
    };
    let h = Harbor::start_with(&app("1"), NO_WATCH);
    h.wait_routable(2, "x", "/");
    let gw = h.gateway(0);
    let load = support::load::Load::start(
        (0..8)
            .map(|i| match i % 2 {
                0 => (reqwest::Method::POST, format!("http://{gw}/echo")),
                _ => (reqwest::Method::GET, format!("http://{gw}/slow?ms=100")),
            })
            .collect(),
    );
    let restart = support::verb_in(&h.dir, &["restart", "web"]);
    h.wait_nth(0, SECS(10), |e| e["event"] == "restart_started");
    let reload = support::reload_in(&h.dir, app("2"));
    let (restart, reload) = (restart.await.unwrap(), reload.await.unwrap());
    assert_eq!(restart.code, 0, "{restart:?}");
    assert_eq!(reload.code, 0, "{reload:?}");
    let (served, bad) = load.finish().await;
    assert!(bad.is_empty(), "failed requests: {bad:?}");
    assert!(served > 20, "too little load: {served}");
    // The restart went first (web#2, web#3), then the reload (web#4, web#5).
    let status = status_json(&h);
    let ids: Vec<&str> = status["apps"]["web"]["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["web#4", "web#5"]);
    // Exactly `instances` processes run, both with the new config (their
    // spawns logged: the log reader may lag the status by a moment).
    for id in ids {
        h.wait_state(id, "running", 0);
    }
    let spawned: Vec<i32> = h
        .events()
        .iter()
        .filter(|e| e["event"] == "state_change" && e["to"] == "running")
        .filter_map(|e| {
            let reason = e["reason"].as_str()?.strip_prefix("pid ")?;
            reason.split(',').next()?.parse().ok()
        })
        .collect();
    let alive: Vec<&i32> = spawned
        .iter()
        .filter(|pid| !support::harbor::gone(**pid))
        .collect();
    for pid in &alive {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let vars: Vec<&[u8]> = env.split(|b| *b == 0).collect();
        assert!(vars.contains(&&b"V=2"[..]), "pid {pid} runs the old config");
    }
    assert_eq!(alive.len(), 2, "alive: {alive:?} of {spawned:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_stream_shows_a_killed_instance_within_a_second() {
    let config = format!(
        "{LISTEN}[apps.web]\nroutes = [{{ path = \"/\" }}]\ncommand = {}\n",
        testapp_command(&[])
    );
    let h = Harbor::start(&config);
    h.wait_state("web#0", "ready", 0);
    let pid: i32 = h.wait_spawned("web#0", 0)["reason"].as_str().unwrap()[4..]
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let admin = h.admin();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let res = client
        .get(format!("http://{admin}/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let mut stream = res.bytes_stream();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let killed = tokio::time::Instant::now();
    let mut text = String::new();
    let data = loop {
        let chunk = tokio::time::timeout(SECS(1).saturating_sub(killed.elapsed()), stream.next())
            .await
            .unwrap_or_else(|_| panic!("no state_change within 1s; got: {text}"))
            .unwrap()
            .unwrap();
        text.push_str(&String::from_utf8_lossy(&chunk));
        let found = text.split("\n\n").find_map(|event| {
            let field = |name: &str| {
                event
                    .lines()
                    .find_map(|l| l.strip_prefix(name))
                    .map(|v| v.trim_start().to_string())
            };
            if field("event:")? != "state_change" {
                return None;
            }
            let v: Value = serde_json::from_str(&field("data:")?).ok()?;
            (v["instance"] == "web#0").then_some(v)
        });
        if let Some(v) = found {
            break v;
        }
    };
    assert_eq!(data["kind"], "state_change");
    assert_eq!(data["app"], "web");
    assert_eq!(data["from"], "ready");
    assert!(
        data["ts"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{data}"
    );
}

#[test]
fn a_reload_that_drops_a_dependency_starts_the_waiting_app() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("never-created");
    let restart = "backoff_initial = \"50ms\"\nbackoff_max = \"200ms\"\nmax_restarts = 1000";
    let text = api_and_web(&flag, restart);
    let h = Harbor::start_in(dir.path(), &text, NO_WATCH);
    h.wait_state("api#0", "restarting", 0);
    eventually(SECS(10), "web is shown waiting", || {
        status_json(&h)["apps"]["web"]["waiting"].is_string()
    });
    let without = text.replace("depends_on = { api = \"ready\" }\n", "");
    assert_ne!(without, text);
    std::fs::write(h.dir.join("harbormaster.toml"), without).unwrap();
    let out = support::verb(&h.dir, &["reload"]);
    assert_eq!(out.code, 0, "{out:?}");
    h.wait_state("web#0", "ready", 0);
}
