// Deadlines here bound waits on real processes and sockets.
#![allow(clippy::disallowed_types)]

//! The gateway against hostile clients and real-world backends: every
//! request gets an answer, no client can open a breaker for everyone, no
//! flood of silent connections starves the admin API, and conformance to
//! RFC 9112 where a proxy in the middle must not guess.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::external::{behind, breaker_opened, config, external, serving};
use support::harbor::{eventually, fetch, Backend, Harbor};
use support::raw;

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// The same, with harbormaster limited to 1024 open files.
fn behind_1024_fds(gateway: &str, ports: &[u16]) -> (Harbor, SocketAddr) {
    let wrapper = ["sh", "-c", "ulimit -n 1024 && exec \"$0\" \"$@\""];
    serving(Harbor::start_wrapped(&config(gateway, ports, ""), &wrapper))
}

/// Every `in_flight` count in a `/health` document, added up.
fn in_flight(v: &serde_json::Value) -> u64 {
    match v {
        serde_json::Value::Object(m) => m
            .iter()
            .map(|(k, v)| {
                if k == "in_flight" {
                    v.as_u64().unwrap_or(0)
                } else {
                    in_flight(v)
                }
            })
            .sum(),
        serde_json::Value::Array(a) => a.iter().map(in_flight).sum(),
        _ => 0,
    }
}

/// Loops `GET /` on `gw` until stopped; the statuses seen (0 = no answer).
struct Steady {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<u16>>,
}

impl Steady {
    fn start(gw: SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                seen.push(fetch(gw, "x", "/").map_or(0, |(s, _)| s));
            }
            seen
        });
        Self { stop, thread }
    }

    fn finish(self) -> Vec<u16> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[test]
fn aborted_and_badly_chunked_uploads_never_open_a_breaker() {
    let (a, b) = (Backend::start(&[]), Backend::start(&[]));
    let (h, gw) = behind(
        "",
        &[a.port, b.port],
        "[apps.web.circuit_breaker]\nfailures = 2\n",
    );
    let steady = Steady::start(gw);
    for _ in 0..12 {
        // Announces 100,000 bytes, sends 1,000, closes.
        let mut c = raw::connect(gw);
        let head = "POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n";
        raw::send(&mut c, head.as_bytes()).unwrap();
        raw::send(&mut c, &[b'x'; 1000]).unwrap();
    }
    for _ in 0..12 {
        let mut c = raw::connect(gw);
        let bad = "POST /sink HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n";
        raw::send(&mut c, bad.as_bytes()).unwrap();
        // Whatever the answer, the connection ends.
        let _ = raw::read_response(&mut c);
    }
    // The gateway has seen every broken upload end (nothing in flight).
    eventually(SECS(10), "the broken uploads are over", || {
        let health = support::harbor::get(h.admin().port(), "/health").unwrap();
        let health: serde_json::Value = serde_json::from_str(&health).unwrap();
        in_flight(&health) == 0
    });
    for _ in 0..20 {
        assert_eq!(fetch(gw, "x", "/").map(|r| r.0), Some(200));
    }
    let seen = steady.finish();
    assert!(
        seen.iter().all(|&s| s == 200),
        "a normal client saw {:?}",
        seen.iter().filter(|&&s| s != 200).collect::<Vec<_>>()
    );
    assert!(
        !breaker_opened(&h),
        "a client's broken upload opened a breaker"
    );
    let health = support::harbor::get(h.admin().port(), "/health").unwrap();
    assert!(!health.contains("\"breaker\":\"open\""), "{health}");
}

/// Whether the server has closed `s` (EOF or reset), without blocking.
fn closed_by_peer(s: &std::net::TcpStream) -> bool {
    let mut buf = [0u8; 1];
    match s.peek(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    }
}

