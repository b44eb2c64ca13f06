//! In-flight accounting and the drain switch, through the library API: a
//! gateway on a port-0 listener in front of a real testapp process.

mod support;

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use harbormaster::config::{self, AppName};
use harbormaster::gateway::Gateway;
use harbormaster::health::upstreams::ExternalHealth;
use harbormaster::lifecycle::routing;
use harbormaster::supervisor::Supervisor;
use support::harbor::Backend;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

struct Fixture {
    gateway: Arc<Gateway>,
    url: String,
    app: AppName,
    _backend: Backend,
    _dir: tempfile::TempDir,
    stop: CancellationToken,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn fixture() -> Fixture {
    let backend = Backend::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[apps.events]\nroutes = [{{ path = \"/\" }}]\nupstreams = [\"127.0.0.1:{}\"]\n",
        backend.port
    );
    let config = config::from_str(&text, &dir.path().join("harbormaster.toml")).unwrap();
    let supervisor = Supervisor::new(&dir.path().join("rt")).unwrap();
    let gateway = Gateway::new(&config.gateway);
    let externals = std::sync::Arc::new(ExternalHealth::default());
    let mut changes = externals.changes();
    externals.spawn_monitors(&config, CancellationToken::new());
    let label = ExternalHealth::label("events", ([127, 0, 0, 1], backend.port).into());
    while !externals.get(&label).ready {
        changes.changed().await.unwrap(); // the backend's first readiness success
    }
    gateway.update(routing::table(&config, &supervisor, &externals, &gateway));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(gateway.clone().serve(listener, stop.clone()));
    Fixture {
        gateway,
        url,
        app: AppName::new("events").unwrap(),
        _backend: backend,
        _dir: dir,
        stop,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_stays_above_zero_while_sse_streams_and_drops_right_after() {
    let f = fixture().await;
    assert_eq!(f.gateway.in_flight(), 0);
    // The events are 1 s apart: the stream is still open 350 ms after the
    // first one arrived, with a wide margin for a test that reads it late.
    let res = reqwest::get(format!("{}/sse?events=3&interval_ms=1000", f.url))
        .await
        .unwrap();
    let mut body = res.bytes_stream();
    let first = body.next().await.unwrap().unwrap();
    assert!(first.starts_with(b"id: 0"));
    // Headers and the first event are out; the stream is still open.
    assert_eq!(f.gateway.in_flight(), 1);
    assert_eq!(f.gateway.app_in_flight(&f.app), 1);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_eq!(f.gateway.in_flight(), 1, "still streaming");
    while let Some(chunk) = body.next().await {
        chunk.unwrap();
    }
    // The stream ended: the count returns to zero at once (no timer involved).
    assert!(
        f.gateway
            .wait_idle(Instant::now() + Duration::from_millis(200))
            .await
    );
    assert_eq!(f.gateway.app_in_flight(&f.app), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_releases_its_count() {
    let f = fixture().await;
    let res = reqwest::get(format!("{}/sse?events=100&interval_ms=100", f.url))
        .await
        .unwrap();
    let mut body = res.bytes_stream();
    body.next().await.unwrap().unwrap();
    assert_eq!(f.gateway.in_flight(), 1);
    drop(body);
    assert!(
        f.gateway
            .wait_idle(Instant::now() + Duration::from_secs(5))
            .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_app_refuses_new_requests_while_in_flight_ones_complete() {
    let f = fixture().await;
    let slow = tokio::spawn(reqwest::get(format!("{}/slow?ms=500", f.url)));
    let deadline = Instant::now() + Duration::from_secs(5);
    while f.gateway.in_flight() == 0 {
        assert!(Instant::now() < deadline, "the slow request never arrived");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    f.gateway.set_draining(&f.app, true);
    let res = reqwest::get(format!("{}/", f.url)).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(res.headers()["retry-after"], "1");
    assert_eq!(res.headers()["connection"], "close");
    assert_eq!(
        res.text().await.unwrap(),
        r#"{"error":"app draining","app":"events","retry_after_s":1}"#
    );
    // The request admitted before the drain finishes normally.
    let done = slow.await.unwrap().unwrap();
    assert_eq!(done.status(), 200);
    assert_eq!(done.text().await.unwrap(), "slept 500 ms in testapp\n");
    assert!(
        f.gateway
            .wait_idle(Instant::now() + Duration::from_secs(1))
            .await
    );

    f.gateway.set_draining(&f.app, false);
    assert_eq!(
        reqwest::get(format!("{}/", f.url)).await.unwrap().status(),
        200
    );
}
