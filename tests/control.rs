//! Lifecycle and control as a user drives it: `start`, `stop`, `status`,
//! `drain`, `resume` through the real binary, under load.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::Value;
use support::harbor::{gone, testapp_command};
use support::Cmd;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// A config in a temp dir; verbs run against it.
struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(apps: &str, gateway: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("[gateway]\nlisten = [\"127.0.0.1:0\"]\n{gateway}\n{apps}");
        std::fs::write(dir.path().join("harbormaster.toml"), text).unwrap();
        Self { dir }
    }

    fn with_text(text: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("harbormaster.toml"), text).unwrap();
        Self { dir }
    }

    fn verb(&self, args: &[&str]) -> support::Output {
        let config = self.dir.path().join("harbormaster.toml");
        let runtime = self.runtime();
        let mut all = vec![
            "-c",
            config.to_str().unwrap(),
            "--runtime-dir",
            runtime.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        Cmd::harbormaster(all).current_dir(self.dir.path()).run()
    }

    /// [`Project::verb`] off the async runtime (tests keep traffic flowing meanwhile).
    fn verb_in(&self, args: &[&str]) -> tokio::task::JoinHandle<support::Output> {
        let mut all = vec![
            "--runtime-dir".to_string(),
            self.runtime().display().to_string(),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        support::verb_in(self.dir.path(), &all)
    }

    /// `--runtime-dir`: private, and outside the config's folder.
    fn runtime(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!(
            "hm-control-{}",
            self.dir.path().file_name().unwrap().to_string_lossy()
        ))
    }

    fn info(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.runtime().join("runtime.json")).unwrap())
            .unwrap()
    }

    fn gateway(&self) -> String {
        self.info()["gateway"][0].as_str().unwrap().to_string()
    }

    /// The admin API's `host:port`.
    fn admin(&self) -> String {
        let admin = self.info()["admin"].as_str().unwrap().to_string();
        admin.trim_start_matches("http://").to_string()
    }

    /// The admin API's `GET /health` document.
    fn health(&self) -> Value {
        support::harbor::health(self.admin())
    }
}

impl Drop for Project {
    fn drop(&mut self) {
        if self.runtime().join("runtime.json").exists() {
            let _ = self.verb(&["stop", "--timeout", "20s"]);
        }
        let _ = std::fs::remove_dir_all(self.runtime());
    }
}

fn web(args: &[&str]) -> String {
    format!(
        "[apps.web]\nroutes = [{{ path = \"/\" }}]\ncommand = {}\n",
        testapp_command(args)
    )
}

fn raw_post(admin: &str, path: &str, token: Option<&str>) -> (u16, String) {
    support::harbor::post(admin.trim_start_matches("http://"), path, token)
}

#[test]
fn start_status_stop_and_an_unauthenticated_shutdown_is_refused() {
    let p = Project::new(&web(&[]), "");
    let out = p.verb(&["start"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.starts_with("started harbormaster pid "),
        "{out:?}"
    );
    let admin = p.info()["admin"].as_str().unwrap().to_string();

    let (code, body) = raw_post(&admin, "/v1/shutdown", None);
    assert_eq!(code, 401, "{body}");
    let (code, _) = raw_post(&admin, "/v1/shutdown", Some("wrong-token"));
    assert_eq!(code, 401);
    let status = p.verb(&["status"]);
    assert_eq!(status.code, 0, "still running: {status:?}");
    assert!(
        status.stdout.contains("web  web#0     ready"),
        "{}",
        status.stdout
    );

    let json: Value = serde_json::from_str(&p.verb(&["status", "--json"]).stdout).unwrap();
    assert_eq!(json["apps"]["web"]["instances"][0]["state"], "ready");

    let again = p.verb(&["start"]);
    assert_eq!(again.code, 1);
    assert!(again.stderr.contains("already running"), "{again:?}");

    let stop = p.verb(&["stop"]);
    assert_eq!(stop.code, 0, "{stop:?}");
    assert!(!p.runtime().join("runtime.json").exists());
    assert_eq!(p.verb(&["status"]).code, 3);
    assert_eq!(p.verb(&["stop"]).code, 3);
}

#[test]
fn stop_and_start_50_times_on_the_same_ports() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = format!(
        "[gateway]\nlisten = [\"127.0.0.1:{port}\"]\n[apps.web]\nroutes = [{{ path = \"/\" }}]\ncommand = {}\nport = {app_port}\n",
        testapp_command(&[])
    );
    let p = Project::with_text(&text);
    for cycle in 0..50 {
        let out = p.verb(&["start"]);
        assert_eq!(out.code, 0, "cycle {cycle}: {out:?}");
        let stop = p.verb(&["stop"]);
        assert_eq!(stop.code, 0, "cycle {cycle}: {stop:?}");
    }
}

