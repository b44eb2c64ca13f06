//! The test backend's endpoints and flags, through its real binary.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// A running testapp, killed on drop.
struct App {
    child: Child,
    port: u16,
    stdout: BufReader<std::process::ChildStdout>,
}

impl App {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_testapp"))
            .args(["--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start testapp");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let port = loop {
            let mut line = String::new();
            assert!(
                stdout.read_line(&mut line).unwrap() > 0,
                "testapp exited early"
            );
            if let Some(rest) = line.split("listening on 127.0.0.1:").nth(1) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        Self {
            child,
            port,
            stdout,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for App {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn ready_switch_and_status_codes() {
    let app = App::start(&[]);
    let http = reqwest::Client::new();
    assert_eq!(
        http.get(app.url("/ready")).send().await.unwrap().status(),
        200
    );
    http.post(app.url("/control/ready?ok=false"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        http.get(app.url("/ready")).send().await.unwrap().status(),
        503
    );
    assert_eq!(
        http.get(app.url("/health")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        http.get(app.url("/status/418"))
            .send()
            .await
            .unwrap()
            .status(),
        418
    );
    let body = http
        .get(app.url("/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.starts_with("hello from testapp pid="), "{body}");
}

#[tokio::test]
async fn sse_events_arrive_one_by_one() {
    let app = App::start(&[]);
    let mut res = reqwest::get(app.url("/sse?events=3&interval_ms=200"))
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let first = res.chunk().await.unwrap().unwrap();
    // The first event comes before the second is even due.
    assert_eq!(&first[..], b"id: 0\ndata: event 0\n\n");
    let mut rest = Vec::new();
    while let Some(c) = res.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    assert_eq!(rest, b"id: 1\ndata: event 1\n\nid: 2\ndata: event 2\n\n");
}

#[tokio::test]
async fn bytes_and_sink_stream_large_bodies() {
    let app = App::start(&[]);
    let body = reqwest::get(app.url("/bytes?n=3000000"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.len(), 3_000_000);
    let res = reqwest::Client::new()
        .post(app.url("/sink"))
        .body(vec![7u8; 5_000_000])
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), r#"{"bytes":5000000}"#);
}

#[tokio::test]
async fn crash_exits_with_the_code() {
    let mut app = App::start(&[]);
    let _ = reqwest::get(app.url("/crash?code=7")).await;
    let status = app.child.wait().unwrap();
    assert_eq!(status.code(), Some(7));
}

#[tokio::test]
async fn admin_shutdown_exits_cleanly() {
    let mut app = App::start(&[]);
    let res = reqwest::Client::new()
        .post(app.url("/admin/shutdown"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(app.child.wait().unwrap().success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut app.stdout, &mut rest).unwrap();
    assert!(rest.contains("testapp: stopped"));
}

#[tokio::test]
async fn ignore_sigterm_keeps_running_until_sigkill() {
    let mut app = App::start(&["--ignore-sigterm"]);
    let pid = nix::unistd::Pid::from_raw(app.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    // Still answering after SIGTERM was delivered and handled.
    for _ in 0..3 {
        assert_eq!(reqwest::get(app.url("/")).await.unwrap().status(), 200);
    }
    assert!(app.child.try_wait().unwrap().is_none());
}
