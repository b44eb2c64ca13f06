//! `harbormaster run`: supervise every app in the foreground until SIGTERM or
//! SIGINT, then stop them in reverse dependency order and exit 0. A second
//! signal during the stop exits at once (children still get SIGTERM through
//! their parent-death signal).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tokio::signal::unix::{signal, SignalKind};

use crate::config::{self, Config, LoadError};
use crate::lifecycle;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Become a child subreaper: orphaned descendants of apps are re-parented
    /// to harbormaster and reaped (automatic when running as PID 1).
    #[arg(long)]
    pub subreaper: bool,
    /// Do not reload when the config file changes (SIGHUP and `reload` still work).
    #[arg(long)]
    pub no_watch: bool,
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
    // Unset `[runtime] dir`: still `.harbormaster/` beside the config, for now.
    flag.map_or_else(
        || {
            config
                .runtime
                .dir
                .clone()
                .unwrap_or_else(|| config.runtime.state_dir.clone())
        },
        Path::to_path_buf,
    )
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
    // Phases: the config is valid; own the runtime dir (refused while another
    // harbormaster holds it); bind before anything starts, so a port conflict
    // fails fast and leaves nothing behind.
    let runtime_dir = lifecycle::RuntimeDir::acquire(&dir)?;
    let listeners = lifecycle::bind(&config)?;
    let options = lifecycle::Options {
        subreaper: args.subreaper,
        watch_config: !args.no_watch,
    };
    let (first_signal_tx, first_signal) = tokio::sync::oneshot::channel::<&'static str>();
    let signals = async move {
        let name = tokio::select! {
            _ = sigterm.recv() => "SIGTERM",
            _ = sigint.recv() => "SIGINT",
        };
        let _ = first_signal_tx.send(name);
        // A second signal forces the stop.
        tokio::select! {
            _ = sigterm.recv() => {}
            _ = sigint.recv() => {}
        }
    };
    let shutdown = async move {
        if let Ok(name) = first_signal.await {
            tracing::info!(signal = name, "signal received");
        }
    };
    tokio::select! {
        result = lifecycle::run(config, runtime_dir, listeners, options, shutdown) => result.map(|()| ExitCode::SUCCESS),
        _ = signals => {
            tracing::warn!(event = "shutdown_forced", "second signal: exiting now");
            Ok(ExitCode::FAILURE)
        }
    }
}
