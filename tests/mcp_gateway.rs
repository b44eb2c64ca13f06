//! The MCP gateway end to end: the real binary between the official Python
//! MCP client and real MCP servers (server-everything from npm, and our
//! fault-injection server for crashes, hangs, slow calls and garbage).

mod support;

use std::time::Duration;

use serde_json::Value;
use support::harbor::{eventually, fetch, gone, Harbor};
use support::mcp::{self, Client};

const LONG: Duration = Duration::from_secs(30);

fn wait_server_ready(h: &Harbor, server: &str, nth: usize) {
    h.wait_nth(nth, LONG, |e| {
        e["event"] == "mcp_server_state" && e["to"] == "ready" && e["server"] == server
    });
}

/// `GET /v1/mcp`, the entry of `server`.
fn server_status(h: &Harbor, server: &str) -> Value {
    let (code, body) = fetch(h.admin(), "x", "/v1/mcp").expect("/v1/mcp answers");
    assert_eq!(code, 200, "{body}");
    let all: Value = serde_json::from_str(&body).unwrap();
    all["servers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == server)
        .cloned()
        .unwrap_or_else(|| panic!("no server {server} in {all}"))
}

fn url(h: &Harbor) -> String {
    format!("http://{}/mcp", h.gateway(0))
}

fn fault_config(extra: &str, server: &str) -> String {
    format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\ndrain_timeout = \"30s\"\n[mcp]\n{extra}\n[mcp.servers.{server}]\ncommand = {}\n[mcp.servers.{server}.restart]\npolicy = \"always\"\nbackoff_initial = \"50ms\"\nbackoff_max = \"200ms\"\n",
        mcp::fault_command()
    )
}

