//! harbormaster as a container's PID 1, under `unshare --pid --fork
//! --mount-proc` (a new PID namespace with its own /proc, as in a
//! container): it knows it is PID 1 without a flag, reaps a double-forked
//! orphan (no zombie is left), and SIGTERM stops every app in reverse
//! dependency order with exit code 0.
#![allow(clippy::disallowed_types)]

mod support;

use std::time::Duration;

use support::harbor::{eventually, reaped, testapp_command, Harbor};

/// The pids whose parent is `ppid`, with their command names.
fn children_of(ppid: i32) -> Vec<(i32, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let parent = stat[close + 2..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok());
        if parent == Some(ppid) {
            out.push((pid, comm));
        }
    }
    out
}

fn unshare_works() {
    let out = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child", "true"])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "`unshare --pid --fork --mount-proc` is not permitted on this machine (needs root or user namespaces), so harbormaster cannot be tested as PID 1: {}",
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("cannot run unshare (util-linux) to test harbormaster as PID 1: {e}"),
    }
}

#[test]
fn as_pid_1_it_reaps_orphans_and_stops_everything_in_order_on_sigterm() {
    unshare_works();
    // `web` leaves an orphan behind: a subshell starts `sleep` and exits,
    // so `sleep` is re-parented to PID 1 and becomes a zombie when it ends
    // (15 s: long enough to be seen re-parented on a loaded machine).
    let config = format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\n\n\
         [apps.db]\nroutes = [{{ host = \"db\" }}]\ncommand = {db}\n\n\
         [apps.web]\nroutes = [{{ path = \"/\" }}]\nshell = true\n\
         command = \"(sleep 15 &) ; exec {testapp}\"\ndepends_on = {{ db = \"ready\" }}\n",
        db = testapp_command(&[]),
        testapp = support::harbor::testapp().display(),
    );
    // --kill-child: if the test fails, dropping the Harbor signals unshare,
    // and unshare's exit then kills the whole namespace (nothing is left).
    let mut h = Harbor::start_wrapped(
        &config,
        &["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"],
    );
    // It detected PID 1 by itself.
    h.wait_for(Duration::from_secs(20), |e| {
        e["fields"]["message"] == "reaping adopted orphans" && e["fields"]["pid"] == 1
            || e["message"] == "reaping adopted orphans" && e["pid"] == 1
    });
    let unshare = h.pid();
    let hm = children_of(unshare)
        .first()
        .map(|(pid, _)| *pid)
        .expect("harbormaster under unshare");
    h.wait_routable(2, "x", "/");

    // The orphan, re-parented to harbormaster, then gone without a trace.
    let orphan = std::cell::Cell::new(None);
    eventually(
        Duration::from_secs(20),
        "the orphan re-parented to PID 1",
        || {
            orphan.set(
                children_of(hm)
                    .into_iter()
                    .find(|(_, comm)| comm == "sleep")
                    .map(|(pid, _)| pid),
            );
            orphan.get().is_some()
        },
    );
    let orphan = orphan.get().unwrap();
    eventually(
        Duration::from_secs(30),
        "the orphan reaped (no zombie in /proc)",
        || reaped(orphan),
    );
    let zombies: Vec<(i32, String)> = children_of(hm)
        .into_iter()
        .filter(|(pid, _)| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|r| r.trim_start().starts_with('Z'))
            })
        })
        .collect();
    assert!(zombies.is_empty(), "zombies left: {zombies:?}");

    // Signals without a meaning for harbormaster reach every instance's
    // process group (SIGWINCH: ignored by the apps, so nothing else changes).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(hm),
        nix::sys::signal::Signal::SIGWINCH,
    )
    .unwrap();
    h.wait_nth(1, Duration::from_secs(20), |e| {
        e["event"] == "signal_forwarded" && e["signal"] == "SIGWINCH" && e["ok"] == true
    });

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(hm),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(h.wait_exit(Duration::from_secs(60)), Some(0));
    let stopped: Vec<String> = h
        .events()
        .iter()
        .filter(|e| e["event"] == "app_stopped")
        .map(|e| e["app"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(stopped, ["web", "db"], "reverse dependency order");
    assert!(h.events().iter().any(|e| e["event"] == "shutdown_complete"));
}
