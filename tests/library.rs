//! The library API as an embedding program uses it: `lifecycle::run` with
//! port-0 listeners and the test's own shutdown future (as mini-redis's
//! tests drive `server::run`), and the phases and events of `Harbor`.

mod support;

use std::time::Duration;

use harbormaster::admin::api::EventKind;
use harbormaster::lifecycle::{self, Harbor, Options, Phase, RuntimeDir};
use support::harbor::testapp_command;

const SECS: fn(u64) -> Duration = Duration::from_secs;

fn config(dir: &std::path::Path) -> harbormaster::Config {
    let text = format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [runtime]\ndir = \"{rt}\"\nstate_dir = \"{state}\"\n\
         [apps.web]\nroutes = [{{ path = \"/\" }}]\ncommand = {cmd}\n",
        rt = dir.join("rt").display(),
        state = dir.join("state").display(),
        cmd = testapp_command(&[]),
    );
    harbormaster::config::from_str(&text, &dir.join("harbormaster.toml")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_until_its_shutdown_future_resolves_then_frees_everything() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path());
    let runtime = RuntimeDir::acquire(&dir.path().join("rt")).unwrap();
    let listeners = lifecycle::bind(&config).unwrap();
    let gw = listeners.gateway[0].local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let harbor = tokio::spawn(lifecycle::run(
        config,
        runtime,
        listeners,
        Options::default(),
        async move {
            let _ = stopped.await;
        },
    ));

    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let deadline = tokio::time::Instant::now() + SECS(20);
    loop {
        let answer = client.get(format!("http://{gw}/")).send().await;
        if answer.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never served");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(dir.path().join("rt/runtime.json").exists());

    stop.send(()).unwrap();
    tokio::time::timeout(SECS(20), harbor)
        .await
        .expect("run returns after its shutdown future resolved")
        .unwrap()
        .unwrap();
    assert!(!dir.path().join("rt/runtime.json").exists());
    std::net::TcpListener::bind(gw).expect("the gateway port is free again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_harbor_publishes_its_shutdown_phases_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let harbor = Harbor::start(config(dir.path()), Options::default())
        .await
        .unwrap();
    let mut events = harbor.subscribe();
    let mut phase = harbor.phase();
    assert_eq!(*phase.borrow_and_update(), Phase::Running);
    let deadline = tokio::time::Instant::now() + SECS(20);
    while !harbor.readiness().reasons.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "never ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    harbor.shutdown();
    harbor.wait().await.unwrap();
    assert_eq!(*phase.borrow_and_update(), Phase::Stopped);

    let mut phases = Vec::new();
    let mut stopped = Vec::new();
    while let Ok(event) = events.try_recv() {
        match event.what {
            EventKind::Shutdown { phase } => phases.push(phase),
            EventKind::StateChange { to, .. } if to == "stopped" => {
                stopped.push(event.instance.unwrap())
            }
            _ => {}
        }
    }
    assert_eq!(
        phases,
        ["draining", "stopping_apps", "flushing", "stopped"],
        "in order, each once"
    );
    assert_eq!(stopped, ["web#0"]);
}
