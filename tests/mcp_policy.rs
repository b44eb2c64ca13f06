//! MCP policy through the real binary over the HTTP front: bearer tokens
//! (401), roles (`tools/list` per caller, a denied call looks like an
//! unknown tool and is audited `denied`), kill switches over the admin API
//! (`*`, a server, a tool), a server's rate limit (-32011 with
//! `retry_after_ms`), the order kill → rate → access, the audit rows and
//! the MCP metrics.

mod support;

use std::time::Duration;

use tokio::time::Instant;

use serde_json::{json, Value};
use support::harbor::Harbor;
use support::mcp;
use support::mcp_http::{post_json, McpHttp};
use support::Cmd;

const ADMIN: &str = "policy-admin-token-0123456789";
const OPS: &str = "policy-ops-token-0123456789abc";
const DEV: &str = "policy-dev-token-0123456789abc";

fn config() -> String {
    config_with("")
}

/// `f_extra`: more keys for server `f`.
fn config_with(f_extra: &str) -> String {
    let f = mcp::fault_command();
    format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\n[admin]\ntokens = [\"{ADMIN}\"]\n[mcp]\n\
         [mcp.servers.f]\ncommand = {f}\n{f_extra}[mcp.servers.g]\ncommand = {f}\n\
         [mcp.servers.lim]\ncommand = {f}\nrate_limit = {{ calls = 5, per = \"1s\" }}\n\
         [mcp.clients.ops]\ntoken = \"{OPS}\"\nroles = [\"all\"]\n\
         [mcp.clients.dev]\ntoken = \"{DEV}\"\nroles = [\"dev\"]\n\
         [mcp.roles.all]\nallow = [\"*\"]\n\
         [mcp.roles.dev]\nallow = [\"f__*\", \"lim__*\"]\ndeny = [\"f__slow\", \"lim__*\"]\n"
    )
}

fn code(answer: &Value) -> i64 {
    answer["error"]["code"].as_i64().unwrap_or(0)
}

fn ok(answer: &Value) -> bool {
    answer["result"]["content"][0]["text"].is_string()
}

