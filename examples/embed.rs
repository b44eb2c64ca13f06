//! Embedding harbormaster: a desktop app that supervises its own local server.
//!
//! It starts the test backend behind a gateway on a free port, prints every
//! state change, drains and resumes the app, then shuts down gracefully and
//! waits until everything has stopped.
//!
//!     cargo build -p testapp && cargo run --example embed

use std::path::PathBuf;
use std::time::Duration;

use harbormaster::config;
use harbormaster::lifecycle::{Harbor, Options};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let testapp = root.join("target/debug/testapp");
    let runtime = std::env::temp_dir().join(format!("harbormaster-embed-{}", std::process::id()));
    let text = format!(
        r#"
[gateway]
listen = ["127.0.0.1:0"]

[runtime]
dir = "{runtime}"

[apps.server]
routes = [{{ path = "/" }}]
command = ["{testapp}"]
"#,
        runtime = runtime.display(),
        testapp = testapp.display()
    );
    // The same validation as `harbormaster check`, from a string.
    let config = config::from_str(&text, &root.join("embedded.toml"))
        .map_err(|errors| anyhow::anyhow!("{errors}"))?;

    let harbor = Harbor::start(config, Options::default()).await?;
    let mut events = harbor.subscribe();
    tokio::spawn(async move {
        // The same events as `GET /v1/events`.
        while let Ok(event) = events.recv().await {
            println!("{}: {}", event.kind(), serde_json::to_string(&event)?);
        }
        Ok::<_, serde_json::Error>(())
    });

    // Wait until the server is ready (the events above say when).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !harbor.readiness().reasons.is_empty() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "not ready: {:?}",
            harbor.readiness().reasons
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = harbor.health();
    println!(
        "ready: server has {} instance(s)",
        status.apps["server"].instances.len()
    );

    harbor.drain("server")?;
    println!("drained: {}", harbor.health().apps["server"].draining);
    harbor.resume("server")?;

    harbor.shutdown();
    harbor.wait().await?;
    println!("stopped cleanly");
    let _ = std::fs::remove_dir_all(runtime);
    Ok(())
}
