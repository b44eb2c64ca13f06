//! `harbormaster start`: run in the background, return once every required
//! app is ready; on failure exit 1 with the reason and the log tail.

use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use super::client::{self, Found};
use super::Cli;
use crate::lifecycle::runtime_dir;

/// How long `start` waits for readiness.
const START_TIMEOUT: Duration = Duration::from_secs(120);
/// Log file of a background harbormaster, in the runtime dir.
pub const LOG: &str = "harbormaster.log";

pub fn start(cli: &Cli) -> ExitCode {
    let Some(config) = super::run::load_or_report(&cli.config) else {
        return ExitCode::FAILURE;
    };
    let dir = super::run::runtime_dir(cli.runtime_dir.as_deref(), &config);
    client::block_on(async {
        if let Found::Running(info) = client::find(&dir).await {
            eprintln!(
                "harbormaster is already running (pid {}, admin {})",
                info.pid, info.admin
            );
            return ExitCode::FAILURE;
        }
        if let Err(e) = std::fs::create_dir_all(&dir) {
            eprintln!("cannot create the runtime directory {}: {e}", dir.display());
            return ExitCode::FAILURE;
        }
        let log_path = dir.join(LOG);
        let log = match std::fs::File::create(&log_path) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("cannot write {}: {e}", log_path.display());
                return ExitCode::FAILURE;
            }
        };
        let exe = std::env::current_exe().unwrap_or_else(|_| "harbormaster".into());
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("run")
            .arg("-c")
            .arg(&config.source)
            .arg("--runtime-dir")
            .arg(&dir)
            .args([
                "--log-format",
                match cli.log_format {
                    super::LogFormat::Json => "json",
                    super::LogFormat::Text => "text",
                },
            ])
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            )
            .stderr(Stdio::from(log));
        if let Some(level) = &cli.log_level {
            cmd.args(["--log-level", level]);
        }
        // Its own process group: the terminal's Ctrl-C and hangup do not reach it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("cannot start harbormaster: {e}");
                return ExitCode::FAILURE;
            }
        };
        let pid = child.id();
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                eprintln!("harbormaster exited during start ({status}); last log lines:");
                eprint!("{}", tail(&log_path, 20));
                return ExitCode::FAILURE;
            }
            if let Some(info) = runtime_dir::read_info(&dir).filter(|i| i.pid == pid) {
                if let Ok((200, _)) =
                    client::request(&info.admin, "GET", "/ready", None, Duration::from_secs(2))
                        .await
                {
                    println!(
                        "started harbormaster pid {pid}: gateway {} admin {} (log {})",
                        info.gateway.join(", "),
                        info.admin,
                        log_path.display()
                    );
                    return ExitCode::SUCCESS;
                }
            }
            if Instant::now() >= deadline {
                eprintln!("harbormaster pid {pid} is not ready after {}s; it keeps running; last log lines:", START_TIMEOUT.as_secs());
                eprint!("{}", tail(&log_path, 20));
                return ExitCode::FAILURE;
            }
            // A client waiting on another process's readiness: poll the files
            // and /ready, bounded by the deadline above.
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let mut out = lines[lines.len().saturating_sub(n)..].join("\n");
    out.push('\n');
    out
}
