//! Every MCP `tools/call` in the audit log exactly once, through the real
//! binary: 1,000 calls from 10 clients (refused ones among them), then
//! SIGTERM with 20 calls in flight — into SQLite (on because `[mcp]` is
//! there) and into a real PostgreSQL server; and a PostgreSQL restart in
//! the middle of a load of calls loses nothing.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use support::harbor::{eventually, fetch, Harbor};
use support::mcp;
use support::mcp_http::McpHttp;
use support::postgres::Postgres;
use support::Cmd;

const TOKEN: &str = "audit-loader-token-0123456789";

fn config(audit: &str) -> String {
    format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\ndrain_timeout = \"30s\"\n[mcp]\n\
         [mcp.servers.f]\ncommand = {}\n\
         [mcp.clients.loader]\ntoken = \"{TOKEN}\"\nroles = [\"worker\"]\n\
         [mcp.roles.worker]\nallow = [\"f__*\"]\ndeny = [\"f__cancelled\"]\n{audit}",
        mcp::fault_command()
    )
}

fn mcp_status(h: &Harbor) -> Value {
    let (_, body) = fetch(h.admin(), "x", "/v1/mcp").unwrap();
    serde_json::from_str(&body).unwrap()
}

fn wait_ready(h: &Harbor) {
    eventually(Duration::from_secs(30), "server f ready", || {
        mcp_status(h)["servers"][0]["state"] == "ready"
    });
}

/// `harbormaster audit --json` (every MCP call) for the harbor's config.
fn audit_rows(h: &Harbor) -> Vec<Value> {
    let config = h.dir.join("harbormaster.toml");
    let out = Cmd::harbormaster(["-c", config.to_str().unwrap(), "audit", "--json"])
        .current_dir(&h.dir)
        .run();
    assert_eq!(out.code, 0, "{out:?}");
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn load_then_sigterm(audit: &str) -> Vec<Value> {
    let mut h = Harbor::start(&config(audit));
    wait_ready(&h);
    let addr = h.gateway(0);
    // 10 clients × 100 calls: 90 echo, 10 of a tool their role denies.
    let clients: Vec<_> = (0..10)
        .map(|c| {
            std::thread::spawn(move || {
                let mut m = McpHttp::connect(addr, Some(TOKEN)).unwrap();
                for i in 0..100 {
                    if i % 10 == 9 {
                        let a = m.call("f__cancelled", json!({})).unwrap();
                        assert_eq!(a["error"]["code"], -32602, "{a}");
                    } else {
                        let a = m
                            .call("f__echo", json!({"message": format!("{c}-{i}")}))
                            .unwrap();
                        assert_eq!(a["result"]["content"][0]["text"], format!("Echo: {c}-{i}"));
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("every one of the 1,000 calls answered");
    }
    // 20 slow calls in flight, then SIGTERM: each is answered.
    let answered = Arc::new(AtomicUsize::new(0));
    let slow: Vec<_> = (0..20)
        .map(|_| {
            let answered = answered.clone();
            let mut m = McpHttp::connect(addr, Some(TOKEN)).unwrap();
            std::thread::spawn(move || {
                let a = m.call("f__slow", json!({"seconds": 3})).unwrap();
                assert!(a["result"]["content"].is_array(), "{a}");
                answered.fetch_add(1, SeqCst);
            })
        })
        .collect();
    eventually(Duration::from_secs(20), "20 calls in flight", || {
        mcp_status(&h)["in_flight"] == 20
    });
    h.signal(nix::sys::signal::Signal::SIGTERM);
    for s in slow {
        s.join().expect("an in-flight call answered");
    }
    assert_eq!(answered.load(SeqCst), 20);
    assert_eq!(h.wait_exit(Duration::from_secs(60)), Some(0));
    let events = h.events();
    let position = |name: &str| {
        events
            .iter()
            .position(|e| e["event"] == name)
            .unwrap_or_else(|| panic!("no {name} event"))
    };
    assert!(position("shutdown_drained") < position("audit_drained"));
    let drained = &events[position("audit_drained")];
    assert_eq!(drained["lost"], 0, "{drained}");

    let rows = audit_rows(&h);
    let count = |status: &str| rows.iter().filter(|r| r["status"] == status).count();
    assert_eq!(rows.len(), 1020, "one row per call made");
    assert_eq!((count("ok"), count("denied")), (920, 100));
    let slow_rows = rows.iter().filter(|r| r["tool"] == "f__slow").count();
    assert_eq!(slow_rows, 20);
    rows
}

#[test]
fn sigterm_after_1000_calls_with_20_in_flight_leaves_one_sqlite_row_per_call() {
    // No [audit] table: [mcp] turns the audit log on (SQLite in state_dir).
    let rows = load_then_sigterm("");
    assert!(rows
        .iter()
        .all(|r| r["client"] == "loader" && r["front"] == "http"));
}

#[test]
fn sigterm_after_1000_calls_with_20_in_flight_leaves_one_postgres_row_per_call() {
    let pg = Postgres::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(pg.create_db("mcp_load"));
    load_then_sigterm(&format!("[audit]\nurl = \"{url}\"\n"));
    let distinct = rt.block_on(Postgres::count(
        &url,
        "SELECT count(DISTINCT uid) FROM mcp_calls",
    ));
    assert_eq!(distinct, 1020);
}

#[test]
fn postgres_restarted_in_the_middle_of_a_load_of_calls_loses_none() {
    let mut pg = Postgres::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let url = rt.block_on(pg.create_db("mcp_restart"));
    let mut h = Harbor::start(&config(&format!("[audit]\nurl = \"{url}\"\n")));
    wait_ready(&h);
    let addr = h.gateway(0);
    let made = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..10)
        .map(|_| {
            let (made, stop) = (made.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut m = McpHttp::connect(addr, Some(TOKEN)).unwrap();
                while !stop.load(SeqCst) {
                    let a = m.call("f__echo", json!({"message": "x"})).unwrap();
                    assert_eq!(a["result"]["content"][0]["text"], "Echo: x", "{a}");
                    made.fetch_add(1, SeqCst);
                }
            })
        })
        .collect();
    let more_than = |n: usize, what: &str| {
        eventually(Duration::from_secs(60), what, || made.load(SeqCst) >= n);
    };
    more_than(300, "300 calls before the restart");
    pg.stop();
    h.wait_for(Duration::from_secs(30), |e| e["event"] == "audit_sink_down");
    let at_down = made.load(SeqCst);
    more_than(at_down + 300, "300 calls while PostgreSQL is away");
    pg.resume();
    h.wait_for(Duration::from_secs(30), |e| e["event"] == "audit_sink_back");
    let at_back = made.load(SeqCst);
    more_than(at_back + 300, "300 calls after it is back");
    stop.store(true, SeqCst);
    for c in clients {
        c.join().expect("every call answered");
    }
    let made = made.load(SeqCst);
    h.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(h.wait_exit(Duration::from_secs(60)), Some(0));
    let drained = h.wait_for(Duration::from_secs(1), |e| e["event"] == "audit_drained");
    assert_eq!(drained["lost"], 0, "{drained}");
    let rows = rt.block_on(Postgres::count(&url, "SELECT count(*) FROM mcp_calls"));
    let distinct = rt.block_on(Postgres::count(
        &url,
        "SELECT count(DISTINCT uid) FROM mcp_calls",
    ));
    eprintln!("calls made {made}: {at_down} when PostgreSQL went away, {at_back} when it was back; rows {rows}");
    assert_eq!(
        (rows as usize, distinct as usize),
        (made, made),
        "0 records lost"
    );
}
