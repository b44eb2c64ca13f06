//! `harbormaster mcp`: MCP over stdio for an AI client. stdout carries only
//! MCP messages; logs go to stderr and `state_dir/logs/harbormaster-mcp.log`.
//! No harbor runs for the config: this
//! process runs it (apps, MCP servers, gateway listeners) and stops it in
//! order when stdin closes or on SIGTERM. One is already running: stdio is
//! bridged to it over admin.sock (`mcp_bridge.rs`).

use std::process::ExitCode;

use tokio::signal::unix::{signal, SignalKind};

use super::Cli;
use crate::lifecycle;
use crate::mcp::{front_stdio, Caller, Front};

/// This verb's log file, beside `start`'s (a bridge and the harbor it
/// bridges to may run at once; each rotates its own file).
const LOG: &str = "harbormaster-mcp.log";

pub fn mcp(cli: &Cli) -> ExitCode {
    let Some(config) = super::run::load_or_report(&cli.config) else {
        return ExitCode::FAILURE;
    };
    let logs = config.runtime.state_dir.join("logs");
    let _ = std::fs::create_dir_all(&logs);
    let file = std::sync::Arc::new(crate::supervisor::output::RotatingFile::new(logs.join(LOG)));
    let sink = super::logging::Sink::Both(file);
    if let Err(e) = super::logging::init(cli.log_format, cli.log_level.as_deref(), sink) {
        eprintln!("harbormaster: {e:#}");
        return ExitCode::from(2);
    }
    let Some(mcp) = config.mcp.clone() else {
        eprintln!(
            "{}: no [mcp] table — add [mcp.servers.NAME] with command = [\"program\"] (see docs/mcp.md)",
            cli.config.display()
        );
        return ExitCode::FAILURE;
    };
    let dir = super::run::runtime_dir(cli.runtime_dir.as_deref(), &config);
    let Some(runtime) = super::async_runtime(true) else {
        return ExitCode::FAILURE;
    };
    let caller = Caller {
        roles: mcp
            .clients
            .get(&mcp.stdio_client)
            .map(|c| c.roles.clone())
            .unwrap_or_default(),
        client: mcp.stdio_client.clone(),
        front: Front::Stdio,
        session: format!("stdio-{}", std::process::id()),
    };
    let result = runtime.block_on(async move {
        if let super::client::Found::Running(info) = super::client::find(&dir).await {
            tracing::info!(
                event = "mcp_bridge",
                pid = info.pid,
                "a harbor runs for this config: bridging to it over admin.sock"
            );
            return super::mcp_bridge::run(&dir).await;
        }
        serve(config, dir, caller).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "harbormaster mcp failed");
            eprintln!("harbormaster mcp: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(
    config: crate::Config,
    dir: std::path::PathBuf,
    caller: Caller,
) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let runtime_dir = lifecycle::RuntimeDir::acquire(&dir)?;
    let listeners = lifecycle::bind(&config)?;
    let options = lifecycle::Options {
        subreaper: true,
        watch_config: true,
        guard: true,
        upgrading: false,
    };
    let h = lifecycle::launch(config, runtime_dir, listeners, options).await?;
    let hub = h.mcp().cloned().context("the harbor has no MCP gateway")?;
    let serving = tokio::spawn(h.clone().serve(std::future::pending()));
    let mut front = tokio::spawn(front_stdio::serve(
        hub,
        tokio::io::stdin(),
        tokio::io::stdout(),
        caller,
    ));
    let why = tokio::select! {
        _ = &mut front => "stdin closed",
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    tracing::info!(event = "mcp_stdio_stopping", reason = why);
    h.shutdown();
    let stopped = serving.await.context("the harbor task panicked")?;
    // Answers of calls that finished during the drain are written by now.
    if !front.is_finished() {
        front.abort();
    }
    stopped
}
