//! `harbormaster run`: supervise every app in the foreground until SIGTERM or
//! SIGINT, then stop them in reverse dependency order and exit 0. A second
//! signal during the stop exits at once (children still get SIGTERM through
//! their parent-death signal).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use tokio::signal::unix::{signal, SignalKind};

use super::Cli;
use crate::config::{self, Config, LoadError};
use crate::lifecycle;
use crate::supervisor::output::RotatingFile;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Become a child subreaper: orphaned descendants of apps are re-parented
    /// to harbormaster, stopped with their instance and reaped. This is the
    /// default; the flag is kept for compatibility.
    #[arg(long, conflicts_with = "no_subreaper")]
    pub subreaper: bool,
    /// Do not become a child subreaper (escaped descendants are still found
    /// by `HARBORMASTER_INSTANCE` and stopped, but init reaps them).
    #[arg(long)]
    pub no_subreaper: bool,
    /// Internal (used by `start`): log to `STATE_DIR/logs/harbormaster.log`
    /// once the runtime dir's lock is held, instead of stderr.
    #[arg(long, hide = true)]
    pub background: bool,
    /// Do not reload when the config file changes (SIGHUP and `reload` still work).
    #[arg(long)]
    pub no_watch: bool,
    /// Internal (used by `upgrade`): take over the sockets and the runtime
    /// dir handed over by the harbormaster being upgraded.
    #[arg(long, hide = true)]
    pub upgrade: bool,
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

/// The runtime dir: `--runtime-dir`, else `[runtime] dir`, else the default.
pub fn runtime_dir(flag: Option<&Path>, config: &Config) -> PathBuf {
    lifecycle::runtime_dir::locate(flag, config.runtime.dir.as_deref(), &config.source)
}

/// harbormaster's own log file under `start`.
pub fn log_path(config: &Config) -> PathBuf {
    config
        .runtime
        .state_dir
        .join("logs")
        .join(super::start::LOG)
}

pub fn run(cli: &Cli, args: &RunArgs) -> ExitCode {
    let Some(config) = load_or_report(&cli.config) else {
        return ExitCode::FAILURE;
    };
    // Before any thread exists: these change the environment (the apps
    // must not inherit systemd's variables).
    crate::systemd::init_from_env();
    let inherited = match lifecycle::listeners::take_from_env() {
        Ok(sockets) => sockets,
        Err(e) => {
            eprintln!("harbormaster: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let Some(runtime) = super::async_runtime(true) else {
        return ExitCode::FAILURE;
    };
    let dir = runtime_dir(cli.runtime_dir.as_deref(), &config);
    match runtime.block_on(serve(cli, config, dir, args, inherited)) {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "harbormaster failed");
            if args.background {
                // Logging may not be set up yet; `start` shows our stderr.
                eprintln!("harbormaster: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Under `start`: logs go to the rotated file in the state dir, and stderr
/// (panics, the guard's lines) to the same file. Called with the lock held,
/// so a second `start` never touches a running instance's log.
fn log_to_file(cli: &Cli, config: &Config) -> anyhow::Result<()> {
    use anyhow::Context;
    let path = log_path(config);
    if let Some(logs) = path.parent() {
        std::fs::create_dir_all(logs)
            .with_context(|| format!("cannot create {}", logs.display()))?;
    }
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    nix::unistd::dup2_stderr(&stderr).context("cannot redirect stderr to the log")?;
    let file = std::sync::Arc::new(RotatingFile::new(path));
    super::logging::init(
        cli.log_format,
        cli.log_level.as_deref(),
        super::logging::Sink::File(file),
    )
}

async fn serve(
    cli: &Cli,
    config: Config,
    dir: PathBuf,
    args: &RunArgs,
    handed: lifecycle::listeners::Handed,
) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    // Phases: the config is valid; own the runtime dir (refused while another
    // harbormaster holds it); only then touch files (the log); bind before
    // anything starts, so a port conflict fails fast and leaves nothing behind.
    let runtime_dir = match handed.lock {
        Some(lock) if args.upgrade => lifecycle::RuntimeDir::adopt(&dir, lock)?,
        _ => lifecycle::RuntimeDir::acquire(&dir)?,
    };
    if args.background {
        log_to_file(cli, &config)?;
    }
    let mut listeners = lifecycle::listeners::bind_with(&config, handed.sockets)?;
    listeners.admin_socket = handed.admin_socket;
    let options = lifecycle::Options {
        subreaper: !args.no_subreaper,
        watch_config: !args.no_watch,
        guard: true,
        upgrading: args.upgrade,
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
