//! Supervision through the real binary with the test backend: restarts,
//! failure budget, stop escalation, process-group cleanup, crash leftovers,
//! ports and orphan reaping.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;
use support::harbor::{eventually, get, gone, port_of, reaped, testapp_command, Harbor};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// Every test's gateway listens on a free port, so tests can run in parallel.
const LISTEN: &str = "[gateway]\nlisten = [\"127.0.0.1:0\"]\n";

fn app(name: &str, command: &str, extra: &str) -> String {
    format!("{LISTEN}[apps.{name}]\nroutes = [{{ path = \"/{name}\" }}]\ncommand = {command}\n{extra}\n")
}

fn info(port: u16) -> Value {
    serde_json::from_str(&get(port, "/info").unwrap()).unwrap()
}

#[test]
fn a_crash_is_restarted_after_a_jittered_delay() {
    let config = app(
        "web",
        &testapp_command(&[]),
        "[apps.web.restart]\nbackoff_initial = \"200ms\"\nbackoff_max = \"1s\"",
    );
    let h = Harbor::start(&config);
    let ready = h.wait_state("web#0", "ready", 0);
    let _ = get(
        port_of(&h.wait_state("web#0", "running", 0)),
        "/crash?code=3",
    );
    let restarting = h.wait_state("web#0", "restarting", 0);
    let reason = restarting["reason"].as_str().unwrap();
    assert!(reason.starts_with("exit code 3 after "), "{reason}");
    // Full jitter: the first delay lies in [0, backoff_initial].
    let delay = reason.rsplit("restart 1 in ").next().unwrap();
    let delay = humantime::parse_duration(delay).unwrap();
    assert!(delay <= Duration::from_millis(200), "{reason}");
    let again = h.wait_state("web#0", "ready", 1);
    assert_ne!(port_of(&h.wait_spawned("web#0", 1)), 0);
    assert_ne!(ready, again);
}

#[test]
fn repeated_crashes_fail_with_the_reason_and_last_lines() {
    let config = app(
        "job",
        "\"echo started; echo 'about to fail' >&2; exit 4\"",
        "shell = true\n[apps.job.restart]\nbackoff_initial = \"0ms\"\nbackoff_max = \"10ms\"\nmax_restarts = 2",
    );
    let h = Harbor::start(&config);
    let failed = h.wait_state("job#0", "failed", 0);
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("restarted 2 times within 1m; last: exit code 4 after "),
        "{reason}"
    );
    let report = h.wait_for(SECS(5), |e| e["message"] == "instance failed");
    let lines = report["last_lines"].as_str().unwrap();
    assert!(
        lines.contains("about to fail") && lines.contains("started"),
        "{report}"
    );
    // Three runs: the first and two restarts.
    assert_eq!(
        h.events()
            .iter()
            .filter(|e| e["to"] == "restarting")
            .count(),
        2
    );
}