#[test]
fn silent_connections_and_half_sent_http2_prefaces_are_closed_after_the_header_timeout() {
    let backend = Backend::start(&[]);
    let (_h, gw) = behind("header_read_timeout = \"1s\"", &[backend.port], "");
    let mut silent = Vec::new();
    let first = Instant::now();
    for i in 0..2200 {
        let mut s = std::net::TcpStream::connect(gw).unwrap();
        if i % 11 == 0 {
            // 200 connections send 12 of the preface's 24 bytes, then nothing.
            use std::io::Write;
            s.write_all(&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..12])
                .unwrap();
        }
        s.set_nonblocking(true).unwrap();
        silent.push(s);
        if i % 500 == 0 {
            // Normal requests are served during the flood.
            assert_eq!(fetch(gw, "x", "/").map(|r| r.0), Some(200));
        }
    }
    let last = Instant::now();
    assert_eq!(fetch(gw, "x", "/").map(|r| r.0), Some(200));
    // Each closes within header_read_timeout + 1 s of its own opening.
    let deadline = last + SECS(2);
    loop {
        let open = silent.iter().filter(|s| !closed_by_peer(s)).count();
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{open} of 2200 silent connections still open {:?} after the first was opened",
            first.elapsed()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(fetch(gw, "x", "/").map(|r| r.0), Some(200));
}

#[test]
fn with_1024_file_descriptors_the_admin_api_and_status_answer_during_a_flood() {
    let backend = Backend::start(&[]);
    let (h, gw) = behind_1024_fds("", &[backend.port]);
    let admin = h.admin();
    // Past max_connections (derived: 384 here) connections wait in the
    // listen backlog, where they hold no descriptor of harbormaster's.
    let silent: Vec<_> = (0..1100)
        .map(|_| std::net::TcpStream::connect_timeout(&gw, SECS(5)).unwrap())
        .collect();
    assert!(support::harbor::get(admin.port(), "/live")
        .unwrap()
        .contains("ok"));
    let status = support::verb(&h.dir, &["status"]);
    assert_eq!(status.code, 0, "{status:?}");
    assert!(
        !h.events().iter().any(|e| e["event"] == "accept_failed"),
        "the gateway ran out of descriptors"
    );
    drop(silent);
}

