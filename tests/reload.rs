//! Hot reload through the real binary, under traffic: exactly the change is
//! applied and nothing more.

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use support::harbor::{eventually, testapp_command, Harbor};

const SECS: fn(u64) -> Duration = Duration::from_secs;
/// These tests drive reloads with the CLI or SIGHUP; the file watch would race them.
const NO_WATCH: &[&str] = &["--no-watch"];

fn app(name: &str, routes: &str, extra: &str) -> String {
    format!(
        "[apps.{name}]\nroutes = {routes}\ncommand = {}\n{extra}\n",
        testapp_command(&[])
    )
}

fn config(apps: &str) -> String {
    format!("[gateway]\nlisten = [\"127.0.0.1:0\"]\ndrain_timeout = \"10s\"\n{apps}")
}

/// Rewrites the config file and runs `harbormaster reload`.
fn reload(h: &Harbor, text: &str) -> support::Output {
    let file = h.dir.join("harbormaster.toml");
    std::fs::write(&file, text).unwrap();
    support::Cmd::harbormaster(["-c", file.to_str().unwrap(), "reload"])
        .env("XDG_RUNTIME_DIR", support::xdg(&h.dir))
        .current_dir(&h.dir)
        .run()
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_app_finishes_its_requests_then_answers_503_then_404() {
    let base = app("web", r#"[{ host = "web.localhost" }]"#, "")
        + &app("api", r#"[{ path = "/api", strip_prefix = true }]"#, "");
    let h = Harbor::start_with(&config(&base), NO_WATCH);
    let gw = h.gateway(0);
    h.wait_routable(2, "x", "/api/");
    let c = client();
    let slow: Vec<_> = (0..3)
        .map(|_| {
            let (c, url) = (c.clone(), format!("http://{gw}/api/slow?ms=2000"));
            tokio::spawn(async move { c.get(url).send().await.unwrap().text().await.unwrap() })
        })
        .collect();
    // All three are in flight (admitted by the gateway) before the reload.
    let admin = h.admin();
    eventually(SECS(10), "the 3 slow requests are in flight", || {
        support::harbor::health(admin)["apps"]["api"]["in_flight"] == 3
    });
    let dir = h.dir.clone();
    let text = config(&app("web", r#"[{ host = "web.localhost" }]"#, ""));
    let handle = support::reload_in(&dir, text);
    // While it drains: 503 + Retry-After for new requests to the app.
    eventually(SECS(5), "the app drains", || {
        h.events().iter().any(|e| e["event"] == "app_drain_start")
    });
    let res = c.get(format!("http://{gw}/api/")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    assert!(res
        .text()
        .await
        .unwrap()
        .starts_with(r#"{"error":"app draining","app":"api""#));
    for s in slow {
        assert!(
            s.await.unwrap().starts_with("slept 2000 ms"),
            "an in-flight request was cut"
        );
    }
    let out = handle.await.unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), "reloaded: removed: api");
    // Removed: nothing routes /api any more.
    let body = c.get(format!("http://{gw}/api/info")).send().await.unwrap();
    assert_eq!(body.status(), 404);
    assert_eq!(
        body.text().await.unwrap(),
        r#"{"error":"no route","host":"127.0.0.1","path":"/api/info"}"#
    );
    h.wait_for(SECS(5), |e| e["event"] == "app_removed");
    let order: Vec<String> = h
        .events()
        .iter()
        .filter_map(|e| e["event"].as_str().map(String::from))
        .filter(|n| ["app_drain_start", "app_drained", "app_removed"].contains(&n.as_str()))
        .collect();
    assert_eq!(order, ["app_drain_start", "app_drained", "app_removed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changing_env_switches_to_new_instances_without_a_failed_request() {
    let h = Harbor::start_with(
        &config(&app(
            "web",
            r#"[{ path = "/" }]"#,
            "instances = 2\nenv = { V = \"1\" }",
        )),
        NO_WATCH,
    );
    let gw = h.gateway(0);
    h.wait_routable(2, "x", "/");
    let c = client();
    let load = support::load::Load::start(
        (0..12)
            .map(|i| match i % 3 {
                0 => (reqwest::Method::POST, format!("http://{gw}/echo")),
                _ => (reqwest::Method::GET, format!("http://{gw}/slow?ms=50")),
            })
            .collect(),
    );
    let dir = h.dir.clone();
    let text = config(&app(
        "web",
        r#"[{ path = "/" }]"#,
        "instances = 2\nenv = { V = \"2\" }",
    ));
    let out = support::reload_in(&dir, text).await.unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), "reloaded: replaced: web");
    let (_, bad) = load.finish().await;
    assert!(bad.is_empty(), "failed requests across the switch: {bad:?}");
    support::load::only_from(&c, gw, &["web-2-", "web-3-"], 6).await;
}

#[test]
fn an_added_app_is_routable_once_ready_not_before() {
    let base = app("web", r#"[{ path = "/" }]"#, "");
    let h = Harbor::start_with(&config(&base), NO_WATCH);
    h.wait_routable(1, "x", "/");
    let added = base.clone()
        + &format!(
            "[apps.late]\nroutes = [{{ host = \"late.localhost\" }}]\ncommand = {}\n",
            testapp_command(&["--startup-delay", "3s"])
        );
    let out = reload(&h, &config(&added));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), "reloaded: added: late");
    // Not ready yet: 503, never a 502 or a response from another app.
    let gw = h.gateway(0);
    assert_eq!(
        support::harbor::status(gw, "late.localhost", "/"),
        Some(503)
    );
    h.wait_state("late#0", "ready", 0);
    eventually(SECS(5), "the new app is routed", || {
        support::harbor::status(gw, "late.localhost", "/") == Some(200)
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_stream_on_an_unchanged_app_survives_10_reloads() {
    let base = app("events", r#"[{ host = "events.localhost" }]"#, "");
    let h = Harbor::start_with(&config(&base), NO_WATCH);
    h.wait_routable(1, "events.localhost", "/");
    let gw = h.gateway(0);
    let mut stream = client()
        .get(format!("http://{gw}/sse?events=40&interval_ms=100"))
        .header("host", "events.localhost")
        .send()
        .await
        .unwrap()
        .bytes_stream();
    let mut events = 0;
    for n in 0..10 {
        // Each reload adds, changes or removes another app.
        let other = match n % 3 {
            0 => app(
                "other",
                r#"[{ path = "/o" }]"#,
                &format!("env = {{ N = \"{n}\" }}"),
            ),
            1 => app(
                "other",
                r#"[{ path = "/o" }, { path = "/p" }]"#,
                &format!("env = {{ N = \"{n}\" }}"),
            ),
            _ => String::new(),
        };
        let text = config(&(base.clone() + &other));
        let dir = h.dir.clone();
        let out = support::reload_in(&dir, text).await.unwrap();
        assert_eq!(out.code, 0, "reload {n}: {out:?}");
        if let Some(chunk) = stream.next().await {
            events += String::from_utf8_lossy(&chunk.unwrap())
                .matches("data:")
                .count();
        }
    }
    while let Some(chunk) = stream.next().await {
        events += String::from_utf8_lossy(&chunk.expect("the stream was cut"))
            .matches("data:")
            .count();
    }
    assert_eq!(events, 40);
    // The unchanged app's process was never touched.
    assert_eq!(
        h.events()
            .iter()
            .filter(|e| e["instance"] == "events#0" && e["to"] == "running")
            .count(),
        1
    );
}

#[test]
fn an_invalid_config_keeps_the_old_one_serving() {
    let base = app("web", r#"[{ path = "/" }]"#, "");
    let h = Harbor::start_with(&config(&base), NO_WATCH);
    h.wait_routable(1, "x", "/");
    let broken = config(&base) + "[apps.web2]\nroutes = []\ncommand = [\"x\"]\ninstances = 0\n";
    let out = reload(&h, &broken);
    assert_eq!(out.code, 1, "{out:?}");
    let file = h.dir.join("harbormaster.toml");
    assert!(
        out.stderr.contains(&format!(
            "{}:9:10: apps.web2.routes: app has no routes",
            file.display()
        )),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "{}:11:13: apps.web2.instances: must be at least 1",
            file.display()
        )),
        "{}",
        out.stderr
    );
    assert_eq!(support::harbor::status(h.gateway(0), "x", "/"), Some(200));
    let failed = h.wait_for(SECS(5), |e| e["event"] == "reload_failed");
    assert_eq!(failed["status"], "invalid");
}

#[test]
fn sighup_reloads() {
    let base = app("web", r#"[{ path = "/" }]"#, "");
    let h = Harbor::start_with(&config(&base), NO_WATCH);
    h.wait_routable(1, "x", "/");
    let added = base + &app("api", r#"[{ host = "api.localhost" }]"#, "");
    std::fs::write(h.dir.join("harbormaster.toml"), config(&added)).unwrap();
    h.signal(nix::sys::signal::Signal::SIGHUP);
    let applied: Value = h.wait_for(SECS(10), |e| e["event"] == "reload_applied");
    assert!(
        applied["plan"]
            .as_str()
            .unwrap()
            .contains(r#""added":["api"]"#),
        "{applied}"
    );
    h.wait_state("api#0", "ready", 0);
}

#[test]
fn saving_the_config_file_reloads_it() {
    let base = app("web", r#"[{ path = "/" }]"#, "");
    let h = Harbor::start(&config(&base));
    h.wait_routable(1, "x", "/");
    h.wait_for(SECS(10), |e| e["event"] == "watching_config");
    // Save the way editors do: write a new file, rename it over the old one.
    let added = base + &app("api", r#"[{ host = "api.localhost" }]"#, "");
    let tmp = h.dir.join(".harbormaster.toml.swp");
    std::fs::write(&tmp, config(&added)).unwrap();
    std::fs::rename(&tmp, h.dir.join("harbormaster.toml")).unwrap();
    let applied: Value = h.wait_for(SECS(10), |e| e["event"] == "reload_applied");
    assert!(
        applied["plan"]
            .as_str()
            .unwrap()
            .contains(r#""added":["api"]"#),
        "{applied}"
    );
    h.wait_state("api#0", "ready", 0);
    assert_eq!(
        h.events()
            .iter()
            .filter(|e| e["event"] == "reload_requested")
            .count(),
        1,
        "debounced to one reload"
    );
}

#[test]
fn listeners_are_added_and_removed_and_unchanged_ones_keep_their_socket() {
    let base = app("web", r#"[{ path = "/" }]"#, "");
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (first, extra) = (free(), free());
    let one = format!("[gateway]\nlisten = [\"{first}\"]\ndrain_timeout = \"10s\"\n{base}");
    let h = Harbor::start_with(&one, NO_WATCH);
    h.wait_routable(1, "x", "/");
    assert_eq!(h.gateway(0), first);
    // A kept-alive connection on the first listener must survive both reloads.
    let mut kept = std::net::TcpStream::connect(first).unwrap();
    let ask = |s: &mut std::net::TcpStream| {
        use std::io::{Read, Write};
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert!(ask(&mut kept).starts_with("HTTP/1.1 200"));
    let two =
        format!("[gateway]\nlisten = [\"{first}\", \"{extra}\"]\ndrain_timeout = \"10s\"\n{base}");
    let out = reload(&h, &two);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(
        out.stdout.trim(),
        format!("reloaded: listeners added: {extra}")
    );
    assert_eq!(support::harbor::status(extra, "x", "/"), Some(200));
    assert!(ask(&mut kept).starts_with("HTTP/1.1 200"));
    let out = reload(&h, &one);
    assert_eq!(out.code, 0, "{out:?}");
    eventually(SECS(5), "the removed listener is closed", || {
        std::net::TcpStream::connect(extra).is_err()
    });
    assert!(
        ask(&mut kept).starts_with("HTTP/1.1 200"),
        "the unchanged listener's connection was cut"
    );
}

#[test]
fn a_probe_change_applies_in_place_without_restarting_the_process() {
    let base = app("web", r#"[{ path = "/" }]"#, "");
    let h = Harbor::start_with(&config(&base), NO_WATCH);
    h.wait_routable(1, "x", "/");
    let port = support::harbor::port_of(&h.wait_spawned("web#0", 0));
    // The app reports not ready, but the default TCP readiness cannot see that.
    assert_eq!(
        support::harbor::post(("127.0.0.1", port), "/control/ready?ok=false", None).0,
        200
    );
    assert_eq!(support::harbor::status(h.gateway(0), "x", "/"), Some(200));
    let with_probe = base + "\n[apps.web.readiness]\nhttp = \"/ready\"\ninterval = \"100ms\"\nfailure_threshold = 2\n";
    let out = reload(&h, &config(&with_probe));
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), "reloaded: changed in place: web");
    // The new probe takes the instance out of rotation; the process is the same.
    let unready = h.wait_state("web#0", "running", 1);
    assert!(
        unready["reason"]
            .as_str()
            .unwrap()
            .starts_with("readiness failed: status 503"),
        "{unready}"
    );
    eventually(SECS(5), "out of rotation", || {
        support::harbor::status(h.gateway(0), "x", "/") == Some(503)
    });
    assert_eq!(
        h.events()
            .iter()
            .filter(|e| e["instance"] == "web#0"
                && e["to"] == "running"
                && e["reason"].as_str().is_some_and(|r| r.starts_with("pid ")))
            .count(),
        1
    );
}
