//! The web dashboard in a real browser: headless Chromium (Debian's
//! `chromium` + `chromium-driver`, installed by scripts/deps/chromium.sh)
//! driven over WebDriver. The page lists every app and instance, follows a
//! `kill -9` live (restarting, then ready, without a reload), drains from
//! its button, and the login rules hold: a login URL works once, and calls
//! without the dashboard's header or from another site change nothing.
//! The MCP card's buttons engage and clear kill switches.
//! A screenshot goes to target/dashboard.png.

mod support;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use support::harbor::{eventually, request, testapp_command, Harbor};

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Driver {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Its own process group: the browsers it starts go with it on drop,
        // even when the test fails before closing the session.
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run chromedriver ({e}): run scripts/deps/chromium.sh (scripts/test.sh does)")
            });
        eventually(SECS(20), "chromedriver listens", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Self { child, port }
    }

    async fn browser(&self, profile: &std::path::Path) -> Client {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1400,1000",
            &format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": { "args": args, "binary": "/usr/bin/chromium" },
        });
        let caps = caps.as_object().unwrap().clone();
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a Chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

fn config() -> String {
    let app = |name: &str| {
        format!(
            "[apps.{name}]\nroutes = [{{ host = \"{name}.localhost\" }}]\ncommand = {}\n\
             [apps.{name}.readiness]\nhttp = \"/ready\"\ninterval = \"50ms\"\n\
             [apps.{name}.restart]\nbackoff_initial = \"10ms\"\n",
            testapp_command(&["--port", "{port}"])
        )
    };
    format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\n{}{}",
        app("web"),
        app("api")
    )
}

/// Runs `script` in the page; its return value.
async fn js(c: &Client, script: &str) -> Value {
    c.execute(script, vec![]).await.expect("script runs")
}

