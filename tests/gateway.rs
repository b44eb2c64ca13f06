//! The gateway through the real binary: routing, the responses it makes
//! itself, retries, streaming (SSE, WebSocket, 100 MB bodies), HTTP/2,
//! limits and the access log.

mod support;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use support::harbor::{testapp_command, Backend, Harbor};

const LISTEN: &str = "[gateway]\nlisten = [\"127.0.0.1:0\"]\n";

fn managed(name: &str, routes: &str, args: &[&str], extra: &str) -> String {
    format!(
        "[apps.{name}]\nroutes = {routes}\ncommand = {}\n{extra}\n",
        testapp_command(args)
    )
}

fn external(name: &str, routes: &str, ports: &[u16]) -> String {
    let ups: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    format!(
        "[apps.{name}]\nroutes = {routes}\nupstreams = [{}]\n",
        ups.join(", ")
    )
}

/// A testapp backend behind an external app `name` on path `/`, with the
/// given `[gateway]` section, once the gateway serves it.
fn proxied(name: &str, gateway: &str) -> (Backend, Harbor) {
    let backend = Backend::start(&[]);
    let config = format!(
        "{gateway}{}",
        external(name, r#"[{ path = "/" }]"#, &[backend.port])
    );
    let h = Harbor::start(&config);
    h.wait_serving("x");
    (backend, h)
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

async fn get(url: &str, host: &str) -> (u16, reqwest::header::HeaderMap, String) {
    let res = client().get(url).header("host", host).send().await.unwrap();
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    (status, headers, res.text().await.unwrap())
}

fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_exact_host_wildcard_and_longest_path_with_strip_prefix() {
    let config = format!(
        "{LISTEN}{}{}",
        managed(
            "web",
            r#"[{ host = "web.localhost" }, { host = "*.web.localhost" }]"#,
            &["--name", "web"],
            ""
        ),
        managed(
            "api",
            r#"[{ path = "/api", strip_prefix = true }]"#,
            &["--name", "api"],
            ""
        ),
    );
    let h = Harbor::start(&config);
    let gw = h.gateway(0);
    h.wait_routable(2, "web.localhost", "/");
    h.wait_routable(2, "x", "/api");
    let base = format!("http://{gw}");
    let (s, _, body) = get(&format!("{base}/"), "web.localhost:8080").await;
    assert_eq!(s, 200);
    assert!(body.starts_with("hello from web"), "{body}");
    let (_, _, body) = get(&format!("{base}/"), "a.b.WEB.localhost").await;
    assert!(body.starts_with("hello from web"), "{body}");
    // strip_prefix: /api/echo reaches the app as /echo.
    let (s, _, body) = get(&format!("{base}/api/echo?x=1"), "other.localhost").await;
    assert_eq!(s, 200);
    let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(echo["uri"], "/echo?x=1");
    let (s, _, body) = get(&format!("{base}/api"), "other.localhost").await;
    assert_eq!((s, body.starts_with("hello from api")), (200, true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_is_404_json() {
    let config = format!(
        "{LISTEN}{}",
        external("api", r#"[{ host = "api.localhost" }]"#, &[1])
    );
    let h = Harbor::start(&config);
    let (s, headers, body) = get(
        &format!("http://{}/x/y", h.gateway(0)),
        "nope.localhost:1234",
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        body,
        r#"{"error":"no route","host":"nope.localhost","path":"/x/y"}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upstream_is_502_and_idempotent_requests_are_retried_on_another() {
    let a = Backend::start(&[]);
    let b = Backend::start(&[]);
    let config = format!(
        "{LISTEN}{}{}",
        external(
            "both",
            r#"[{ host = "both.localhost" }]"#,
            &[a.port, b.port]
        ),
        external("solo", r#"[{ host = "solo.localhost" }]"#, &[a.port]),
    );
    let h = Harbor::start(&config);
    let base = format!("http://{}", h.gateway(0));
    h.wait_serving("solo.localhost");
    // Both upstreams of `both` are ready: each takes a request.
    support::harbor::eventually(Duration::from_secs(10), "both upstreams ready", || {
        h.events()
            .iter()
            .filter(|e| e["event"] == "upstream_ready")
            .count()
            == 3
    });
    // `a` goes away; readiness probes have not noticed yet.
    drop(a);
    let (s, _, body) = get(&format!("{base}/"), "solo.localhost").await;
    assert_eq!(
        (s, body.as_str()),
        (502, r#"{"error":"bad gateway","app":"solo"}"#)
    );
    // A request with a body is not retried: with round robin, some fail.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let res = client()
            .post(format!("{base}/echo"))
            .header("host", "both.localhost")
            .body("x")
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
    }
    assert!(
        statuses.contains(&502) && statuses.contains(&200),
        "{statuses:?}"
    );
    // GETs whose connect fails are retried on the other upstream: all succeed.
    for _ in 0..6 {
        assert_eq!(get(&format!("{base}/"), "both.localhost").await.0, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_never_takes_traffic() {
    let config = format!(
        "{LISTEN}{}",
        external("dead", r#"[{ path = "/" }]"#, &[closed_port()])
    );
    let h = Harbor::start(&config);
    let (s, headers, body) = get(&format!("http://{}/", h.gateway(0)), "x").await;
    assert_eq!(s, 503);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(
        body,
        r#"{"error":"no ready instance","app":"dead","retry_after_s":1}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_reset_before_response_is_502() {
    let (_backend, h) = proxied("web", LISTEN);
    let (s, _, body) = get(&format!("http://{}/crash", h.gateway(0)), "x").await;
    assert_eq!(
        (s, body.as_str()),
        (502, r#"{"error":"bad gateway","app":"web"}"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_is_504() {
    let (_backend, h) = proxied(
        "web",
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\nupstream_response_timeout = \"300ms\"\n",
    );
    let (s, _, body) = get(&format!("http://{}/hang", h.gateway(0)), "x").await;
    assert_eq!(
        (s, body.as_str()),
        (504, r#"{"error":"gateway timeout","app":"web"}"#)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ready_instance_is_503_with_retry_after() {
    let config = format!(
        "{LISTEN}{}",
        managed(
            "slow",
            r#"[{ path = "/" }]"#,
            &["--startup-delay", "60s"],
            ""
        )
    );
    let h = Harbor::start(&config);
    let gw = h.gateway(0);
    h.wait_state("slow#0", "running", 0);
    let (s, headers, body) = get(&format!("http://{gw}/"), "x").await;
    assert_eq!(s, 503);
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(
        body,
        r#"{"error":"no ready instance","app":"slow","retry_after_s":1}"#
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_events_arrive_one_by_one() {
    let config = format!(
        "{LISTEN}{}",
        managed("events", r#"[{ path = "/" }]"#, &[], "")
    );
    let h = Harbor::start(&config);
    let gw = h.gateway(0);
    h.wait_routable(1, "x", "/");
    let res = client()
        .get(format!("http://{gw}/sse?events=4&interval_ms=250"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let start = tokio::time::Instant::now();
    let mut stream = res.bytes_stream();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        text.push_str(std::str::from_utf8(&chunk).unwrap());
        for _ in 0..chunk.windows(2).filter(|w| w == b"\n\n").count() {
            arrivals.push(start.elapsed());
        }
    }
    assert_eq!(text.matches("data: event").count(), 4, "{text}");
    assert_eq!(arrivals.len(), 4);
    // Unbuffered: the first event is here long before the last one is sent.
    assert!(
        arrivals[3] - arrivals[0] >= Duration::from_millis(600),
        "{arrivals:?}"
    );
    assert!(arrivals[0] < Duration::from_millis(200), "{arrivals:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echoes_through_the_gateway() {
    let config = format!(
        "{LISTEN}{}",
        managed("ws", r#"[{ host = "ws.localhost" }]"#, &[], "")
    );
    let h = Harbor::start(&config);
    let gw = h.gateway(0);
    h.wait_routable(1, "ws.localhost", "/");
    use tokio_tungstenite::tungstenite::{client::IntoClientRequest, Message};
    let mut req = format!("ws://{gw}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("host", "ws.localhost".parse().unwrap());
    let (mut ws, res) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(res.status(), 101);
    for i in 0..3 {
        ws.send(Message::text(format!("ping {i}"))).await.unwrap();
        let reply = ws.next().await.unwrap().unwrap();
        assert_eq!(reply.into_text().unwrap().as_str(), format!("ping {i}"));
    }
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap().into_data().as_ref(),
        &[1, 2, 3]
    );
    ws.close(None).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_100_mb_up_and_down_with_flat_memory() {
    const SIZE: u64 = 100 * 1024 * 1024;
    let (_backend, h) = proxied("big", LISTEN);
    let base = format!("http://{}", h.gateway(0));
    let before = h.peak_rss_kib();

    let res = client()
        .get(format!("{base}/bytes?n={SIZE}"))
        .send()
        .await
        .unwrap();
    let mut got = 0u64;
    let mut stream = res.bytes_stream();
    while let Some(chunk) = stream.next().await {
        got += chunk.unwrap().len() as u64;
    }
    assert_eq!(got, SIZE);

    let chunks = futures_util::stream::iter(
        (0..SIZE / 65536).map(|_| Ok::<_, std::io::Error>(vec![b'u'; 65536])),
    );
    let res = client()
        .post(format!("{base}/sink"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(res.text().await.unwrap(), format!("{{\"bytes\":{SIZE}}}"));
    // Bodies were streamed, not buffered: peak memory grew by far less than 100 MB.
    let grown = h.peak_rss_kib().saturating_sub(before);
    assert!(grown < 20 * 1024, "peak RSS grew by {grown} KiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_requests_work() {
    let backend = Backend::start(&[]);
    let config = format!(
        "{LISTEN}{}",
        external("web", r#"[{ host = "web.localhost" }]"#, &[backend.port])
    );
    let h = Harbor::start(&config);
    let gw = h.gateway(0);
    h.wait_serving("web.localhost");
    let h2 = reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .resolve("web.localhost", gw)
        .build()
        .unwrap();
    let url = format!("http://web.localhost:{}/echo", gw.port());
    let res = h2.get(url).send().await.unwrap();
    assert_eq!(res.version(), reqwest::Version::HTTP_2);
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    let echo: serde_json::Value = serde_json::from_str(&text).expect(&text);
    // The upstream gets HTTP/1.1 with the original host.
    assert_eq!(
        echo["headers"]["host"],
        format!("web.localhost:{}", h.gateway(0).port())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_are_set_host_kept_hop_by_hop_removed() {
    let (_backend, h) = proxied("web", LISTEN);
    let res = client()
        .get(format!("http://{}/echo", h.gateway(0)))
        .header("host", "Example.test:9")
        .header("x-forwarded-for", "10.1.2.3")
        .header("connection", "keep-alive, x-private")
        .header("x-private", "secret")
        .header("keep-alive", "timeout=5")
        .send()
        .await
        .unwrap();
    let echo: serde_json::Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
    let headers = &echo["headers"];
    assert_eq!(headers["host"], "Example.test:9");
    assert_eq!(headers["x-forwarded-for"], "10.1.2.3, 127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(headers["x-forwarded-host"], "Example.test:9");
    assert!(headers.get("x-private").is_none(), "{headers}");
    assert!(headers.get("keep-alive").is_none(), "{headers}");
}

#[test]
fn oversized_headers_get_431_and_slow_clients_are_cut() {
    use std::io::{Read, Write};
    let config = format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\nmax_header_bytes = 8192\nheader_read_timeout = \"300ms\"\n{}",
        external("web", r#"[{ path = "/" }]"#, &[1])
    );
    let h = Harbor::start(&config);
    let gw = h.gateway(0);
    let mut s = std::net::TcpStream::connect(gw).unwrap();
    // The gateway answers before it has read the whole head and then closes
    // with bytes unread, which resets the connection: read while writing,
    // or the reset can discard the answer before it is read.
    let mut reader = s.try_clone().unwrap();
    let answer = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = reader.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    });
    let big = "a".repeat(20_000);
    let _ = write!(s, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let out = answer.join().unwrap();
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");

    // A client that never finishes its head is disconnected.
    let mut slow = std::net::TcpStream::connect(gw).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let mut buf = Vec::new();
    let n = slow.read_to_end(&mut buf);
    assert!(n.is_ok(), "the connection was not closed: {n:?}");
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_has_one_line_per_request() {
    let (backend, h) = proxied(
        "web",
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\naccess_log = true\n",
    );
    let res = client()
        .post(format!("http://{}/echo", h.gateway(0)))
        .body("12345")
        .send()
        .await
        .unwrap();
    let body = res.text().await.unwrap();
    let line = h.wait_for(Duration::from_secs(5), |e| {
        e["event"] == "access" && e["method"] == "POST"
    });
    assert_eq!(line["app"], "web");
    assert_eq!(line["instance"], format!("web@127.0.0.1:{}", backend.port));
    assert_eq!(line["method"], "POST");
    assert_eq!(line["path"], "/echo");
    assert_eq!(line["status"], 200);
    assert_eq!(line["bytes_in"], 5);
    assert_eq!(line["bytes_out"], body.len());
    assert_eq!(line["outcome"], "ok");
    assert_eq!(line["client"], "127.0.0.1");
    assert!(line["host"].as_str().unwrap().starts_with("127.0.0.1:"));
    // Whole microseconds: no float noise.
    assert!(line["duration_us"].is_u64(), "{line}");

    // The gateway's own answers are logged too, with their outcome.
    let (status, _) =
        support::harbor::request(h.gateway(0), "CONNECT", "x:443", "x:443", "").expect("an answer");
    assert_eq!(status, 405);
    let refused = h.wait_for(Duration::from_secs(5), |e| {
        e["event"] == "access" && e["outcome"] == "refused"
    });
    assert_eq!(refused["status"], 405);
    assert_eq!(refused["method"], "CONNECT");
}

#[test]
fn excess_connections_wait_for_a_free_slot() {
    use std::io::{Read, Write};
    let (_backend, h) = proxied(
        "web",
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\nmax_connections = 1\n",
    );
    let gw = h.gateway(0);
    let request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut first = std::net::TcpStream::connect(gw).unwrap();
    first.write_all(request).unwrap();
    let mut buf = [0u8; 512];
    assert!(first.read(&mut buf).unwrap() > 0);
    // The second connection is accepted by the kernel but not served yet.
    let mut second = std::net::TcpStream::connect(gw).unwrap();
    second
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    assert!(
        second.read(&mut buf).is_err(),
        "served beyond max_connections"
    );
    drop(first);
    second
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut out = String::new();
    second.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listens_on_several_addresses_including_ipv6() {
    let (_backend, h) = proxied(
        "web",
        "[gateway]\nlisten = [\"127.0.0.1:0\", \"[::1]:0\"]\n",
    );
    for n in 0..2 {
        let addr = h.gateway(n);
        let (s, _, _) = get(&format!("http://{addr}/"), "x").await;
        assert_eq!(s, 200, "{addr}");
    }
}

/// `Cpus_allowed_list` of each of the process's threads named `gateway-*`.
fn gateway_worker_cpus(pid: i32) -> Vec<String> {
    let mut cpus = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if !comm.starts_with("gateway-") {
            continue;
        }
        let status = std::fs::read_to_string(task.join("status")).unwrap_or_default();
        if let Some(line) = status.lines().find(|l| l.starts_with("Cpus_allowed_list:")) {
            cpus.push(line["Cpus_allowed_list:".len()..].trim().to_string());
        }
    }
    cpus.sort();
    cpus
}

#[test]
fn worker_cpu_affinity_auto_pins_each_worker_to_its_own_cpu_and_off_pins_none() {
    let (_b, plain) = proxied("x", LISTEN);
    let (_c, pinned) = proxied("x", &format!("{LISTEN}worker_cpu_affinity = \"auto\"\n"));
    let unpinned = gateway_worker_cpus(plain.pid());
    assert!(!unpinned.is_empty(), "no gateway worker threads found");
    let ours = std::fs::read_to_string("/proc/self/status").unwrap();
    let allowed = ours
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string();
    assert!(
        unpinned.iter().all(|c| *c == allowed),
        "{unpinned:?} vs {allowed}"
    );
    let workers = gateway_worker_cpus(pinned.pid());
    assert_eq!(workers.len(), unpinned.len());
    if workers.len() > 1 {
        // One CPU each, all different.
        let distinct: std::collections::HashSet<_> = workers.iter().collect();
        assert_eq!(distinct.len(), workers.len(), "{workers:?}");
        assert!(
            workers.iter().all(|c| c.parse::<usize>().is_ok()),
            "{workers:?}"
        );
    } else {
        // One worker (one CPU to run on): nothing to spread.
        assert_eq!(workers.len(), 1);
    }
}
