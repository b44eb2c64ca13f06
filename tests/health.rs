//! Health through the real binary: readiness gates routing with zero failed
//! requests, liveness restarts, breakers trip and recover, `/ready` and
//! `/health` on the admin listener.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::harbor::{eventually, port_of, status, testapp_command, Harbor};

const LISTEN: &str = "[gateway]\nlisten = [\"127.0.0.1:0\"]\n";
const SECS: fn(u64) -> Duration = Duration::from_secs;

/// POST to an instance's control endpoint; it must answer 200.
fn post(port: u16, path: &str) {
    let (code, body) = support::harbor::post(("127.0.0.1", port), path, None);
    assert_eq!(code, 200, "{body}");
}

/// GET through the gateway: (status, body); (0, "") when nothing answered.
fn fetch(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    support::harbor::fetch(addr, "x", path).unwrap_or_default()
}

/// Steady traffic from a thread: counts statuses until stopped.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Vec<(u16, String)>>>,
}

impl Traffic {
    fn start(addr: std::net::SocketAddr) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                seen.push(fetch(addr, "/"));
                std::thread::sleep(Duration::from_millis(2));
            }
            seen
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> Vec<(u16, String)> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

#[test]
fn an_unready_instance_leaves_rotation_and_returns_with_zero_failed_requests() {
    let config = format!(
        "{LISTEN}[apps.web]\nroutes = [{{ path = \"/\" }}]\ncommand = {}\ninstances = 2\n\n[apps.web.readiness]\nhttp = \"/ready\"\ninterval = \"100ms\"\nfailure_threshold = 2\nsuccess_threshold = 2\n",
        testapp_command(&[])
    );
    let h = Harbor::start(&config);
    let gw = h.gateway(0);
    h.wait_state("web#0", "ready", 0);
    h.wait_state("web#1", "ready", 0);
    let port0 = port_of(&h.wait_state("web#0", "running", 0));
    // Both instances are in the route table (it follows the events).
    eventually(SECS(5), "both instances take traffic", || {
        let bodies: Vec<String> = (0..4).map(|_| fetch(gw, "/").1).collect();
        bodies.iter().any(|b| b.contains("web-0-")) && bodies.iter().any(|b| b.contains("web-1-"))
    });
    let traffic = Traffic::start(gw);

    post(port0, "/control/ready?ok=false");
    let out = h.wait_state("web#0", "running", 1);
    assert!(
        out["reason"]
            .as_str()
            .unwrap()
            .starts_with("readiness failed: status 503"),
        "{out}"
    );
    // Out of rotation (the route table follows the event): only web#1 answers.
    eventually(SECS(5), "web#0 leaves rotation", || {
        (0..4).all(|_| fetch(gw, "/").1.contains("web-1-"))
    });
    let during: Vec<(u16, String)> = (0..20).map(|_| fetch(gw, "/")).collect();
    assert!(
        during
            .iter()
            .all(|(s, b)| *s == 200 && b.contains("hello from web-1-")),
        "{during:?}"
    );

    post(port0, "/control/ready?ok=true");
    h.wait_state("web#0", "ready", 1);
    eventually(SECS(5), "web#0 answers again", || {
        fetch(gw, "/").1.contains("hello from web-0-")
    });
    let seen = traffic.finish();
    let failed: Vec<&(u16, String)> = seen.iter().filter(|(s, _)| *s != 200).collect();
    assert!(seen.len() > 20, "too little traffic: {}", seen.len());
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        seen.len(),
        &failed[..failed.len().min(3)]
    );
}

