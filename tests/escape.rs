// Deadlines here bound waits on real external processes: wall-clock time is
// the point, and paused tokio time does not apply to them.
#![allow(clippy::disallowed_types)]

//! No process escapes, and nothing survives harbormaster: descendants that
//! `setsid` or double-fork are stopped with their instance (on stop, rolling
//! restart and crash restart); a harbormaster killed by SIGKILL still stops
//! its instances within `stop.timeout` + 1 s; the next start sweeps leftovers
//! in parallel; stop hooks with `expect_exit` replace the signal.

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;
use support::harbor::{eventually, get, gone, port_of, testapp, Harbor};
use support::Cmd;

const SECS: fn(u64) -> Duration = Duration::from_secs;
const LISTEN: &str = "[gateway]\nlisten = [\"127.0.0.1:0\"]\n";

/// A shell command that leaves two `sleep`s behind in new sessions — one
/// `setsid` child and one double-forked daemon — then execs testapp. The
/// sleeps' argument is unique, so the test can find them in /proc.
fn escaping_app(name: &str, mark: &str) -> String {
    format!(
        "{LISTEN}[apps.{name}]\nroutes = [{{ path = \"/{name}\" }}]\nshell = true\n\
         command = \"setsid sleep {mark} & (setsid sleep {mark} &) ; exec {} --port {{port}}\"\n\
         [apps.{name}.stop]\ntimeout = \"2s\"\n",
        testapp().display()
    )
}

/// A unique `sleep` argument such as `4242.123456`.
fn mark() -> String {
    format!("4242.{}", fastrand::u32(100_000..999_999))
}

/// Live `sleep MARK` processes.
fn sleepers(mark: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c == format!("sleep\0{mark}\0").as_bytes())
        })
        .filter(|&pid| !gone(pid))
        .collect()
}

/// Waits until both sleepers run, and checks they left the instance's group.
fn two_escaped_sleepers(mark: &str, leader: i32) -> Vec<i32> {
    eventually(SECS(10), "both escaped sleeps run", || {
        sleepers(mark).len() == 2
    });
    let pids = sleepers(mark);
    for pid in &pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let pgrp: i32 = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .nth(2)
            .unwrap()
            .parse()
            .unwrap();
        assert_ne!(pgrp, leader, "sleep {pid} should have left the group");
    }
    pids
}

fn status(h: &Harbor) -> Value {
    let (code, body) = support::harbor::fetch(h.admin(), "x", "/v1/status").unwrap();
    assert_eq!(code, 200);
    serde_json::from_str(&body).unwrap()
}