fn names(v: &Value) -> Vec<String> {
    v["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn python_client_lists_and_calls_server_everything_through_http_and_stdio() {
    let everything = mcp::everything_command();
    let config = format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\n[mcp]\n[mcp.servers.everything]\ncommand = {everything}\n[mcp.servers.other]\ncommand = {everything}\n"
    );
    let calls = [
        r#"everything__echo={"message":"hello"}"#,
        r#"other__echo={"message":"from other"}"#,
        r#"other__get-sum={"a":2,"b":3}"#,
        r#"nothing__echo={}"#,
    ];
    let check = |got: &Value, how: &str| {
        let tools = names(got);
        for t in ["everything__echo", "other__echo", "everything__get-sum"] {
            assert!(
                tools.contains(&t.to_string()),
                "{how}: {t} missing from {tools:?}"
            );
        }
        let c = &got["calls"];
        assert_eq!(c[0]["text"], "Echo: hello", "{how}: {got}");
        assert_eq!(c[1]["text"], "Echo: from other", "{how}: {got}");
        assert!(c[2]["text"].as_str().unwrap().contains('5'), "{how}: {got}");
        assert_eq!(c[3]["code"], -32602, "{how}: {got}");
    };

    // Streamable HTTP on the gateway listener, both eras.
    let h = Harbor::start(&config);
    wait_server_ready(&h, "everything", 0);
    wait_server_ready(&h, "other", 0);
    let legacy = mcp::list_call(&mcp::http(&url(&h)), "legacy", &calls);
    assert_eq!(legacy["protocol"], "2025-11-25");
    check(&legacy, "http, 2025-11-25");
    let modern = mcp::list_call(&mcp::http(&url(&h)), "auto", &calls);
    assert_eq!(modern["protocol"], "2026-07-28");
    check(&modern, "http, 2026-07-28");
    // Resources and prompts are namespaced the same way, and readable.
    let rp = mcp::run_once(&mcp::http(&url(&h)), "legacy", &["resources"]);
    let first = rp["resources"][0].as_str().unwrap();
    assert!(first.starts_with("hm://everything/"), "{rp}");
    assert_eq!(rp["read_uri"], first, "{rp}");
    assert!(
        rp["prompts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().starts_with("other__")),
        "{rp}"
    );
    assert!(rp["prompt_messages"].as_u64().unwrap() >= 1, "{rp}");
    // Progress passes through (an SSE answer on HTTP).
    let long = [
        "progress",
        "everything__trigger-long-running-operation",
        r#"{"duration": 1, "steps": 4}"#,
    ];
    let progress = mcp::run_once(&mcp::http(&url(&h)), "legacy", &long);
    assert_eq!(
        progress["progress"].as_array().unwrap().len(),
        4,
        "{progress}"
    );
    assert!(
        progress["text"].as_str().unwrap().contains("completed"),
        "{progress}"
    );
    let status = server_status(&h, "everything");
    assert_eq!(status["state"], "ready");
    assert_eq!(
        status["protocol"], "2025-11-25",
        "server-everything speaks the sessionful era"
    );
    assert!(status["tools"].as_u64().unwrap() >= 5);
    drop(h);

    // stdio: `harbormaster mcp -c FILE` runs its own harbor.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("harbormaster.toml");
    std::fs::write(&file, &config).unwrap();
    let stdio = mcp::list_call(&mcp::stdio(&file), "legacy", &calls);
    check(&stdio, "stdio, 2025-11-25");
    let stdio = mcp::list_call(&mcp::stdio(&file), "auto", &calls);
    check(&stdio, "stdio, 2026-07-28");
    let progress = mcp::run_once(&mcp::stdio(&file), "legacy", &long);
    assert_eq!(
        progress["progress"].as_array().unwrap().len(),
        4,
        "stdio: {progress}"
    );
}

#[test]
fn kill_9_of_a_server_fails_in_flight_calls_and_it_comes_back_for_the_same_client() {
    kill_9_through(|h| mcp::http(&url(h)));
}

#[test]
fn harbormaster_mcp_bridges_stdio_to_a_running_harbor_over_admin_sock() {
    // The same story through `harbormaster mcp` bridged to the running
    // harbor: only that harbor's server is killed, so only a bridge sees it.
    kill_9_through(|h| mcp::stdio_to(&h.dir));
}

fn kill_9_through(target: impl Fn(&Harbor) -> Vec<String>) {
    let h = Harbor::start(&fault_config("call_timeout = \"60s\"", "flaky"));
    wait_server_ready(&h, "flaky", 0);
    let mut client = Client::start(&target(&h), "legacy", &["watch"]);
    let ready = client.event("ready", 0, LONG);
    assert!(
        names(&ready).contains(&"flaky__echo".to_string()),
        "{ready}"
    );

    client.send(r#"call flaky__slow {"seconds": 60}"#);
    eventually(LONG, "the slow call is in flight upstream", || {
        server_status(&h, "flaky")["in_flight"] == 1
    });
    let pid = server_status(&h, "flaky")["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();

    let result = client.event("result", 0, LONG);
    assert_eq!(
        result["code"], -32015,
        "in-flight call gets 'unavailable': {result}"
    );
    assert_eq!(result["data"]["reason"], "unavailable");
    // Out, then back.
    client.event("list_changed", 0, LONG);
    client.event("list_changed", 1, LONG);
    wait_server_ready(&h, "flaky", 1);
    client.send(r#"call flaky__echo {"message": "again"}"#);
    let again = client.event("result", 1, LONG);
    assert_eq!(again["text"], "Echo: again", "{again}");
    assert_eq!(server_status(&h, "flaky")["restarts"], 1);
    assert!(gone(pid));
    client.finish(LONG);
}

#[test]
fn a_hanging_server_times_out_then_its_circuit_opens_and_recovers_half_open() {
    let config = fault_config("call_timeout = \"1s\"", "stuck")
        + "[mcp.servers.stuck.circuit_breaker]\nfailures = 2\nopen_for = \"5s\"\n";
    let h = Harbor::start(&config);
    wait_server_ready(&h, "stuck", 0);
    let mut client = Client::start(&mcp::http(&url(&h)), "legacy", &["watch"]);
    client.event("ready", 0, LONG);
    for n in 0..2 {
        let started = tokio::time::Instant::now();
        client.send("call stuck__hang {}");
        let r = client.event("result", n, LONG);
        assert_eq!(r["code"], -32014, "call {n} times out: {r}");
        assert_eq!(r["data"]["reason"], "timeout");
        assert!(
            started.elapsed() >= Duration::from_millis(900),
            "not before call_timeout"
        );
    }
    client.send("call stuck__hang {}");
    let open = client.event("result", 2, LONG);
    assert_eq!(open["code"], -32013, "the circuit is open: {open}");
    assert!(
        open["data"]["retry_after_ms"].as_u64().unwrap() <= 5000,
        "{open}"
    );
    assert_eq!(server_status(&h, "stuck")["breaker"], "open");

    // After open_for, a trial call goes through and closes the circuit.
    let mut n = 3;
    let deadline = tokio::time::Instant::now() + LONG;
    loop {
        client.send(r#"call stuck__echo {"message": "trial"}"#);
        let r = client.event("result", n, LONG);
        n += 1;
        if r["text"] == "Echo: trial" {
            break;
        }
        assert_eq!(
            r["code"], -32013,
            "only 'circuit open' until the trial: {r}"
        );
        assert!(
            tokio::time::Instant::now() < deadline,
            "the circuit never went half-open"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(server_status(&h, "stuck")["breaker"], "closed");
    // The server was told about both timed-out calls.
    client.send("call stuck__cancelled {}");
    let cancelled = client.event("result", n, LONG);
    let ids: Vec<Value> = serde_json::from_str(cancelled["text"].as_str().unwrap()).unwrap();
    assert_eq!(
        ids.len(),
        2,
        "notifications/cancelled upstream for each timeout: {cancelled}"
    );
    client.finish(LONG);
}

#[test]
fn sigterm_with_10_slow_calls_in_flight_answers_all_then_stops_the_server() {
    let mut h = Harbor::start(&fault_config("call_timeout = \"60s\"", "slow"));
    wait_server_ready(&h, "slow", 0);
    let pid = server_status(&h, "slow")["pid"].as_i64().unwrap() as i32;
    let client = Client::start(
        &mcp::http(&url(&h)),
        "legacy",
        &["parallel", "10", "slow__slow", r#"{"seconds": 3}"#],
    );
    client.event("ready", 0, LONG);
    eventually(LONG, "10 calls in flight upstream", || {
        server_status(&h, "slow")["in_flight"] == 10
    });
    h.signal(nix::sys::signal::Signal::SIGTERM);
    let results = client.event("results", 0, LONG);
    let results = results["results"].as_array().unwrap();
    assert_eq!(results.len(), 10);
    for r in results {
        assert_eq!(
            r["text"], "slept",
            "every call in flight got its result: {r}"
        );
    }
    assert_eq!(h.wait_exit(LONG), Some(0));
    let events = h.events();
    let stopped = events
        .iter()
        .position(|e| e["event"] == "mcp_server_stopped")
        .expect("the server was stopped");
    let drained = events
        .iter()
        .position(|e| e["event"] == "shutdown_drained")
        .expect("calls drained");
    assert!(
        drained < stopped,
        "in-flight calls finish before the server stops"
    );
    assert!(gone(pid), "no server process is left");
}

#[test]
fn garbage_on_a_servers_stdout_does_not_break_its_session() {
    let config = fault_config("", "noisy").replace(
        "[mcp.servers.noisy.restart]",
        "env = { FAULT_GARBAGE = \"1\" }\n[mcp.servers.noisy.restart]",
    );
    let h = Harbor::start(&config);
    wait_server_ready(&h, "noisy", 0);
    let got = mcp::list_call(
        &mcp::http(&url(&h)),
        "legacy",
        &[
            r#"noisy__echo={"message":"one"}"#,
            r#"noisy__echo={"message":"two"}"#,
        ],
    );
    assert_eq!(got["calls"][0]["text"], "Echo: one", "{got}");
    assert_eq!(got["calls"][1]["text"], "Echo: two", "{got}");
    let status = server_status(&h, "noisy");
    assert_eq!(status["state"], "ready");
    assert_eq!(status["restarts"], 0);
    h.wait_for(Duration::from_secs(10), |e| {
        e["event"] == "mcp_server_garbage"
    });
}

#[test]
fn a_reload_adds_removes_and_replaces_servers_and_status_shows_them() {
    let server = |name: &str, extra: &str| {
        format!(
            "[mcp.servers.{name}]\ncommand = {}\n{extra}",
            mcp::fault_command()
        )
    };
    let head = "[gateway]\nlisten = [\"127.0.0.1:0\"]\n[mcp]\n";
    let h = Harbor::start_with(
        &format!("{head}{}{}", server("a", ""), server("b", "")),
        &["--no-watch"],
    );
    wait_server_ready(&h, "a", 0);
    wait_server_ready(&h, "b", 0);
    let a_pid = server_status(&h, "a")["pid"].as_i64().unwrap() as i32;
    let b_pid = server_status(&h, "b")["pid"].as_i64().unwrap() as i32;

    // a goes, b changes (required now → replaced), c comes.
    let next = format!(
        "{head}{}{}",
        server("b", "required = true\n"),
        server("c", "")
    );
    std::fs::write(h.dir.join("harbormaster.toml"), next).unwrap();
    let out = support::verb(&h.dir, &["reload"]);
    assert_eq!(out.code, 0, "{out:?}");
    wait_server_ready(&h, "c", 0);
    wait_server_ready(&h, "b", 1);
    eventually(LONG, "a is stopped", || gone(a_pid));
    eventually(LONG, "the old b is stopped", || gone(b_pid));
    let (_, body) = fetch(h.admin(), "x", "/v1/mcp").unwrap();
    let all: Value = serde_json::from_str(&body).unwrap();
    let servers: Vec<&str> = all["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(servers, vec!["b", "c"]);
    assert_eq!(server_status(&h, "b")["required"], true);
    let status = support::verb(&h.dir, &["status"]);
    assert!(
        status.stdout.contains("MCP SERVER") && status.stdout.contains("b*"),
        "{}",
        status.stdout
    );
    let got = mcp::list_call(
        &mcp::http(&url(&h)),
        "legacy",
        &[r#"c__echo={"message":"new"}"#, r#"a__echo={}"#],
    );
    assert_eq!(got["calls"][0]["text"], "Echo: new", "{got}");
    assert_eq!(
        got["calls"][1]["code"], -32602,
        "a removed server's tools are gone: {got}"
    );
}

#[test]
fn a_required_server_gates_ready() {
    let config = format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\n[mcp]\n[mcp.servers.late]\ncommand = [\"sh\", \"-c\", \"sleep 2; exec {} {}\"]\nrequired = true\n",
        mcp::python().display(),
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/fault_server.py").display()
    );
    let h = Harbor::start(&config);
    let (code, body) = fetch(h.admin(), "x", "/ready").unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("mcp server late is starting"), "{body}");
    wait_server_ready(&h, "late", 0);
    eventually(LONG, "/ready turns 200", || {
        fetch(h.admin(), "x", "/ready").is_some_and(|(c, _)| c == 200)
    });
}

/// A child killed when dropped (also when a test fails).
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// server-everything in its own Streamable HTTP mode on `port`.
fn everything_http(port: u16) -> Killed {
    let cmd: Vec<String> = serde_json::from_str(&mcp::everything_command()).unwrap();
    Killed(
        std::process::Command::new(&cmd[0])
            .arg(&cmd[1])
            .arg("streamableHttp")
            .env("PORT", port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn a_url_server_is_proxied_over_streamable_http_and_reconnected_when_it_returns() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let remote = everything_http(port);
    eventually(LONG, "server-everything listens", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let config = format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\n[mcp]\n[mcp.servers.remote]\nurl = \"http://127.0.0.1:{port}/mcp\"\n"
    );
    let h = Harbor::start(&config);
    wait_server_ready(&h, "remote", 0);
    let got = mcp::list_call(
        &mcp::http(&url(&h)),
        "legacy",
        &[r#"remote__echo={"message":"far"}"#],
    );
    assert_eq!(got["calls"][0]["text"], "Echo: far", "{got}");
    assert_eq!(server_status(&h, "remote")["transport"], "http");

    drop(remote);
    // Noticed at the next request (or the GET stream ending): the server reads as down.
    let _ = mcp::list_call(
        &mcp::http(&url(&h)),
        "legacy",
        &[r#"remote__echo={"message":"x"}"#],
    );
    eventually(LONG, "the server reads as down", || {
        server_status(&h, "remote")["state"] != "ready"
    });
    let _remote = everything_http(port);
    wait_server_ready(&h, "remote", 1);
    let got = mcp::list_call(
        &mcp::http(&url(&h)),
        "legacy",
        &[r#"remote__echo={"message":"back"}"#],
    );
    assert_eq!(got["calls"][0]["text"], "Echo: back", "{got}");
}

#[test]
fn an_app_server_follows_the_apps_ready_instance_through_a_rolling_restart() {
    let cmd = mcp::everything_command().replace(']', ", \"streamableHttp\"]");
    let config = format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\n[apps.tools]\nroutes = [{{ host = \"tools.localhost\" }}]\ncommand = {cmd}\n[mcp]\n[mcp.servers.webtools]\napp = \"tools\"\npath = \"/mcp\"\n"
    );
    let h = Harbor::start(&config);
    wait_server_ready(&h, "webtools", 0);
    let got = mcp::list_call(
        &mcp::http(&url(&h)),
        "legacy",
        &[r#"webtools__echo={"message":"app"}"#],
    );
    assert_eq!(got["calls"][0]["text"], "Echo: app", "{got}");
    assert_eq!(server_status(&h, "webtools")["transport"], "app");

    let out = support::verb(&h.dir, &["restart", "tools"]);
    assert_eq!(out.code, 0, "{out:?}");
    wait_server_ready(&h, "webtools", 1);
    let got = mcp::list_call(
        &mcp::http(&url(&h)),
        "legacy",
        &[r#"webtools__echo={"message":"again"}"#],
    );
    assert_eq!(got["calls"][0]["text"], "Echo: again", "{got}");
}

/// Live processes in process group `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
        })
        .collect()
}

#[test]
fn a_server_that_ignores_sigterm_is_stopped_by_the_guard_when_harbormaster_is_killed() {
    // sh ignores SIGTERM (so the parent-death signal does nothing) and,
    // once the server exits at EOF on stdin, sleeps on (ignoring SIGTERM
    // too): only the guard's sweep of the pid records (SIGKILL after
    // stop.timeout) ends that group.
    let script = format!(
        "trap '' TERM; {} {}; sleep 120",
        mcp::python().display(),
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/mcp/fault_server.py")
            .display()
    );
    let config = format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\n[mcp]\n[mcp.servers.stubborn]\ncommand = [\"sh\", \"-c\", \"{script}\"]\n[mcp.servers.stubborn.stop]\ntimeout = \"1s\"\n"
    );
    let mut h = Harbor::start(&config);
    wait_server_ready(&h, "stubborn", 0);
    let pgid = server_status(&h, "stubborn")["pid"].as_i64().unwrap() as i32;
    assert_eq!(group_members(pgid).len(), 2, "sh and python");
    let killed = tokio::time::Instant::now();
    h.wait_for(Duration::from_secs(10), |e| e["event"] == "guard_started");
    h.signal(nix::sys::signal::Signal::SIGKILL);
    h.wait_exit(LONG);
    eventually(LONG, "the guard stopped the server's whole group", || {
        group_members(pgid).is_empty()
    });
    assert!(
        killed.elapsed() >= Duration::from_millis(900),
        "SIGTERM was ignored: SIGKILL after stop.timeout"
    );
}