#[test]
fn a_liveness_failure_restarts_the_instance() {
    let config = format!(
        "{LISTEN}[apps.web]\nroutes = [{{ path = \"/\" }}]\ncommand = {}\n\n[apps.web.liveness]\nhttp = \"/health\"\ninterval = \"100ms\"\nfailure_threshold = 2\n\n[apps.web.stop]\ntimeout = \"1s\"\n",
        testapp_command(&[])
    );
    let h = Harbor::start(&config);
    h.wait_state("web#0", "ready", 0);
    let port = port_of(&h.wait_state("web#0", "running", 0));
    post(port, "/control/health?ok=false");
    let restarting = h.wait_state("web#0", "restarting", 0);
    let reason = restarting["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("liveness failed (last probe: status 503"),
        "{reason}"
    );
    // A new process takes over and becomes ready.
    h.wait_state("web#0", "ready", 1);
    assert_ne!(port_of(&h.wait_spawned("web#0", 1)), port);
}

/// A TCP server that answers requests or resets them, as the test says.
struct Flaky {
    port: u16,
    healthy: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
}

impl Flaky {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let healthy = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let (h, r) = (healthy.clone(), requests.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (h, r) = (h.clone(), r.clone());
                std::thread::spawn(move || serve(conn, &h, &r));
            }
        });
        Self {
            port,
            healthy,
            requests,
        }
    }
}

fn serve(mut conn: std::net::TcpStream, healthy: &AtomicBool, requests: &AtomicUsize) {
    let mut buf = [0u8; 4096];
    loop {
        // Readiness probes connect and close without sending: not requests.
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        requests.fetch_add(1, Ordering::SeqCst);
        if healthy.load(Ordering::SeqCst) {
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n");
        } else {
            // Reset before any response: closing with SO_LINGER 0 sends RST.
            let _ = socket2::SockRef::from(&conn).set_linger(Some(Duration::ZERO));
            return;
        }
    }
}