fn pid_of(event: &Value) -> i32 {
    let reason = event["reason"].as_str().unwrap();
    reason
        .trim_start_matches("pid ")
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn setsid_and_double_forked_descendants_are_gone_after_stop() {
    let mark = mark();
    let mut h = Harbor::start(&escaping_app("web", &mark));
    h.wait_state("web#0", "ready", 0);
    let leader = pid_of(&h.wait_spawned("web#0", 0));
    let escaped = two_escaped_sleepers(&mark, leader);
    // status counts them with the instance.
    let procs = status(&h)["apps"]["web"]["instances"][0]["processes"]
        .as_u64()
        .unwrap();
    assert!(procs >= 3, "testapp and two sleeps, got {procs}");
    let config = h.dir.join("harbormaster.toml");
    let table = Cmd::harbormaster(["-c", config.to_str().unwrap(), "status"])
        .env("XDG_RUNTIME_DIR", support::xdg(&h.dir))
        .run();
    assert!(table.stdout.contains("PROCS"), "{table:?}");

    h.signal(Signal::SIGTERM);
    assert_eq!(h.wait_exit(SECS(20)), Some(0));
    for pid in escaped {
        assert!(gone(pid), "escaped sleep {pid} survived stop");
    }
}

#[test]
fn escaped_descendants_are_gone_after_a_rolling_restart() {
    let mark = mark();
    let h = Harbor::start(&escaping_app("web", &mark));
    h.wait_state("web#0", "ready", 0);
    let leader = pid_of(&h.wait_spawned("web#0", 0));
    let escaped = two_escaped_sleepers(&mark, leader);

    let config = h.dir.join("harbormaster.toml");
    let out = Cmd::harbormaster(["-c", config.to_str().unwrap(), "restart", "web"])
        .env("XDG_RUNTIME_DIR", support::xdg(&h.dir))
        .run();
    assert_eq!(out.code, 0, "{out:?}");
    eventually(SECS(10), "the old instance's sleeps are gone", || {
        escaped.iter().all(|&pid| gone(pid))
    });
    // The replacement's own sleeps run (the shell forks them before it
    // execs testapp, but they may exec `sleep` a moment later).
    eventually(SECS(10), "the replacement's two sleeps run", || {
        sleepers(&mark).len() == 2
    });
}

#[test]
fn escaped_descendants_are_gone_when_a_crashed_instance_is_restarted() {
    let mark = mark();
    let h = Harbor::start(&escaping_app("web", &mark));
    h.wait_state("web#0", "ready", 0);
    let first = h.wait_spawned("web#0", 0);
    let escaped = two_escaped_sleepers(&mark, pid_of(&first));

    let _ = get(port_of(&first), "/crash?code=3");
    h.wait_spawned("web#0", 1);
    eventually(SECS(10), "the crashed instance's sleeps are gone", || {
        escaped.iter().all(|&pid| gone(pid))
    });
}

/// An app that ignores SIGTERM, on a port of its own, with a 1 s stop
/// timeout (and the default TCP readiness probed every 100 ms, so its
/// cadence takes little of the time the tests measure).
fn stubborn(name: &str, port: u16) -> String {
    format!(
        "[apps.{name}]\nroutes = [{{ path = \"/{name}\", strip_prefix = true }}]\ncommand = {}\nport = {port}\n\
         [apps.{name}.stop]\ntimeout = \"1s\"\n\
         [apps.{name}.readiness]\ntcp = true\ninterval = \"100ms\"\n",
        support::harbor::testapp_command(&["--ignore-sigterm"])
    )
}

fn free_port() -> u16 {
    support::fixed_port()
}

fn port_is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

#[test]
fn after_kill_9_a_sigterm_ignoring_app_frees_its_port_within_3s() {
    let port = free_port();
    let mut h = Harbor::start(&format!("{LISTEN}{}", stubborn("web", port)));
    h.wait_state("web#0", "ready", 0);
    let pid = pid_of(&h.wait_spawned("web#0", 0));
    assert!(!port_is_free(port));

    h.signal(Signal::SIGKILL);
    let killed = Instant::now();
    h.wait_exit(SECS(5));
    eventually(SECS(3), "the port is free", || port_is_free(port));
    eventually(SECS(1), "the app is gone", || gone(pid));
    let took = killed.elapsed();
    eprintln!("port free and app gone {took:?} after kill -9");
    assert!(took < SECS(3), "took {took:?}");
}

#[test]
fn after_kill_9_without_the_guard_the_next_start_serves_three_stubborn_apps_within_3s() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port()];
    // The gateway on a fixed port too, so the test can poll it from the
    // moment of the next start (not only once the log reader has caught up).
    let gw: std::net::SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let config = format!(
        "[gateway]\nlisten = [\"{gw}\"]\n{}{}{}",
        stubborn("a", ports[0]),
        stubborn("b", ports[1]),
        stubborn("c", ports[2])
    );
    let mut first = Harbor::start_in(dir.path(), &config, &[]);
    for app in ["a#0", "b#0", "c#0"] {
        first.wait_state(app, "ready", 0);
    }
    // The guard would stop them at once; without it, the next start must.
    first.kill_9_without_guard();
    // The apps ignore the parent-death SIGTERM and keep their ports. (Once
    // in CI one port was already free here, cause not found; the spec
    // below — serving within 3 s — holds either way, so this is reported,
    // not asserted.)
    let freed: Vec<u16> = ports.iter().copied().filter(|&p| port_is_free(p)).collect();
    if !freed.is_empty() {
        eprintln!("ports already free after kill -9 (an app died): {freed:?}");
    }

    // The promise: serving within 3 s of the next start, which has
    // to sweep the three leftovers (1 s stop.timeout each) in parallel.
    let started = Instant::now();
    let second = Harbor::start_in(dir.path(), &config, &[]);
    eventually(SECS(20), "the gateway serves the three apps", || {
        ["a", "b", "c"]
            .iter()
            .all(|app| support::harbor::status(gw, "x", &format!("/{app}")) == Some(200))
    });
    let took = started.elapsed();
    for app in ["a#0", "b#0", "c#0"] {
        second.wait_state(app, "ready", 0);
    }
    eprintln!("three stubborn apps served {took:?} after the next start");
    let timeline: Vec<String> = second
        .events()
        .iter()
        .map(|e| {
            format!(
                "{} {} {} {}",
                e["timestamp"],
                e["event"],
                e["instance"],
                e["reason"].as_str().or(e["message"].as_str()).unwrap_or("")
            )
        })
        .collect();
    assert!(
        took < SECS(3),
        "serving after {took:?}:\n{}",
        timeline.join("\n")
    );
    // The third sweep's line, and no fourth (the log reader may lag the
    // sockets by a moment).
    second.wait_nth(2, SECS(5), |e| e["event"] == "leftover_stopped");
    let swept = second
        .events()
        .iter()
        .filter(|e| e["event"] == "leftover_stopped")
        .count();
    assert_eq!(swept, 3);
}

