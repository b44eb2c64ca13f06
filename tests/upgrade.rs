//! `harbormaster upgrade` through the real binaries: under steady load (GETs
//! and POSTs on one app, an SSE stream on another) the new process takes
//! over with 0 failed requests, serves afterwards, and nothing is left
//! behind; a binary that cannot start leaves the old process serving.
#![allow(clippy::disallowed_types)]

mod support;

use std::time::Duration;

use futures_util::StreamExt;
use support::harbor::{eventually, gone, testapp_command, Harbor};
use support::load::Load;

fn config() -> String {
    format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\n\n\
         [apps.web]\nroutes = [{{ path = \"/\" }}]\ncommand = {web}\ninstances = 2\n\n\
         [apps.events]\nroutes = [{{ host = \"sse.test\" }}]\ncommand = {web}\n",
        web = testapp_command(&[]),
    )
}

/// [`config`] with a `[gateway.tls]` listener serving DIR/a.pem + a.key.
fn config_with_tls() -> String {
    config().replacen(
        "\n\n",
        "\n\n[gateway.tls]\nlisten = [\"127.0.0.1:0\"]\n\
         certificates = [{ cert = \"a.pem\", key = \"a.key\" }]\n\n",
        1,
    )
}

fn runtime_pid(h: &Harbor) -> u32 {
    let dir = support::xdg(&h.dir).join("harbormaster");
    let found = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .find_map(|e| std::fs::read(e.path().join("runtime.json")).ok())
        .expect("runtime.json");
    serde_json::from_slice::<serde_json::Value>(&found).unwrap()["pid"]
        .as_u64()
        .unwrap() as u32
}

/// The pids of the instances that answer `GET /info` (several tries, so
/// both instances of `web` are seen).
async fn app_pids(client: &reqwest::Client, gw: std::net::SocketAddr, host: &str) -> Vec<i32> {
    let mut pids = Vec::new();
    for _ in 0..8 {
        let info: serde_json::Value = serde_json::from_str(
            &client
                .get(format!("http://{gw}/info"))
                .header("host", host)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap(),
        )
        .unwrap();
        let pid = info["pid"].as_i64().unwrap() as i32;
        if !pids.contains(&pid) {
            pids.push(pid);
        }
    }
    pids
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// SIGTERMs the new harbormaster (not our child) if the test ends early.
struct Stop(i32);

impl Drop for Stop {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0);
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_ok() {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while !gone(self.0) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_under_load_fails_no_request_and_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let ca = support::tls::TestCa::new();
    ca.leaf(&["a.test"]).write(dir.path(), "a");
    let mut h = Harbor::start_in(dir.path(), &config_with_tls(), &[]);
    h.wait_routable(3, "x", "/");
    let gw = h.gateway(0);
    let tls = h.tls_gateway(0);
    let old_pid = h.pid();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let old_apps = [
        app_pids(&client, gw, "x").await,
        app_pids(&client, gw, "sse.test").await,
    ]
    .concat();
    assert_eq!(old_apps.len(), 3, "{old_apps:?}");
    let old_guard = h.wait_for(Duration::from_secs(10), |e| e["event"] == "guard_started")["pid"]
        .as_i64()
        .unwrap() as i32;

    let load = Load::start(vec![
        (reqwest::Method::GET, format!("http://{gw}/")),
        (reqwest::Method::GET, format!("http://{gw}/")),
        (reqwest::Method::POST, format!("http://{gw}/echo")),
        (reqwest::Method::POST, format!("http://{gw}/echo")),
    ]);
    // And HTTPS, kept alive across the handover.
    let tls_load = {
        let c = support::tls::client(&ca, tls, &["a.test"], false);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let url = format!("https://a.test:{}/", tls.port());
        let task = tokio::spawn(async move {
            let (mut ok, mut bad) = (0u32, Vec::new());
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match c.get(&url).send().await {
                    Ok(r) if r.status().is_success() => match r.bytes().await {
                        Ok(_) => ok += 1,
                        Err(e) => bad.push(format!("https body: {e}")),
                    },
                    Ok(r) => bad.push(format!("https {}", r.status())),
                    Err(e) => bad.push(format!("https: {e:?}")),
                }
            }
            (ok, bad)
        });
        (stop, task)
    };
    // An SSE stream on the other app, open across the handover.
    let sse = {
        let client = client.clone();
        tokio::spawn(async move {
            let res = client
                .get(format!("http://{gw}/sse?events=40&interval_ms=100"))
                .header("host", "sse.test")
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            let mut body = res.bytes_stream();
            let mut text = String::new();
            while let Some(chunk) = body.next().await {
                text.push_str(&String::from_utf8_lossy(
                    &chunk.expect("the SSE stream broke"),
                ));
            }
            text.matches("data: event").count()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    let out = support::verb_in(
        &h.dir,
        &["upgrade", "--binary", env!("CARGO_BIN_EXE_harbormaster")],
    )
    .await
    .unwrap();
    // Whatever fails below, the new process (not our child) is stopped.
    let new_pid = runtime_pid(&h);
    let _stop = (new_pid as i32 != old_pid).then(|| Stop(new_pid as i32));
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(&format!("pid {old_pid} → {new_pid}")),
        "{}",
        out.stdout
    );
    assert_ne!(new_pid as i32, old_pid);

    // The old process drains and exits 0 while the load goes on.
    let mut exited = None;
    eventually(
        Duration::from_secs(60),
        "the old harbormaster exits",
        || {
            exited = h.child.try_wait().unwrap();
            exited.is_some()
        },
    );
    assert_eq!(exited.unwrap().code(), Some(0));
    tokio::time::sleep(Duration::from_millis(500)).await;
    tls_load.0.store(true, std::sync::atomic::Ordering::Relaxed);
    let (tls_ok, tls_failed) = tls_load.1.await.unwrap();
    assert!(tls_failed.is_empty(), "HTTPS failures: {tls_failed:?}");
    assert!(tls_ok > 10, "only {tls_ok} HTTPS requests");
    let (ok, failed) = load.finish().await;
    assert!(
        failed.is_empty(),
        "{} failed of {}: {failed:?}",
        failed.len(),
        ok + failed.len() as u32
    );
    assert!(ok > 100, "only {ok} requests");
    assert_eq!(sse.await.unwrap(), 40, "the SSE stream lost events");

    // The new process serves, with its own instances; the old ones are gone.
    for pid in &old_apps {
        eventually(Duration::from_secs(20), "old instances stopped", || {
            gone(*pid)
        });
    }
    eventually(Duration::from_secs(20), "the old guard exited", || {
        gone(old_guard)
    });
    let new_apps = app_pids(&client, gw, "x").await;
    for pid in &new_apps {
        assert_eq!(
            parent_of(*pid),
            Some(new_pid as i32),
            "served by the new process"
        );
    }
    let sse_after = client
        .get(format!("http://{gw}/sse?events=2&interval_ms=10"))
        .header("host", "sse.test")
        .send()
        .await
        .unwrap();
    assert_eq!(sse_after.status(), 200);
    // The CLI reaches the new process through the runtime dir.
    let status = support::verb_in(&h.dir, &["status", "--json"])
        .await
        .unwrap();
    assert_eq!(status.code, 0, "{status:?}");

    // Stopping the new process leaves nothing behind.
    let new_guard = h.wait_nth(1, Duration::from_secs(10), |e| {
        e["event"] == "guard_started"
    })["pid"]
        .as_i64()
        .unwrap() as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(new_pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    eventually(
        Duration::from_secs(60),
        "the new harbormaster exits",
        || gone(new_pid as i32),
    );
    for pid in new_apps.iter().chain([&new_guard]) {
        eventually(Duration::from_secs(20), "nothing left behind", || {
            gone(*pid)
        });
    }
    // The runtime dir was handed over whole: the new process's clean exit
    // removes runtime.json and admin.sock, and the lock is free.
    let runtime = std::fs::read_dir(support::xdg(&h.dir).join("harbormaster"))
        .unwrap()
        .flatten()
        .next()
        .unwrap()
        .path();
    assert!(!runtime.join("runtime.json").exists());
    assert!(!runtime.join("admin.sock").exists());
    let status = support::verb_in(&h.dir, &["status"]).await.unwrap();
    assert_eq!(status.code, 3, "{status:?}");
}

#[test]
fn a_binary_that_cannot_start_leaves_the_old_one_serving() {
    let h = Harbor::start(&config());
    h.wait_routable(3, "x", "/");
    let gw = h.gateway(0);
    let out = support::verb(&h.dir, &["upgrade", "--binary", "/bin/false"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stderr.contains("upgrade failed")
            && out.stderr.contains("/bin/false")
            && out.stderr.contains("exited with exit status: 1")
            && out.stderr.contains("keeps serving"),
        "{}",
        out.stderr
    );
    assert_eq!(runtime_pid(&h), h.pid() as u32);
    assert_eq!(support::harbor::status(gw, "x", "/"), Some(200));
    // And it can still be upgraded or reloaded: the change queue is free.
    let reload = support::verb(&h.dir, &["reload"]);
    assert_eq!(reload.code, 0, "{reload:?}");
}