#[test]
fn a_resetting_instance_trips_its_breaker_and_recovers_through_half_open() {
    let flaky = Flaky::start();
    let config = format!(
        "{LISTEN}[apps.flaky]\nroutes = [{{ path = \"/\" }}]\nupstreams = [\"127.0.0.1:{}\"]\n\n[apps.flaky.readiness]\ntcp = true\ninterval = \"100ms\"\n\n[apps.flaky.circuit_breaker]\nfailures = 3\nopen_for = \"3s\"\n",
        flaky.port
    );
    let h = Harbor::start(&config);
    let gw = h.gateway(0);
    let events = event_stream(h.admin());
    h.wait_for(SECS(10), |e| e["event"] == "upstream_ready");
    eventually(SECS(5), "routed", || status(gw, "x", "/") == Some(502));
    // Three consecutive failures open the breaker (the poll above made at
    // least one): resets answer 502 until it opens, then 503.
    for attempt in 0.. {
        match fetch(gw, "/").0 {
            502 if attempt < 3 => {}
            503 => break,
            other => panic!("request {attempt}: status {other}"),
        }
    }
    let opened = h.wait_for(SECS(5), |e| e["event"] == "breaker" && e["to"] == "open");
    assert_eq!(opened["from"], "closed");
    // While open: no traffic reaches it; clients get 503 circuit open, told
    // to retry when open_for (3 s, long enough for a lagging log reader
    // above) is over.
    let before = flaky.requests.load(Ordering::SeqCst);
    let (code, body) = fetch(gw, "/");
    assert_eq!(code, 503);
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        answer["error"] == "circuit open" && answer["app"] == "flaky",
        "{body}"
    );
    let retry = answer["retry_after_s"].as_u64();
    assert!(retry.is_some_and(|s| (1..=3).contains(&s)), "{body}");
    assert_eq!(flaky.requests.load(Ordering::SeqCst), before);
    // It recovers: after open_for, a half-open trial succeeds and closes it.
    flaky.healthy.store(true, Ordering::SeqCst);
    eventually(SECS(10), "the breaker closes again", || {
        fetch(gw, "/").0 == 200
    });
    // The log line follows the response by a moment.
    h.wait_for(SECS(5), |e| e["event"] == "breaker" && e["to"] == "closed");
    let moves: Vec<String> = h
        .events()
        .iter()
        .filter(|e| e["event"] == "breaker")
        .map(|e| {
            format!(
                "{}->{}",
                e["from"].as_str().unwrap(),
                e["to"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        moves,
        ["closed->open", "open->half_open", "half_open->closed"]
    );
    // The same changes reach /v1/events clients.
    let all_seen = |text: &str| {
        ["open", "half_open", "closed"].iter().all(|to| {
            text.split("\n\n").any(|e| {
                e.contains("event: breaker")
                    && e.contains(&format!("\"to\":\"{to}\""))
                    && e.contains("\"app\":\"flaky\"")
            })
        })
    };
    let deadline = tokio::time::Instant::now() + SECS(5);
    while !all_seen(&events.lock().unwrap()) {
        let text = events.lock().unwrap().clone();
        assert!(
            tokio::time::Instant::now() < deadline,
            "breaker events missing on /v1/events; got:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Everything a `GET /v1/events` client receives, as it arrives. Returns
/// once the response head is in: the daemon subscribes the stream before it
/// answers, so no event after this call is missed.
fn event_stream(admin: std::net::SocketAddr) -> std::sync::Arc<std::sync::Mutex<String>> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(admin).unwrap();
    s.write_all(b"GET /v1/events HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    s.set_read_timeout(Some(SECS(10))).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "/v1/events closed early");
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"), "{head:?}");
    s.set_read_timeout(None).unwrap();
    let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = text.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    text
}

#[test]
fn ready_endpoint_reports_reasons_and_recovers() {
    let config = format!(
        "{LISTEN}[apps.web]\nroutes = [{{ path = \"/\" }}]\ncommand = {}\n\n[apps.web.readiness]\nhttp = \"/ready\"\ninterval = \"100ms\"\nfailure_threshold = 1\n",
        testapp_command(&[])
    );
    let h = Harbor::start(&config);
    let admin = h.admin();
    h.wait_for(SECS(20), |e| e["event"] == "ready");
    assert_eq!(
        fetch(admin, "/ready"),
        (200, r#"{"status":"ready"}"#.to_string())
    );
    assert_eq!(
        fetch(admin, "/live"),
        (200, r#"{"status":"ok"}"#.to_string())
    );
    let port = port_of(&h.wait_state("web#0", "running", 0));
    post(port, "/control/ready?ok=false");
    eventually(SECS(5), "/ready turns 503", || {
        fetch(admin, "/ready").0 == 503
    });
    assert_eq!(
        fetch(admin, "/ready").1,
        r#"{"status":"not_ready","reasons":["app web has no ready instance"]}"#
    );
    post(port, "/control/ready?ok=true");
    eventually(SECS(5), "/ready turns 200", || {
        fetch(admin, "/ready").0 == 200
    });
    let health: serde_json::Value = serde_json::from_str(&fetch(admin, "/health").1).unwrap();
    let instance = &health["apps"]["web"]["instances"][0];
    assert_eq!(health["status"], "ok");
    assert_eq!(instance["state"], "ready");
    assert_eq!(instance["breaker"], "closed");
    assert_eq!(instance["last_probe"]["ok"], true);
    assert_eq!(instance["last_probe"]["detail"], "200");
    assert!(instance["pid"].as_u64().unwrap() > 0);
}

#[test]
fn a_slow_starter_gets_no_traffic_before_it_is_ready() {
    let config = format!(
        "{LISTEN}[apps.slow]\nroutes = [{{ path = \"/\" }}]\ncommand = {}\n",
        testapp_command(&["--startup-delay", "700ms"])
    );
    let h = Harbor::start(&config);
    let traffic = Traffic::start(h.gateway(0));
    h.wait_state("slow#0", "ready", 0);
    eventually(SECS(5), "served", || fetch(h.gateway(0), "/").0 == 200);
    let seen = traffic.finish();
    let codes: std::collections::BTreeSet<u16> = seen.iter().map(|(s, _)| *s).collect();
    assert!(codes.is_subset(&[200, 503].into()), "{codes:?}");
    assert!(
        codes.contains(&503),
        "the test did not send traffic before the start"
    );
}
