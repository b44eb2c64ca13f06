//! No float noise anywhere a user reads numbers: every number in the JSON
//! logs (the access log included), in `/health` and `/v1/status`, and in
//! `harbormaster status --json` is an integer (`duration_us=812`, never
//! `duration_ms=2006.2867259999998`).

mod support;

use std::time::Duration;

use serde_json::Value;
use support::harbor::{eventually, request, testapp_command, Harbor};

/// Every non-integer number in `v`, with its path.
fn floats(v: &Value, path: &str, out: &mut Vec<String>) {
    match v {
        Value::Number(n) if !(n.is_i64() || n.is_u64()) => out.push(format!("{path} = {n}")),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                floats(item, &format!("{path}[{i}]"), out);
            }
        }
        Value::Object(map) => {
            for (k, item) in map {
                floats(item, &format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

fn assert_integers(what: &str, v: &Value) {
    let mut found = Vec::new();
    floats(v, what, &mut found);
    assert!(found.is_empty(), "float noise: {found:?}");
}

#[test]
fn logs_and_status_carry_integers_only() {
    let config = format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\naccess_log = true\n\
         [apps.web]\nroutes = [{{ host = \"web.localhost\" }}]\ncommand = {}\n\
         [apps.web.readiness]\nhttp = \"/ready\"\ninterval = \"100ms\"\n\
         [apps.web.restart]\nbackoff_initial = \"10ms\"\n",
        testapp_command(&["--port", "{port}"])
    );
    let h = Harbor::start(&config);
    let spawned = h.wait_spawned("web#0", 0);
    h.wait_state("web#0", "ready", 0);
    let gateway = h.gateway(0);
    eventually(Duration::from_secs(10), "web is routed", || {
        request(gateway, "GET", "web.localhost", "/", "").is_some_and(|(c, _)| c == 200)
    });
    request(gateway, "POST", "web.localhost", "/echo", "");
    request(gateway, "GET", "web.localhost", "/status/500", "");
    request(gateway, "GET", "nowhere.localhost", "/x", "");
    // A death (with its uptime) and a probe report in the status.
    let pid: i32 = spawned["reason"].as_str().unwrap()[4..]
        .split(',')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    h.wait_state("web#0", "ready", 1);

    let access = h.wait_nth(2, Duration::from_secs(10), |e| e["event"] == "access");
    for key in [
        "client",
        "host",
        "method",
        "path",
        "status",
        "bytes_in",
        "bytes_out",
        "duration_us",
        "instance",
        "outcome",
    ] {
        assert!(
            access.get(key).is_some(),
            "the access log has no `{key}`: {access}"
        );
    }
    assert!(access["duration_us"].is_u64(), "{access}");

    let status = support::verb(&h.dir, &["status", "--json"]);
    assert_eq!(status.code, 0, "{status:?}");
    let status: Value = serde_json::from_str(&status.stdout).unwrap();
    assert!(
        status["apps"]["web"]["instances"][0]["last_death"].is_object(),
        "{status}"
    );
    assert!(
        status["apps"]["web"]["instances"][0]["last_probe"]["latency_us"].is_u64(),
        "{status}"
    );
    assert_integers("status", &status);
    let (_, health) = request(h.admin(), "GET", "x", "/health", "").unwrap();
    assert_integers("health", &serde_json::from_str(&health).unwrap());
    for (i, event) in h.events().iter().enumerate() {
        assert_integers(&format!("log line {i}"), event);
    }
}