/// testapp with one stop hook to `path`; it exits 1 s after `/admin/shutdown`.
fn hooked(path: &str) -> String {
    format!(
        "{LISTEN}[apps.web]\nroutes = [{{ path = \"/\" }}]\ncommand = {}\n\
         [apps.web.stop]\ntimeout = \"5s\"\n\
         hooks = [{{ method = \"POST\", path = \"{path}\", expect_exit = true }}]\n",
        support::harbor::testapp_command(&["--shutdown-delay", "1s", "--log-requests"])
    )
}

fn app_log(h: &Harbor) -> String {
    std::fs::read_to_string(h.dir.join(".harbormaster/logs/web.log")).unwrap()
}

#[test]
fn a_hook_with_expect_exit_that_gets_2xx_replaces_the_signal() {
    let mut h = Harbor::start(&hooked("/admin/shutdown"));
    h.wait_state("web#0", "ready", 0);
    h.signal(Signal::SIGTERM);
    let stopped = h.wait_state("web#0", "stopped", 0);
    assert_eq!(h.wait_exit(SECS(20)), Some(0));
    let how = stopped["reason"].as_str().unwrap();
    assert!(how.starts_with("exited after its stop hook"), "{how}");
    let log = app_log(&h);
    assert!(log.contains("shutdown requested over HTTP"), "{log}");
    assert!(
        !log.contains("SIGTERM"),
        "no signal may reach the app:\n{log}"
    );
}

#[test]
fn a_hook_answered_404_falls_back_to_the_signal_at_once() {
    let mut h = Harbor::start(&hooked("/admin/no-such-hook"));
    h.wait_state("web#0", "ready", 0);
    h.signal(Signal::SIGTERM);
    let stopped = h.wait_state("web#0", "stopped", 0);
    assert_eq!(h.wait_exit(SECS(20)), Some(0));
    let how = stopped["reason"].as_str().unwrap();
    assert!(how.starts_with("SIGTERM to process group"), "{how}");
    let log = app_log(&h);
    // One timestamped line for the hook's request, one for the signal.
    let at = |needle: &str| {
        let line = log
            .lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in\n{log}"));
        humantime::parse_rfc3339(line.split_whitespace().next().unwrap()).unwrap()
    };
    let gap = at("SIGTERM, shutting down")
        .duration_since(at("/admin/no-such-hook"))
        .unwrap();
    // "At once": far sooner than the 5 s stop.timeout an expect_exit hook
    // answered 2xx would wait (1.5 s leaves room for a loaded machine).
    assert!(
        gap < Duration::from_millis(1500),
        "the signal came {gap:?} after the hook"
    );
}