/// `n` requests from one keep-alive client, spaced 190–215 ms; the
/// statuses that were not 200.
async fn spaced(url: String, method: reqwest::Method, body: &'static str, n: usize) -> Vec<String> {
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut bad = Vec::new();
    for _ in 0..n {
        match client.request(method.clone(), &url).body(body).send().await {
            Ok(res) if res.status() == 200 => {}
            Ok(res) => bad.push(format!("{method} {}", res.status())),
            Err(e) => bad.push(format!("{method} {e}")),
        }
        tokio::time::sleep(Duration::from_millis(fastrand::u64(190..=215))).await;
    }
    bad
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_closing_idle_connections_at_200ms_loses_no_request_with_a_shorter_upstream_idle_timeout(
) {
    // One backend for the GETs and one for the POSTs, so that each pool
    // connection is only ever reused 190 ms or more after its last use.
    let (get_port, post_port) = (
        raw::closes_idle_after_200ms(),
        raw::closes_idle_after_200ms(),
    );
    let config = format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\nupstream_idle_timeout = \"150ms\"\n{}{}",
        external("gets", r#"[{ path = "/get" }]"#, &[get_port], ""),
        external("posts", r#"[{ path = "/post" }]"#, &[post_port], ""),
    );
    let h = Harbor::start(&config);
    let gw = h.gateway(0);
    eventually(SECS(10), "both apps are served", || {
        ["/get", "/post"]
            .iter()
            .all(|p| support::harbor::status(gw, "x", p) == Some(200))
    });
    let gets = tokio::spawn(spaced(
        format!("http://{gw}/get"),
        reqwest::Method::GET,
        "",
        200,
    ));
    let posts = tokio::spawn(spaced(
        format!("http://{gw}/post"),
        reqwest::Method::POST,
        "payload",
        200,
    ));
    let mut bad = gets.await.unwrap();
    bad.extend(posts.await.unwrap());
    assert!(bad.is_empty(), "{} failed: {bad:?}", bad.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_failing_on_a_reused_connection_is_sent_again_when_replayable() {
    // The default upstream_idle_timeout (4 s) reuses connections the
    // backend closes at 200 ms: the race is real, and bodiless requests
    // are sent again on a new connection.
    let port = raw::closes_idle_after_200ms();
    let (_h, gw) = behind("", &[port], "");
    let url = format!("http://{gw}/");
    let gets = tokio::spawn(spaced(url.clone(), reqwest::Method::GET, "", 200));
    let posts = tokio::spawn(spaced(url, reqwest::Method::POST, "", 200));
    let mut bad = gets.await.unwrap();
    bad.extend(posts.await.unwrap());
    assert!(bad.is_empty(), "{} failed: {bad:?}", bad.len());
}

#[test]
fn a_slow_upload_is_not_timed_out_by_the_response_timeout() {
    let backend = Backend::start(&[]);
    let (h, gw) = behind("upstream_response_timeout = \"3s\"", &[backend.port], "");
    let mut c = raw::connect(gw);
    let head = "POST /sink HTTP/1.1\r\nHost: x\r\nContent-Length: 2000\r\n\r\n";
    raw::send(&mut c, head.as_bytes()).unwrap();
    // 400 bytes a second for 5 seconds.
    for _ in 0..100 {
        raw::send(&mut c, &[b'u'; 20]).unwrap();
        std::thread::sleep(Duration::from_millis(50));
    }
    let res = raw::read_response(&mut c).unwrap().expect("a response");
    assert_eq!(res.status, 200, "{}", res.text());
    assert_eq!(res.text(), "{\"bytes\":2000}");
    assert!(!breaker_opened(&h));
}

/// What keep-alive clients saw across a stop.
#[derive(Default, Debug)]
struct Seen {
    responses: AtomicU64,
    /// Requests on a kept-alive connection (one harbormaster had already
    /// answered on) that got no response: what must never happen.
    bare_eofs: AtomicU64,
    /// New connections reset before any response: still in the kernel's
    /// listen backlog when the listener closed, never accepted.
    never_accepted: AtomicU64,
    other: Mutex<Vec<String>>,
}

/// A keep-alive client: request after request on one connection, a new
/// connection when told to close, until connecting is refused.
fn keep_alive_client(gw: SocketAddr, seen: Arc<Seen>) {
    let mut conn: Option<std::io::BufReader<std::net::TcpStream>> = None;
    let mut answered_here = false;
    loop {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => match std::net::TcpStream::connect(gw) {
                Ok(s) => {
                    answered_here = false;
                    conn.insert(std::io::BufReader::new(s))
                }
                Err(_) => return,
            },
        };
        if raw::send(c, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_err() {
            conn = None; // not written: nothing was lost
            continue;
        }
        match raw::read_response(c) {
            Ok(Some(res)) => {
                answered_here = true;
                seen.responses.fetch_add(1, Ordering::Relaxed);
                let shutting_down = res.status == 503 && res.text().contains("shutting down");
                if res.status != 200 && !shutting_down {
                    seen.other
                        .lock()
                        .unwrap()
                        .push(format!("{} {}", res.status, res.text()));
                }
                if res.closes() {
                    conn = None;
                }
            }
            Ok(None) if answered_here => {
                seen.bare_eofs.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
            Ok(None) => {
                seen.never_accepted.fetch_add(1, Ordering::Relaxed);
                conn = None;
            }
            Err(e) => {
                seen.other.lock().unwrap().push(e.to_string());
                conn = None;
            }
        }
    }
}

#[test]
fn stop_answers_every_request_written_on_kept_alive_connections() {
    let backend = Backend::start(&[]);
    for round in 0..5 {
        let (mut h, gw) = behind("", &[backend.port], "");
        let seen = Arc::new(Seen::default());
        let clients: Vec<_> = (0..20)
            .map(|_| {
                let seen = seen.clone();
                std::thread::spawn(move || keep_alive_client(gw, seen))
            })
            .collect();
        eventually(SECS(10), "traffic flows", || {
            seen.responses.load(Ordering::Relaxed) >= 400
        });
        let stop = support::verb(&h.dir, &["stop"]);
        assert_eq!(stop.code, 0, "round {round}: {stop:?}");
        assert_eq!(h.wait_exit(SECS(10)), Some(0));
        for c in clients {
            c.join().unwrap();
        }
        assert_eq!(
            seen.bare_eofs.load(Ordering::Relaxed),
            0,
            "round {round}: requests written got no response"
        );
        let other = seen.other.lock().unwrap();
        assert!(other.is_empty(), "round {round}: {other:?}");
        eprintln!(
            "round {round}: {} responses, {} connections reset in the listen backlog",
            seen.responses.load(Ordering::Relaxed),
            seen.never_accepted.load(Ordering::Relaxed)
        );
    }
}

/// A harbor with two external testapps: `a.localhost` and `b.localhost`.
fn two_hosts() -> (Backend, Backend, Harbor, SocketAddr) {
    let (a, b) = (
        Backend::start(&["--name", "a"]),
        Backend::start(&["--name", "b"]),
    );
    let config = format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\n{}{}",
        external("a", r#"[{ host = "a.localhost" }]"#, &[a.port], ""),
        external("b", r#"[{ host = "b.localhost" }]"#, &[b.port], ""),
    );
    let h = Harbor::start(&config);
    h.wait_serving("a.localhost");
    h.wait_serving("b.localhost");
    let gw = h.gateway(0);
    (a, b, h, gw)
}

fn echo(res: &raw::Response) -> serde_json::Value {
    serde_json::from_slice(&res.body).unwrap_or_else(|_| panic!("{res:?}"))
}

#[test]
fn http11_without_host_or_with_two_hosts_is_a_400() {
    let (_a, _b, _h, gw) = two_hosts();
    let res = raw::exchange(gw, "GET /echo HTTP/1.1\r\n\r\n");
    assert_eq!(res.status, 400);
    assert!(res.text().contains("\"error\":\"bad request\""), "{res:?}");
    assert!(res.closes());
    let res = raw::exchange(
        gw,
        "GET /echo HTTP/1.1\r\nHost: a.localhost\r\nHost: b.localhost\r\n\r\n",
    );
    assert_eq!(res.status, 400);
    assert!(res.text().contains("more than one Host"), "{res:?}");
}

#[test]
fn an_absolute_form_target_is_routed_by_its_authority() {
    let (_a, _b, _h, gw) = two_hosts();
    let res = raw::exchange(
        gw,
        "GET http://b.localhost/echo HTTP/1.1\r\nHost: a.localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(res.status, 200);
    let echo = echo(&res);
    assert_eq!(echo["headers"]["host"], "b.localhost");
    assert_eq!(echo["uri"], "/echo");
    let who = raw::exchange(
        gw,
        "GET http://b.localhost/ HTTP/1.1\r\nHost: a.localhost\r\nConnection: close\r\n\r\n",
    );
    assert!(who.text().contains('b'), "{who:?}");
}

#[test]
fn a_chunked_body_on_a_get_is_forwarded() {
    let (_a, _b, _h, gw) = two_hosts();
    let res = raw::exchange(
        gw,
        "GET /echo HTTP/1.1\r\nHost: a.localhost\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    );
    assert_eq!(res.status, 200);
    assert_eq!(echo(&res)["body"], "hello");
}

#[test]
fn an_h2c_upgrade_is_not_forwarded() {
    let (_a, _b, _h, gw) = two_hosts();
    let res = raw::exchange(
        gw,
        "GET /echo HTTP/1.1\r\nHost: a.localhost\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    );
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(res.version, "HTTP/1.1");
    let headers = &echo(&res)["headers"];
    assert!(headers.get("upgrade").is_none(), "{headers}");
    assert!(headers.get("http2-settings").is_none(), "{headers}");
}

#[test]
fn connect_gets_405() {
    let (_a, _b, _h, gw) = two_hosts();
    let res = raw::exchange(
        gw,
        "CONNECT a.localhost:443 HTTP/1.1\r\nHost: a.localhost:443\r\n\r\n",
    );
    assert_eq!(res.status, 405);
    assert!(res.closes());
}

#[test]
fn a_client_keeps_http11_keep_alive_when_the_backend_speaks_http10() {
    let port = raw::speaks_http10();
    let (_h, gw) = behind("", &[port], "");
    let mut c = raw::connect(gw);
    for _ in 0..3 {
        raw::send(&mut c, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let res = raw::read_response(&mut c).unwrap().expect("a response");
        assert_eq!(res.version, "HTTP/1.1");
        assert_eq!(res.status, 200);
        assert_eq!(res.text(), "old");
        assert!(!res.closes(), "{res:?}");
    }
}

#[test]
fn the_admin_listener_closes_silent_and_idle_connections() {
    let backend = Backend::start(&[]);
    let (h, _gw) = behind(
        "header_read_timeout = \"1s\"\nclient_idle_timeout = \"1s\"",
        &[backend.port],
        "",
    );
    let admin = h.admin();
    // More silent connections than the admin limit (256), and one kept
    // alive after a request.
    let silent: Vec<_> = (0..300)
        .map(|_| {
            let s = std::net::TcpStream::connect(admin).unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let mut kept = raw::connect(admin);
    raw::send(&mut kept, b"GET /live HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(raw::read_response(&mut kept).unwrap().unwrap().status, 200);
    kept.get_ref().set_nonblocking(true).unwrap();
    let opened = Instant::now();
    eventually(
        SECS(5),
        "silent and idle admin connections are closed",
        || closed_by_peer(kept.get_ref()) && silent.iter().all(closed_by_peer),
    );
    assert!(opened.elapsed() < SECS(4), "took {:?}", opened.elapsed());
    assert!(support::harbor::get(admin.port(), "/live")
        .unwrap()
        .contains("ok"));
}

#[test]
fn out_of_descriptors_the_gateway_backs_off_logs_once_a_second_and_recovers() {
    let backend = Backend::start(&[]);
    // max_connections set past what 1024 descriptors allow: accept fails.
    let (h, gw) = behind_1024_fds(
        "max_connections = 10000\nheader_read_timeout = \"2s\"",
        &[backend.port],
    );
    let flood_start = Instant::now();
    let silent: Vec<_> = (0..1100)
        .map(|_| std::net::TcpStream::connect_timeout(&gw, SECS(5)).unwrap())
        .collect();
    let failed = h.wait_for(SECS(10), |e| e["event"] == "accept_failed");
    assert!(failed["count"].as_u64().unwrap() >= 1, "{failed}");
    // The silent connections time out, descriptors come back, serving resumes.
    eventually(SECS(15), "the gateway serves again", || {
        fetch(gw, "x", "/").is_some_and(|r| r.0 == 200)
    });
    let seconds = flood_start.elapsed().as_secs() + 1;
    let logged = h
        .events()
        .iter()
        .filter(|e| e["event"] == "accept_failed")
        .count() as u64;
    // At most one line a second per worker (2 cores), not one per failure.
    assert!(
        logged <= 2 * seconds + 2,
        "{logged} accept_failed lines in {seconds} s"
    );
    drop(silent);
}

#[test]
fn an_idle_http2_connection_gets_goaway_then_closes() {
    use std::io::{Read, Write};
    let backend = Backend::start(&[]);
    let (_h, gw) = behind(
        "header_read_timeout = \"1s\"\nclient_idle_timeout = \"1s\"",
        &[backend.port],
        "",
    );
    let mut s = std::net::TcpStream::connect(gw).unwrap();
    s.set_read_timeout(Some(SECS(10))).unwrap();
    // The preface, an empty SETTINGS frame, then nothing.
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    let opened = Instant::now();
    let mut frames = Vec::new();
    loop {
        let mut head = [0u8; 9];
        if s.read_exact(&mut head).is_err() {
            break; // closed
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        if s.read_exact(&mut payload).is_err() {
            break;
        }
        frames.push(head[3]);
    }
    const GOAWAY: u8 = 7;
    assert!(frames.contains(&GOAWAY), "frame types seen: {frames:?}");
    assert!(
        opened.elapsed() < SECS(4),
        "closed after {:?}",
        opened.elapsed()
    );
}

#[test]
fn the_soft_open_file_limit_is_raised_and_max_connections_follows_it() {
    let backend = Backend::start(&[]);
    let wrapper = ["sh", "-c", "ulimit -Sn 1024 && exec \"$0\" \"$@\""];
    let (h, gw) = serving(Harbor::start_wrapped(
        &config("", &[backend.port], ""),
        &wrapper,
    ));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", h.pid())).unwrap();
    let files: Vec<&str> = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(files[3], files[4], "soft limit not raised: {limits}");
    // 600 silent connections: past what 1024 descriptors would allow
    // (384), yet a normal request is served at once, not after the header
    // timeout frees a slot.
    let silent: Vec<_> = (0..600)
        .map(|_| std::net::TcpStream::connect(gw).unwrap())
        .collect();
    let start = Instant::now();
    assert_eq!(fetch(gw, "x", "/").map(|r| r.0), Some(200));
    assert!(start.elapsed() < SECS(3), "took {:?}", start.elapsed());
    drop(silent);
}