#[test]
fn after_kill_9_status_says_stale_and_the_next_start_cleans_up() {
    let p = Project::new(&web(&[]), "");
    assert_eq!(p.verb(&["start"]).code, 0);
    let pid = p.info()["pid"].as_i64().unwrap() as i32;
    let status: Value = serde_json::from_str(&p.verb(&["status", "--json"]).stdout).unwrap();
    let app_pid = status["apps"]["web"]["instances"][0]["pid"]
        .as_i64()
        .unwrap() as i32;

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    support::harbor::eventually(SECS(5), "the daemon is gone", || gone(pid));
    // Its main thread can be a zombie while other threads still close its
    // files (the lock among them): wait for the lock, not just the pid.
    support::harbor::eventually(SECS(5), "the daemon's lock is released", || {
        p.verb(&["status"]).stderr.contains("its lock is free")
    });
    let out = p.verb(&["status"]);
    assert_eq!(out.code, 3, "{out:?}");
    assert!(
        out.stderr.contains(&format!("pid {pid}")) && out.stderr.contains("stale"),
        "{out:?}"
    );

    let out = p.verb(&["start"]);
    assert_eq!(out.code, 0, "{out:?}");
    support::harbor::eventually(SECS(10), "the old app process is gone", || gone(app_pid));
    assert_eq!(p.verb(&["status"]).code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_under_load_completes_every_accepted_request() {
    let p = Project::new(&web(&[]), "drain_timeout = \"10s\"\nstream_grace = \"1s\"");
    assert_eq!(p.verb(&["start"]).code, 0);
    let gw = p.gateway();
    let pid = p.info()["pid"].as_i64().unwrap() as i32;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();

    // 10 two-second requests and 10 open SSE streams, in flight when the stop comes.
    let slow: Vec<_> = (0..10)
        .map(|_| {
            let c = client.clone();
            let url = format!("http://{gw}/slow?ms=2000");
            tokio::spawn(async move { c.get(url).send().await?.text().await })
        })
        .collect();
    // Each stream says when its first event is in (it is streaming).
    let streaming = Arc::new(AtomicUsize::new(0));
    let sse: Vec<_> = (0..10)
        .map(|_| {
            let c = client.clone();
            let url = format!("http://{gw}/sse?events=1000&interval_ms=100");
            let streaming = streaming.clone();
            tokio::spawn(async move {
                let mut stream = c.get(url).send().await?.bytes_stream();
                let mut text = String::new();
                while let Some(chunk) = stream.next().await {
                    if text.is_empty() {
                        streaming.fetch_add(1, Ordering::SeqCst);
                    }
                    text.push_str(&String::from_utf8_lossy(&chunk?));
                }
                Ok::<_, reqwest::Error>(text)
            })
        })
        .collect();
    // All 20 accepted: every stream has its first event, and the gateway
    // counts the 10 slow requests and the 10 streams in flight.
    let admitted = || {
        streaming.load(Ordering::SeqCst) == 10
            && p.health()["in_flight"].as_u64().is_some_and(|n| n >= 20)
    };
    support::harbor::eventually(
        SECS(10),
        "10 slow requests and 10 streams in flight",
        admitted,
    );
    // 30 clients sending fast requests in a loop until the gateway refuses them.
    let answered = Arc::new(AtomicUsize::new(0));
    let fast: Vec<_> = (0..30)
        .map(|_| {
            let c = client.clone();
            let url = format!("http://{gw}/");
            let answered = answered.clone();
            tokio::spawn(async move {
                let mut ok = 0;
                loop {
                    match c.get(&url).send().await {
                        Ok(res) => {
                            assert_eq!(res.status(), 200);
                            assert!(res.text().await.unwrap().starts_with("hello from"));
                            answered.fetch_add(1, Ordering::SeqCst);
                            ok += 1;
                        }
                        Err(_) => return ok,
                    }
                }
            })
        })
        .collect();
    // The load is up: the fast clients are being served.
    support::harbor::eventually(SECS(10), "the fast clients are served", || {
        answered.load(Ordering::SeqCst) >= 30
    });

    let stopping = tokio::time::Instant::now();
    let stop = p.verb_in(&["stop"]);
    for r in slow {
        let body = r.await.unwrap().expect("a slow request was cut");
        assert!(body.starts_with("slept 2000 ms in web-0-"), "{body}");
    }
    for r in sse {
        let text = r
            .await
            .unwrap()
            .expect("the SSE stream ended with an error");
        assert!(
            text.contains("data: event 0") && text.ends_with("\n\n"),
            "not a clean end: {:?}",
            &text[text.len().saturating_sub(40)..]
        );
    }
    let served: u32 = futures_util::future::join_all(fast)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .sum();
    assert!(served > 0);
    let out = stop.await.unwrap();
    let took = stopping.elapsed();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(took < SECS(10), "stop took {took:?}");
    assert!(gone(pid));
    assert!(!p.runtime().join("runtime.json").exists());
    assert!(
        std::net::TcpStream::connect(&gw).is_err(),
        "the gateway port still accepts"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_refuses_new_requests_while_in_flight_and_other_streams_go_on() {
    let apps = web(&[])
        + &format!(
            "[apps.events]\nroutes = [{{ host = \"events.localhost\" }}]\ncommand = {}\n",
            testapp_command(&[])
        );
    let p = Project::new(&apps, "");
    assert_eq!(p.verb(&["start"]).code, 0);
    let gw = p.gateway();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut stream = client
        .get(format!("http://{gw}/sse?events=50&interval_ms=50"))
        .header("host", "events.localhost")
        .send()
        .await
        .unwrap()
        .bytes_stream();
    stream.next().await.unwrap().unwrap();
    let slow = {
        let c = client.clone();
        let url = format!("http://{gw}/slow?ms=1000");
        tokio::spawn(async move { c.get(url).send().await.unwrap().text().await.unwrap() })
    };
    // The slow request is in flight (admitted by the gateway) before the drain.
    support::harbor::eventually(SECS(10), "the slow request is in flight", || {
        p.health()["apps"]["web"]["in_flight"] == 1
    });

    let out = p.verb_in(&["drain", "web"]).await.unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    let res = client.get(format!("http://{gw}/")).send().await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    assert!(slow.await.unwrap().starts_with("slept 1000 ms"));
    // The other app's stream kept flowing throughout.
    let mut events = 1;
    while let Some(chunk) = stream.next().await {
        events += String::from_utf8_lossy(&chunk.unwrap())
            .matches("data:")
            .count();
    }
    assert_eq!(events, 50);
    assert_eq!(p.verb(&["resume", "web"]).code, 0);
    assert_eq!(
        client
            .get(format!("http://{gw}/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(p.verb(&["drain", "nope"]).code, 1);
}

#[test]
fn logs_show_the_recent_output_of_an_app() {
    let p = Project::new(&web(&[]), "");
    assert_eq!(p.verb(&["start"]).code, 0);
    let out = p.verb(&["logs", "web", "-n", "5"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.lines().count() <= 5);
    assert!(
        out.stdout
            .contains(" web#0 stdout| testapp: listening on 127.0.0.1:"),
        "{out:?}"
    );
    let unknown = p.verb(&["logs", "nope"]);
    assert_eq!(unknown.code, 1);
    assert!(unknown.stderr.contains("unknown app `nope`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_fails_no_request() {
    let p = Project::new(&(web(&[]) + "instances = 2\n"), "");
    assert_eq!(p.verb(&["start"]).code, 0);
    let gw = p.gateway();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    // A mix: 200 ms requests (in flight on retiring instances), POSTs (never
    // retried by the gateway) and plain GETs.
    let load = support::load::Load::start(
        (0..20)
            .map(|i| match i % 4 {
                0 => (reqwest::Method::GET, format!("http://{gw}/slow?ms=200")),
                1 => (reqwest::Method::POST, format!("http://{gw}/echo")),
                _ => (reqwest::Method::GET, format!("http://{gw}/")),
            })
            .collect(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let out = p.verb_in(&["restart", "web"]).await.unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(out.stdout.trim(), "web: restarted (web#2, web#3)");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (served, bad) = load.finish().await;
    assert!(
        bad.is_empty(),
        "failed requests during the restart: {bad:?}"
    );
    assert!(served > 100, "too little load: {served}");
    // Only the new instances answer now.
    support::load::only_from(&client, &gw, &["web-2-", "web-3-"], 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_closes_websockets_with_1001_after_stream_grace() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::Message;
    let p = Project::new(&web(&[]), "stream_grace = \"300ms\"");
    assert_eq!(p.verb(&["start"]).code, 0);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", p.gateway()))
        .await
        .unwrap();
    futures_util::SinkExt::send(&mut ws, Message::text("hi"))
        .await
        .unwrap();
    assert_eq!(
        ws.next()
            .await
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .as_str(),
        "hi"
    );

    let stop = p.verb_in(&["stop"]);
    // The socket keeps working during the grace period, then is closed with 1001.
    let close = loop {
        match ws.next().await {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    assert_eq!(stop.await.unwrap().code, 0);
}
