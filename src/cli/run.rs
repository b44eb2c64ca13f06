//! `harbormaster run`: supervise every app in the foreground until SIGTERM or
//! SIGINT, then stop them in reverse dependency order and exit 0. A second
//! signal during the stop exits at once (children still get SIGTERM through
//! their parent-death signal).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, LoadError};
use crate::supervisor::{reaper, Supervisor};

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Become a child subreaper: orphaned descendants of apps are re-parented
    /// to harbormaster and reaped (automatic when running as PID 1).
    #[arg(long)]
    pub subreaper: bool,
}

/// Loads the config or prints every error the way `check` does.
pub fn load_or_report(path: &Path) -> Option<Config> {
    match config::load(path) {
        Ok(config) => Some(config),
        Err(LoadError::Invalid(errors)) => {
            eprintln!("{errors}");
            eprintln!(
                "{}: {} error(s); nothing was started",
                path.display(),
                errors.len()
            );
            None
        }
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}

/// `--runtime-dir`, else `[runtime] dir` (already resolved against the config file).
pub fn runtime_dir(flag: Option<&Path>, config: &Config) -> PathBuf {
    flag.map_or_else(|| config.runtime.dir.clone(), Path::to_path_buf)
}

pub fn run(config_path: &Path, runtime_flag: Option<&Path>, args: &RunArgs) -> ExitCode {
    let Some(config) = load_or_report(config_path) else {
        return ExitCode::FAILURE;
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("harbormaster: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dir = runtime_dir(runtime_flag, &config);
    match runtime.block_on(serve(config, dir, args)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "harbormaster failed");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config, dir: PathBuf, args: &RunArgs) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let supervisor = Supervisor::new(&dir)
        .with_context(|| format!("cannot create the runtime directory {}", dir.display()))?;

    if args.subreaper {
        reaper::become_subreaper().context("cannot become a child subreaper")?;
    }
    let stop_reaper = CancellationToken::new();
    if reaper::adopts_orphans() {
        reaper::spawn(supervisor.direct_children(), stop_reaper.clone())
            .context("cannot watch SIGCHLD")?;
        tracing::info!(pid = std::process::id(), "reaping adopted orphans");
    }
    for line in supervisor.clean_leftovers().await {
        tracing::warn!(event = "leftover_stopped", "{line}");
    }

    tracing::info!(
        event = "starting",
        pid = std::process::id(),
        config = %config.source.display(),
        runtime_dir = %dir.display(),
        apps = config.apps.len(),
    );
    let signal_name = tokio::select! {
        _ = supervisor.start_all(&config) => {
            tracing::info!(event = "started", "every app was started");
            tokio::select! {
                _ = sigterm.recv() => "SIGTERM",
                _ = sigint.recv() => "SIGINT",
            }
        }
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    tracing::info!(event = "shutdown_started", signal = signal_name);
    let started = tokio::time::Instant::now();
    tokio::select! {
        _ = supervisor.stop_all(&config) => {}
        _ = sigterm.recv() => return Ok(forced()),
        _ = sigint.recv() => return Ok(forced()),
    }
    stop_reaper.cancel();
    tracing::info!(
        event = "shutdown_complete",
        duration_ms = started.elapsed().as_millis() as u64
    );
    Ok(ExitCode::SUCCESS)
}

fn forced() -> ExitCode {
    tracing::warn!(event = "shutdown_forced", "second signal: exiting now");
    ExitCode::FAILURE
}