#[test]
fn a_stable_run_resets_the_restart_count() {
    let config = app(
        "web",
        &testapp_command(&[]),
        "[apps.web.restart]\nbackoff_initial = \"0ms\"\nbackoff_max = \"0ms\"\nreset_after = \"3s\"",
    );
    let h = Harbor::start(&config);
    let crash = |n: usize| {
        h.wait_state("web#0", "ready", n);
        let _ = get(port_of(&h.wait_spawned("web#0", n)), "/crash");
        h.wait_state("web#0", "restarting", n)["reason"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = crash(0);
    assert!(first.contains("restart 1 in"), "{first}");
    // A quick second crash (well within reset_after, even on a loaded
    // machine) counts up.
    let second = crash(1);
    assert!(second.contains("restart 2 in"), "{second}");
    // Up for longer than reset_after (counted from the spawn, which is
    // before `ready`): the count starts over. (The wait is the behaviour
    // under test.)
    h.wait_state("web#0", "ready", 2);
    std::thread::sleep(Duration::from_millis(3500));
    let reason = crash(2);
    assert!(reason.contains("restart 1 in"), "{reason}");
}

#[test]
fn sigterm_ignoring_app_is_killed_and_its_grandchild_is_gone() {
    let config = app(
        "stubborn",
        &testapp_command(&["--ignore-sigterm", "--spawn-grandchild"]),
        "[apps.stubborn.stop]\ntimeout = \"300ms\"",
    );
    let mut h = Harbor::start(&config);
    h.wait_state("stubborn#0", "ready", 0);
    let i = info(port_of(&h.wait_state("stubborn#0", "running", 0)));
    let (pid, grandchild) = (
        i["pid"].as_i64().unwrap() as i32,
        i["grandchild_pid"].as_i64().unwrap() as i32,
    );
    assert!(!gone(pid) && !gone(grandchild));

    h.signal(Signal::SIGTERM);
    let stopped = h.wait_state("stubborn#0", "stopped", 0);
    let how = stopped["reason"].as_str().unwrap();
    assert!(how.contains("then SIGKILL after the stop timeout"), "{how}");
    assert!(how.ends_with("no process of the instance left"), "{how}");
    assert_eq!(h.wait_exit(SECS(10)), Some(0));
    assert!(gone(pid), "instance {pid} survived");
    assert!(gone(grandchild), "grandchild {grandchild} survived");
}

#[test]
fn apps_start_in_dependency_order_and_stop_in_reverse() {
    let config = app(
        "web",
        &testapp_command(&[]),
        "depends_on = { db = \"ready\" }",
    ) + &app("db", &testapp_command(&[]), "").replacen(LISTEN, "", 1);
    let mut h = Harbor::start(&config);
    h.wait_state("web#0", "ready", 0);
    h.signal(Signal::SIGINT);
    assert_eq!(h.wait_exit(SECS(10)), Some(0));
    let order: Vec<String> = h
        .events()
        .iter()
        .filter(|e| e["event"] == "state_change" && (e["to"] == "ready" || e["to"] == "stopped"))
        .map(|e| {
            format!(
                "{} {}",
                e["instance"].as_str().unwrap(),
                e["to"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        order,
        ["db#0 ready", "web#0 ready", "web#0 stopped", "db#0 stopped"]
    );
}

/// Without its guard (killed first here), a harbormaster killed by SIGKILL
/// leaves a SIGTERM-ignoring grandchild; the next run's sweep removes it.
/// (With the guard, tests/escape.rs shows nothing survives at all.)
#[test]
fn after_kill_9_children_exit_and_the_next_run_removes_survivors() {
    let dir = tempfile::tempdir().unwrap();
    let config = app(
        "web",
        &testapp_command(&["--spawn-grandchild"]),
        "[apps.web.stop]\ntimeout = \"300ms\"",
    );
    let mut first = Harbor::start_in(dir.path(), &config, &[]);
    first.wait_state("web#0", "ready", 0);
    let i = info(port_of(&first.wait_state("web#0", "running", 0)));
    let (pid, grandchild) = (
        i["pid"].as_i64().unwrap() as i32,
        i["grandchild_pid"].as_i64().unwrap() as i32,
    );

    first.kill_9_without_guard();
    // PR_SET_PDEATHSIG: the direct child is told and exits.
    eventually(
        SECS(10),
        "the instance exits after harbormaster is killed",
        || gone(pid),
    );
    // The grandchild ignores SIGTERM and survives in the instance's process group.
    assert!(!gone(grandchild));

    let second = Harbor::start_in(dir.path(), &config, &[]);
    let cleaned = second.wait_for(SECS(10), |e| e["event"] == "leftover_stopped");
    assert!(
        cleaned["message"]
            .as_str()
            .unwrap()
            .contains(&format!("process group {pid}")),
        "{cleaned}"
    );
    assert!(
        gone(grandchild),
        "leftover grandchild {grandchild} still runs"
    );
    // Cleanup happens before anything starts.
    second.wait_state("web#0", "running", 0);
    let events = second.events();
    let pos = |pred: &dyn Fn(&Value) -> bool| events.iter().position(pred);
    assert!(pos(&|e| e["event"] == "leftover_stopped") < pos(&|e| e["event"] == "state_change"));
}

#[test]
fn a_fixed_port_survives_100_stop_start_cycles() {
    let port = support::fixed_port();
    let config = app(
        "web",
        &testapp_command(&[]),
        &format!("port = {port}\n[apps.web.restart]\npolicy = \"never\""),
    );
    let dir = tempfile::tempdir().unwrap();
    for cycle in 0..100 {
        let mut h = Harbor::start_in(dir.path(), &config, &[]);
        let ev = h.wait_nth(0, SECS(20), |e| {
            e["event"] == "state_change"
                && (e["to"] == "ready" || e["to"] == "failed" || e["to"] == "exited")
        });
        assert_eq!(ev["to"], "ready", "cycle {cycle}: {ev}");
        h.signal(Signal::SIGTERM);
        assert_eq!(h.wait_exit(SECS(10)), Some(0), "cycle {cycle}");
    }
}

#[test]
fn a_port_held_by_another_process_names_it() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let config = app(
        "web",
        &testapp_command(&[]),
        &format!("port = {port}\n[apps.web.restart]\npolicy = \"never\""),
    );
    let h = Harbor::start(&config);
    let failed = h.wait_state("web#0", "failed", 0);
    let reason = failed["reason"].as_str().unwrap();
    assert!(
        reason.starts_with(&format!(
            "port {port} is already in use by pid {} (",
            std::process::id()
        )),
        "{reason}"
    );
}

#[test]
fn a_subreaper_reaps_orphaned_grandchildren() {
    let config = app(
        "web",
        &testapp_command(&["--spawn-grandchild"]),
        "[apps.web.stop]\ntimeout = \"200ms\"\n[apps.web.restart]\npolicy = \"never\"",
    );
    let dir = tempfile::tempdir().unwrap();
    let h = Harbor::start_in(dir.path(), &config, &["--subreaper"]);
    h.wait_state("web#0", "ready", 0);
    let i = info(port_of(&h.wait_state("web#0", "running", 0)));
    let grandchild = i["grandchild_pid"].as_i64().unwrap() as i32;
    // The instance crashes: its grandchild is orphaned to harbormaster, then
    // killed with the group, and must not stay behind as a zombie.
    let _ = get(i["port"].as_u64().unwrap() as u16, "/crash");
    h.wait_state("web#0", "exited", 0);
    eventually(SECS(10), "the orphaned grandchild is reaped", || {
        reaped(grandchild)
    });
}
