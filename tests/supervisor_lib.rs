//! The supervisor as a library, with paused tokio time: dependents wait
//! (visibly) for their dependencies, and a replacement's readiness wait ends
//! at its deadline. The processes are real (`sleep`); the clock is not.

use std::time::Duration;

use harbormaster::config::AppName;
use harbormaster::supervisor::{InstanceId, Supervisor};
use harbormaster::Config;

fn config(dir: &std::path::Path, apps: &str) -> Config {
    let text = format!("[gateway]\nlisten = [\"127.0.0.1:0\"]\n{apps}");
    harbormaster::config::from_str(&text, &dir.join("harbormaster.toml")).unwrap()
}

/// An app whose process runs but never listens, so it is never ready.
const NEVER_READY: &str =
    "[apps.api]\nroutes = [{ host = \"api.localhost\" }]\ncommand = [\"sleep\", \"30\"]\n";

#[tokio::test(start_paused = true)]
async fn dependents_wait_with_their_reason_and_stop_waiting_when_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(
        dir.path(),
        &format!(
            "{NEVER_READY}[apps.web]\nroutes = [{{ path = \"/\" }}]\ncommand = [\"sleep\", \"30\"]\n\
             depends_on = {{ api = \"ready\" }}\n\
             [apps.front]\nroutes = [{{ path = \"/front\" }}]\ncommand = [\"sleep\", \"30\"]\n\
             depends_on = {{ web = \"started\" }}\n"
        ),
    );
    let supervisor = Supervisor::new(dir.path()).unwrap();
    supervisor.start_all(&config);
    let web = AppName::new("web").unwrap();
    let mut waiting = supervisor.waiting();
    tokio::time::timeout(
        Duration::from_secs(5),
        waiting.wait_for(|w| w.contains_key(&web)),
    )
    .await
    .expect("web is shown waiting")
    .unwrap();
    assert_eq!(
        supervisor.waiting().borrow()[&web],
        "waiting for api to be ready"
    );
    // A chain waits too: `front` does not take a waiting `web` for started.
    let front = AppName::new("front").unwrap();
    assert_eq!(
        supervisor.waiting().borrow()[&front],
        "waiting for web to be started"
    );
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(supervisor.ids(&web).is_empty(), "web never started");
    assert!(supervisor.ids(&front).is_empty(), "front never started");

    supervisor.stop_all(&config).await;
    assert!(supervisor.waiting().borrow().is_empty());
    assert!(
        supervisor.ids(&web).is_empty(),
        "nothing starts after the stop"
    );
}

#[tokio::test(start_paused = true)]
async fn waiting_for_readiness_ends_at_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), NEVER_READY);
    let supervisor = Supervisor::new(dir.path()).unwrap();
    let api = &config.apps[&AppName::new("api").unwrap()];
    let ids = supervisor.start_now(api);
    assert_eq!(
        ids.iter().map(InstanceId::to_string).collect::<Vec<_>>(),
        ["api#0"]
    );

    let started = tokio::time::Instant::now();
    let deadline = started + Duration::from_secs(30);
    let err = supervisor.wait_ready(&ids, deadline).await.unwrap_err();
    assert_eq!(err.id, ids[0]);
    assert!(err.reason.ends_with("at the deadline"), "{err}");
    assert_eq!(started.elapsed(), Duration::from_secs(30));
    supervisor.stop_all(&config).await;
}