/// Polls `script` in the page until it returns true, or fails after `timeout`.
async fn page_until(c: &Client, timeout: Duration, what: &str, script: &str) {
    let deadline = Instant::now() + timeout;
    loop {
        if js(c, script).await == Value::Bool(true) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn status(h: &Harbor) -> Value {
    let (_, body) = request(h.admin(), "GET", "x", "/v1/status", "").expect("status");
    serde_json::from_str(&body).unwrap()
}

fn login_url(h: &Harbor) -> String {
    let out = support::verb(&h.dir, &["dashboard"]);
    assert_eq!(out.code, 0, "{out:?}");
    let url = out.stdout.trim().to_string();
    assert!(
        url.starts_with("http://127.0.0.1:") && url.contains("/login/"),
        "{url}"
    );
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_real_browser() {
    let h = Harbor::start(&config());
    h.wait_state("web#0", "ready", 0);
    h.wait_state("api#0", "ready", 0);
    let gateway = h.gateway(0);
    eventually(SECS(10), "web is routed", || {
        request(gateway, "GET", "web.localhost", "/", "").is_some_and(|(c, _)| c == 200)
    });
    // Some traffic while the page is open (api answers 1 in 10 with a 500).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                let (host, path) = match i % 10 {
                    0 => ("api.localhost", "/status/500"),
                    1..=3 => ("api.localhost", "/"),
                    _ => ("web.localhost", "/"),
                };
                request(gateway, "GET", host, path, "");
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let url = login_url(&h);
    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let c = driver.browser(profile.path()).await;

    // Login: the URL sets the session and lands on the dashboard.
    c.goto(&url).await.unwrap();
    let current = c.current_url().await.unwrap();
    assert_eq!(current.path(), "/", "{current}");
    let cookies = c.get_all_cookies().await.unwrap();
    let session = cookies
        .iter()
        .find(|k| k.name() == "harbormaster_session")
        .expect("a session cookie");
    assert_eq!(session.http_only(), Some(true));
    assert_eq!(format!("{:?}", session.same_site()), "Some(Strict)");

    // Every app and instance, with its state.
    for (app, instance) in [("web", "web#0"), ("api", "api#0")] {
        c.wait()
            .at_most(SECS(10))
            .for_element(Locator::Css(&format!("article[data-app='{app}']")))
            .await
            .unwrap();
        page_until(
            &c,
            SECS(10),
            &format!("{instance} shown ready"),
            &format!("const r = document.querySelector(\"tr[data-instance='{instance}'] td.state\"); return !!r && r.textContent === 'ready';"),
        )
        .await;
    }
    // Traffic figures arrive from /metrics.
    page_until(
        &c,
        SECS(10),
        "requests/s shown",
        "return document.querySelector(\"article[data-app='web'] .rps\").textContent !== '–';",
    )
    .await;

    // kill -9: restarting, then ready, within 2 s, without a page reload.
    // (The 2 s are the page's promise; the restart delay and readiness
    // interval above are kept short so they take little of it.) The page
    // follows the kill through its event stream: wait until it is live.
    page_until(
        &c,
        SECS(10),
        "the page's event stream is live",
        "const l = document.querySelector('#live'); return !!l && l.classList.contains('on');",
    )
    .await;
    js(&c, "window.__same_page = true; return null;").await;
    let pid = status(&h)["apps"]["web"]["instances"][0]["pid"]
        .as_i64()
        .expect("web#0's pid") as i32;
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let seen_restarting = "const r = document.querySelector(\"tr[data-instance='web#0']\"); return !!r && r.dataset.states.split(' ').includes('restarting');";
    page_until(&c, SECS(2), "web#0 shown restarting", seen_restarting).await;
    let ready_again = "const r = document.querySelector(\"tr[data-instance='web#0']\"); if (!r) return false; const s = r.dataset.states.split(' '); return s.lastIndexOf('ready') > s.lastIndexOf('restarting') && r.querySelector('td.state').textContent === 'ready';";
    let left = SECS(2).saturating_sub(killed.elapsed());
    page_until(
        &c,
        left,
        "web#0 shown ready again within 2 s of the kill",
        ready_again,
    )
    .await;
    assert_eq!(
        js(&c, "return window.__same_page === true;").await,
        Value::Bool(true),
        "the page was reloaded"
    );
    let restarted = "const r = document.querySelector(\"tr[data-instance='web#0'] td.restarts\"); return !!r && r.textContent === '1';";
    page_until(&c, SECS(5), "web#0's restart count shown", restarted).await;
    let feed = js(&c, "return document.querySelector('#events').textContent;").await;
    assert!(feed.as_str().unwrap().contains("restarting"), "{feed}");

    // A POST from the page without the header changes nothing (403).
    let refused = js(
        &c,
        "return fetch('/v1/apps/api/drain', {method: 'POST'}).then(r => r.status);",
    )
    .await;
    assert_eq!(refused, json!(403));
    assert_eq!(status(&h)["apps"]["api"]["draining"], json!(false));

    // The drain button drains: the gateway answers 503.
    c.find(Locator::Css("article[data-app='web'] button.drain"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    eventually(SECS(10), "web drained", || {
        request(gateway, "GET", "web.localhost", "/", "").is_some_and(|(c, _)| c == 503)
    });
    page_until(
        &c,
        SECS(5),
        "the page shows web draining",
        "return !document.querySelector(\"article[data-app='web'] .draining\").hidden;",
    )
    .await;
    // The app's output tail (its log under state_dir), with the session.
    c.find(Locator::Css("article[data-app='api'] details.logs summary"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    page_until(&c, SECS(10), "api's output shown", "return document.querySelector(\"article[data-app='api'] .log-lines\").textContent.includes('listening on');").await;
    // One more metrics poll, so the screenshot shows the drain's 503s.
    tokio::time::sleep(SECS(2)).await;
    c.screenshot()
        .await
        .map(|png| {
            std::fs::write(
                concat!(env!("CARGO_MANIFEST_DIR"), "/target/dashboard.png"),
                png,
            )
        })
        .expect("a screenshot")
        .unwrap();

    // A cross-site form POST (no header; a SameSite=Strict cookie is not
    // sent) changes nothing.
    let admin = h.admin();
    let form = format!(
        "data:text/html,<form method=post action='http://{admin}/v1/apps/api/drain'></form><script>document.forms[0].submit()</script>"
    );
    c.goto(&form).await.unwrap();
    let deadline = Instant::now() + SECS(10);
    loop {
        let body = c.source().await.unwrap_or_default();
        if body.contains("unauthorized") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cross-site POST was not refused with 401: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status(&h)["apps"]["api"]["draining"], json!(false));

    // The login URL works once.
    c.goto(&url).await.unwrap();
    let again = c.source().await.unwrap();
    assert!(again.contains("already used"), "{again}");
    let path = url.split_once(&admin.to_string()).unwrap().1;
    let (code, _) = request(admin, "GET", "x", path, "").unwrap();
    assert_eq!(code, 401);

    c.close().await.unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    load.join().unwrap();
}

/// The MCP card: servers with their kill switch; its buttons engage and
/// clear switches through `POST /v1/mcp/kill|unkill` with the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_kills_and_unkills_an_mcp_server() {
    let config = format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\n[mcp]\n[mcp.servers.f]\ncommand = {}\n",
        support::mcp::fault_command()
    );
    let h = Harbor::start(&config);
    let admin = h.admin();
    let switches = || -> Value {
        let (_, body) = request(admin, "GET", "x", "/v1/mcp", "").expect("GET /v1/mcp");
        serde_json::from_str::<Value>(&body).unwrap()["kill_switches"].clone()
    };
    let url = login_url(&h);
    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let c = driver.browser(profile.path()).await;
    c.goto(&url).await.unwrap();
    page_until(&c, SECS(20), "server f shown ready",
        "const r = document.querySelector(\"tr[data-server='f'] td.state\"); return !!r && r.textContent === 'ready';").await;

    let click = |css: &'static str| {
        let c = c.clone();
        async move {
            c.wait()
                .at_most(SECS(10))
                .for_element(Locator::Css(css))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
        }
    };
    click("tr[data-server='f'] button.kill").await;
    eventually(SECS(10), "f killed", || switches() == json!(["f"]));
    page_until(
        &c,
        SECS(10),
        "the page offers Unkill",
        "return !!document.querySelector(\"tr[data-server='f'] button.unkill\");",
    )
    .await;
    click("tr[data-server='f'] button.unkill").await;
    eventually(SECS(10), "f unkilled", || switches() == json!([]));
    page_until(
        &c,
        SECS(10),
        "Kill all shown",
        "return !document.querySelector('#mcp .kill-all').hidden;",
    )
    .await;
    click("#mcp .kill-all").await;
    eventually(SECS(10), "everything killed", || switches() == json!(["*"]));
    page_until(
        &c,
        SECS(10),
        "the page shows the switch",
        "return document.querySelector('#mcp-switches').textContent === 'killed: *';",
    )
    .await;
    click("#mcp .unkill-all").await;
    eventually(SECS(10), "everything unkilled", || switches() == json!([]));
    c.close().await.unwrap();

    // Each click is an admin action by the session, with its target. (The
    // audit writer may not have stored the last rows yet: wait for all four.)
    let file = h.dir.join("harbormaster.toml");
    let audit = || {
        let out = support::Cmd::harbormaster([
            "-c",
            file.to_str().unwrap(),
            "audit",
            "--admin",
            "--json",
        ])
        .current_dir(&h.dir)
        .run();
        let rows: Vec<(String, String, String)> = out
            .stdout
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|r| r["action"] != "login")
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap_or("-").to_string();
                (s("action"), s("target"), s("via"))
            })
            .collect();
        (out, rows)
    };
    eventually(SECS(10), "four admin actions in the audit log", || {
        audit().1.len() >= 4
    });
    let (out, rows) = audit();
    let t = |a: &str, b: &str| (a.to_string(), b.to_string(), "session".to_string());
    assert_eq!(
        rows,
        vec![
            t("kill", "f"),
            t("unkill", "f"),
            t("kill", "*"),
            t("unkill", "*")
        ],
        "{out:?}"
    );
}