/// `harbormaster audit --json [extra]` rows for the harbor's config.
pub fn audit_rows(h: &Harbor, extra: &[&str]) -> Vec<Value> {
    let config = h.dir.join("harbormaster.toml");
    let mut args = vec!["-c", config.to_str().unwrap(), "audit", "--json"];
    args.extend_from_slice(extra);
    let out = Cmd::harbormaster(args).current_dir(&h.dir).run();
    assert_eq!(out.code, 0, "{out:?}");
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn switch(h: &Harbor, verb: &str, target: &str) -> (u16, Value) {
    post_json(
        h.admin(),
        &format!("/v1/mcp/{verb}"),
        ADMIN,
        json!({ "target": target }),
    )
}

fn wait_servers_ready(h: &Harbor) {
    support::harbor::eventually(Duration::from_secs(30), "3 servers ready", || {
        let (_, body) = support::harbor::fetch(h.admin(), "x", "/v1/mcp").unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        v["servers"]
            .as_array()
            .is_some_and(|s| s.len() == 3 && s.iter().all(|s| s["state"] == "ready"))
    });
}

/// A reload keeps the switches engaged at runtime; the config's own
/// switches (`killed`) follow the new config.
#[test]
fn a_reload_keeps_runtime_kill_switches_and_applies_the_configs() {
    let mut h = Harbor::start(&config());
    wait_servers_ready(&h);
    assert_eq!(switch(&h, "kill", "g").0, 200);
    let file = h.dir.join("harbormaster.toml");
    let reload = |text: String| {
        std::fs::write(&file, text).unwrap();
        let out = support::verb(&h.dir, &["reload"]);
        assert_eq!(out.code, 0, "{out:?}");
    };
    reload(config_with("killed = true\n"));
    support::harbor::eventually(Duration::from_secs(20), "f killed by the config", || {
        let (_, body) = support::harbor::fetch(h.admin(), "x", "/v1/mcp").unwrap();
        serde_json::from_str::<Value>(&body).unwrap()["kill_switches"] == json!(["f", "g"])
    });
    wait_servers_ready(&h);
    let mut ops = McpHttp::connect(h.gateway(0), Some(OPS)).unwrap();
    let mut echo = |t: &str| code(&ops.call(t, json!({"message": "x"})).unwrap());
    assert_eq!(
        (echo("f__echo"), echo("g__echo"), echo("lim__echo")),
        (-32010, -32010, 0)
    );
    reload(config());
    support::harbor::eventually(Duration::from_secs(20), "f's switch released", || {
        let (_, body) = support::harbor::fetch(h.admin(), "x", "/v1/mcp").unwrap();
        serde_json::from_str::<Value>(&body).unwrap()["kill_switches"] == json!(["g"])
    });
    wait_servers_ready(&h);
    let mut ops = McpHttp::connect(h.gateway(0), Some(OPS)).unwrap();
    assert_eq!(
        code(&ops.call("f__echo", json!({"message": "x"})).unwrap()),
        0
    );
    assert_eq!(
        code(&ops.call("g__echo", json!({"message": "x"})).unwrap()),
        -32010
    );
    h.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(h.wait_exit(Duration::from_secs(30)), Some(0));
}

#[test]
fn tokens_roles_kill_switches_rate_limits_and_their_order() {
    let mut h = Harbor::start(&config());
    let addr = h.gateway(0);
    wait_servers_ready(&h);

    // Unknown or missing token: 401.
    assert_eq!(McpHttp::connect(addr, None).err(), Some(401));
    assert_eq!(
        McpHttp::connect(addr, Some("not-a-token-0123456789abc")).err(),
        Some(401)
    );
    let mut ops = McpHttp::connect(addr, Some(OPS)).unwrap();
    let mut dev = McpHttp::connect(addr, Some(DEV)).unwrap();

    // Each caller sees only what its roles allow.
    let all = ops.tools();
    assert!(
        ["f__echo", "f__slow", "g__echo", "lim__echo"]
            .iter()
            .all(|t| all.contains(&t.to_string())),
        "{all:?}"
    );
    assert_eq!(dev.tools(), ["f__cancelled", "f__echo", "f__hang"]);

    // A denied call is answered exactly like an unknown tool.
    let denied = dev.call("f__slow", json!({"seconds": 0})).unwrap();
    let unknown = dev.call("f__nope", json!({})).unwrap();
    assert_eq!(code(&denied), -32602, "{denied}");
    assert_eq!(denied["error"]["data"], unknown["error"]["data"]);
    assert_eq!(
        denied["error"]["message"]
            .as_str()
            .unwrap()
            .replace("f__slow", "T"),
        unknown["error"]["message"]
            .as_str()
            .unwrap()
            .replace("f__nope", "T")
    );
    assert!(ok(&dev.call("f__echo", json!({"message": "hi"})).unwrap()));

    // Kill switches: a tool, a server, everything; unkill brings them back.
    let echo = |c: &mut McpHttp, t: &str| c.call(t, json!({"message": "x"})).unwrap();
    let (status, body) = switch(&h, "kill", "f__echo");
    assert_eq!((status, &body["kill_switches"]), (200, &json!(["f__echo"])));
    let killed = echo(&mut ops, "f__echo");
    assert_eq!(code(&killed), -32010, "{killed}");
    assert_eq!(killed["error"]["data"]["reason"], "killed");
    assert!(ok(&ops.call("f__slow", json!({"seconds": 0})).unwrap()));
    assert!(ok(&echo(&mut ops, "g__echo")));
    assert_eq!(
        switch(&h, "unkill", "f__echo").1["kill_switches"],
        json!([])
    );
    assert!(ok(&echo(&mut ops, "f__echo")));

    assert_eq!(switch(&h, "kill", "g").0, 200);
    assert_eq!(code(&echo(&mut ops, "g__echo")), -32010);
    assert!(ok(&echo(&mut ops, "f__echo")));
    assert_eq!(switch(&h, "unkill", "g").0, 200);
    assert!(ok(&echo(&mut ops, "g__echo")));

    let (status, body) = switch(&h, "kill", "*");
    assert_eq!((status, &body["kill_switches"]), (200, &json!(["*"])));
    let (_, mcp_status) = support::harbor::fetch(h.admin(), "x", "/v1/mcp").unwrap();
    let mcp_status: Value = serde_json::from_str(&mcp_status).unwrap();
    assert_eq!(mcp_status["kill_switches"], json!(["*"]));
    assert_eq!(code(&echo(&mut ops, "f__echo")), -32010);
    assert_eq!(code(&echo(&mut ops, "g__echo")), -32010);
    assert_eq!(switch(&h, "unkill", "*").0, 200);
    assert!(ok(&echo(&mut ops, "f__echo")));

    let (status, body) = switch(&h, "kill", "nope__x");
    assert_eq!(status, 400, "{body}");
    assert!(
        body.to_string().contains("unknown MCP server `nope`"),
        "{body}"
    );
    let (status, body) = post_json(h.admin(), "/v1/mcp/kill", ADMIN, json!({"tool": "*"}));
    assert_eq!(status, 400, "{body}");
    let (status, _) = post_json(
        h.admin(),
        "/v1/mcp/kill",
        "wrong-0123456789",
        json!({"target": "*"}),
    );
    assert_eq!(status, 401);

    // 5 calls/s: the 6th within the second is refused with retry_after_ms.
    // (On a loaded machine six calls may take longer than a refill: retry.)
    let mut sixth = Value::Null;
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(1100));
        let started = Instant::now();
        let answers: Vec<Value> = (0..6).map(|_| echo(&mut ops, "lim__echo")).collect();
        assert!(answers[..5].iter().all(ok), "{answers:?}");
        if started.elapsed() < Duration::from_millis(150) {
            sixth = answers[5].clone();
            break;
        }
    }
    assert_eq!(code(&sixth), -32011, "{sixth}");
    let retry = sixth["error"]["data"]["retry_after_ms"].as_u64().unwrap();
    assert!((1..=200).contains(&retry), "{sixth}");

    // The order: kill → rate limit → access. dev may not call lim__*.
    assert_eq!(switch(&h, "kill", "lim").0, 200);
    assert_eq!(
        code(&echo(&mut dev, "lim__echo")),
        -32010,
        "killed beats denied"
    );
    assert_eq!(switch(&h, "unkill", "lim").0, 200);
    let mut rate_first = Value::Null;
    for _ in 0..5 {
        std::thread::sleep(Duration::from_millis(1100));
        let started = Instant::now();
        let over = (0..6).map(|_| echo(&mut ops, "lim__echo")).last().unwrap();
        let dev_answer = echo(&mut dev, "lim__echo");
        if code(&over) == -32011 && started.elapsed() < Duration::from_millis(150) {
            rate_first = dev_answer;
            break;
        }
    }
    assert_eq!(
        code(&rate_first),
        -32011,
        "rate limit beats denied: {rate_first}"
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(code(&echo(&mut dev, "lim__echo")), -32602, "then access");

    // Metrics: calls by server/tool/status, the tool label bounded.
    let (_, metrics) = support::harbor::fetch(h.admin(), "x", "/metrics").unwrap();
    for line in [
        "harbormaster_mcp_calls_total{server=\"f\",tool=\"f__echo\",status=\"killed\"} 2",
        "harbormaster_mcp_calls_total{server=\"f\",tool=\"f__slow\",status=\"denied\"} 1",
        "harbormaster_mcp_calls_total{server=\"f\",tool=\"\",status=\"error\"} 1",
        "harbormaster_mcp_call_duration_seconds_count{server=\"lim\"}",
        "harbormaster_audit_queue_depth ",
        "harbormaster_audit_records_written_total ",
        "harbormaster_audit_write_errors_total 0",
        "harbormaster_audit_waits_total 0",
    ] {
        assert!(metrics.contains(line), "{line} missing in\n{metrics}");
    }

    h.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(h.wait_exit(Duration::from_secs(30)), Some(0));
    let drained = h.wait_for(Duration::from_secs(1), |e| e["event"] == "audit_drained");
    assert_eq!(drained["lost"], 0, "{drained}");

    // The audit rows.
    let rows = audit_rows(&h, &[]);
    let find = |client: &str, tool: &str, status: &str| {
        rows.iter()
            .filter(|r| r["client"] == client && r["tool"] == tool && r["status"] == status)
            .count()
    };
    assert_eq!(find("dev", "f__slow", "denied"), 1, "{rows:#?}");
    assert_eq!(
        find("dev", "f__nope", "error"),
        1,
        "an unknown tool is not `denied`"
    );
    assert_eq!(find("ops", "f__echo", "killed"), 2);
    assert_eq!(find("ops", "g__echo", "killed"), 2);
    assert_eq!(find("dev", "lim__echo", "killed"), 1);
    assert!(find("ops", "lim__echo", "rate_limited") >= 1);
    assert!(find("dev", "lim__echo", "denied") >= 1);
    let latency = rows[0]["latency_ms"].as_f64().unwrap();
    assert_eq!(
        (latency * 1000.0).round() / 1000.0,
        latency,
        "whole microseconds"
    );
    // kill/unkill are admin actions with their target.
    let admin = audit_rows(&h, &["--admin"]);
    let actions: Vec<(String, String, String)> = admin
        .iter()
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or("-").to_string();
            (s("action"), s("target"), s("result"))
        })
        .collect();
    let t = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
    assert_eq!(actions[0], t("kill", "f__echo", "ok"));
    assert_eq!(actions[1], t("unkill", "f__echo", "ok"));
    assert!(
        actions.contains(&t("kill", "nope__x", "failed (400)")),
        "{actions:?}"
    );
    assert!(actions.contains(&t("unkill", "*", "ok")), "{actions:?}");
}
