//! The command line: global flags, one module per verb.
//!
//! Exit codes (INTERFACES.md): 0 success, 1 invalid input or failed
//! operation, 2 usage error (clap), 3 no running instance. Verbs join this
//! enum in the issue that makes them work; none pretends.

mod audit;
mod check;
mod client;
mod completions;
mod control;
mod dashboard;
mod logging;
mod logs;
mod mcp;
mod mcp_bridge;
mod run;
mod start;
mod status;
mod status_mcp;
mod upgrade;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "harbormaster", version, about, propagate_version = true)]
pub struct Cli {
    /// The configuration file.
    #[arg(
        short = 'c',
        long = "config",
        global = true,
        default_value = "harbormaster.toml",
        env = "HARBORMASTER_CONFIG"
    )]
    pub config: PathBuf,

    /// Where runtime files live (runtime.json, the lock, admin.sock). Default:
    /// `[runtime] dir`, else a private per-user dir named after the config's
    /// path (`$XDG_RUNTIME_DIR/harbormaster/<stem>-<hash>/`).
    #[arg(long, global = true, env = "HARBORMASTER_RUNTIME_DIR")]
    pub runtime_dir: Option<PathBuf>,

    /// Log line format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter, such as `info` or `harbormaster=debug` (default: $RUST_LOG, else `info`).
    #[arg(long, global = true)]
    pub log_level: Option<String>,

    #[command(subcommand)]
    pub verb: Verb,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The shells `completions` writes scripts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, Subcommand)]
pub enum Verb {
    /// Run in the foreground: start every app, supervise it, stop all on SIGTERM/SIGINT.
    Run(run::RunArgs),
    /// Run in the background; return 0 once every required app is ready,
    /// 1 as soon as one has failed (with its reason and last lines).
    Start {
        /// How long to wait for every required app to be ready.
        #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Graceful stop; waits until the process is gone and its ports are free.
    Stop {
        /// How long to wait for the process to exit.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Every app (also waiting and failed ones), instances, state, pid, port,
    /// ready, breaker, in-flight, restarts; APP: one app in detail. Exit 1
    /// when a required app has failed.
    Status {
        /// Print the admin API's JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Show this app in detail.
        app: Option<String>,
    },
    /// Stop routing new requests to APP (503 + Retry-After); in-flight requests finish.
    Drain {
        /// The app to drain (a name from the config's `[apps]`).
        app: String,
    },
    /// Undo `drain`.
    Resume {
        /// The app to route to again.
        app: String,
    },
    /// Apply config changes live; exit 1 with the validation errors if invalid.
    Reload,
    /// Rolling restart: each new instance is ready before the old one drains and stops.
    Restart {
        /// The app to restart (a managed app: external ones have no process).
        app: String,
        /// How long to wait for the restart to finish (the harbor gives up
        /// on replacements that are not ready by then).
        #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Recent output of APP's instances.
    Logs {
        /// The app whose output to show.
        app: String,
        /// Keep printing new output.
        #[arg(short = 'f', long)]
        follow: bool,
        /// How many lines to show first.
        #[arg(short = 'n', long, default_value_t = 50)]
        lines: usize,
    },
    /// MCP over stdio for an AI client (stdout carries only MCP; logs go to
    /// stderr). Runs the harbor for the config until stdin closes.
    Mcp,
    /// Validate the configuration; exit 0 if valid, 1 with every error (file:line:col) if not.
    Check,
    /// Read the audit log (MCP calls, or admin actions with --admin) from the
    /// database the config names, whether harbormaster runs or not.
    Audit(audit::AuditArgs),
    /// Print a one-time login URL for the web dashboard (valid 60 s, single use).
    Dashboard {
        /// Open it in the desktop's browser (xdg-open) instead of only printing it.
        #[arg(long)]
        open: bool,
    },
    /// Print a shell completion script, e.g. `harbormaster completions bash > /etc/bash_completion.d/harbormaster`.
    Completions {
        /// The shell to complete for.
        shell: CompletionShell,
    },
    /// Replace the running harbormaster with a new binary without dropping a
    /// request: the new process takes over the sockets, becomes ready, then
    /// the old one drains and exits. Exit 1 (the old one keeps serving) if
    /// the new binary does not become ready.
    Upgrade(upgrade::UpgradeArgs),
    /// Internal: the guard process `run` starts (see `supervisor::guard`).
    #[command(name = "__guard", hide = true)]
    Guard {
        #[arg(long)]
        pids: PathBuf,
    },
}

/// Parses the command line and runs the verb.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Verb::Guard { pids } = &cli.verb {
        return ExitCode::from(crate::supervisor::guard::run(pids));
    }
    if let Verb::Completions { shell } = cli.verb {
        return completions::completions(match shell {
            CompletionShell::Bash => clap_complete::Shell::Bash,
            CompletionShell::Zsh => clap_complete::Shell::Zsh,
            CompletionShell::Fish => clap_complete::Shell::Fish,
        });
    }
    // In the background, `run` logs to its file once it holds the lock.
    // `mcp` logs to stderr and its file once it has read the config.
    let background =
        matches!(&cli.verb, Verb::Run(args) if args.background) || matches!(&cli.verb, Verb::Mcp);
    if !background {
        if let Err(e) = logging::init(
            cli.log_format,
            cli.log_level.as_deref(),
            logging::Sink::Stderr,
        ) {
            eprintln!("harbormaster: {e:#}");
            return ExitCode::from(2);
        }
    }
    match &cli.verb {
        Verb::Guard { .. } | Verb::Completions { .. } => ExitCode::SUCCESS,
        Verb::Dashboard { open } => dashboard::dashboard(&cli, *open),
        Verb::Run(args) => run::run(&cli, args),
        Verb::Start { timeout } => start::start(&cli, *timeout),
        Verb::Stop { timeout } => control::stop(&cli, *timeout),
        Verb::Status { json, app } => status::status(&cli, *json, app.as_deref()),
        Verb::Drain { app } => control::app_switch(&cli, app, "drain"),
        Verb::Resume { app } => control::app_switch(&cli, app, "resume"),
        Verb::Reload => control::reload(&cli),
        Verb::Restart { app, timeout } => control::restart(&cli, app, *timeout),
        Verb::Logs { app, follow, lines } => logs::logs(&cli, app, *follow, *lines),
        Verb::Check => check::run(&cli.config),
        Verb::Audit(args) => audit::audit(&cli, args),
        Verb::Mcp => mcp::mcp(&cli),
        Verb::Upgrade(args) => upgrade::upgrade(&cli, args),
    }
}

/// The tokio runtime a verb runs on (`multi`: one worker per core), or `None`
/// after saying why it could not start.
fn async_runtime(multi: bool) -> Option<tokio::runtime::Runtime> {
    let mut builder = if multi {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder
        .enable_all()
        .build()
        .inspect_err(|e| eprintln!("harbormaster: cannot start the async runtime: {e}"))
        .ok()
}
