//! `harbormaster start`: run in the background, return once every required
//! app is ready; exit 1 as soon as a required app has failed (with its
//! reason and last lines; the background harbormaster is stopped, so it
//! keeps no port), or with the log tail when it is not ready by `--timeout`.

use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use super::client::{self, Found};
use super::Cli;
use crate::admin::api::Health;
use crate::lifecycle::runtime_dir;

/// Log file of a background harbormaster, in `STATE_DIR/logs/`.
pub const LOG: &str = "harbormaster.log";

pub fn start(cli: &Cli, timeout: Duration) -> ExitCode {
    let Some(config) = super::run::load_or_report(&cli.config) else {
        return ExitCode::FAILURE;
    };
    let dir = super::run::runtime_dir(cli.runtime_dir.as_deref(), &config);
    let log_path = super::run::log_path(&config);
    client::block_on(async {
        if let Found::Running(info) = client::find(&dir).await {
            eprintln!(
                "harbormaster is already running (pid {}, runtime dir {})",
                info.pid,
                dir.display()
            );
            return ExitCode::FAILURE;
        }
        // Nothing is created or truncated here: the child owns the runtime
        // dir's lock before it touches any file (the log included).
        let exe = std::env::current_exe().unwrap_or_else(|_| "harbormaster".into());
        let mut cmd = std::process::Command::new(exe);
        cmd.arg("run")
            .arg("--background")
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
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
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
        // What it says before its log file is set up (e.g. the lock is taken).
        let early = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        if let Some(stderr) = child.stderr.take() {
            let early = early.clone();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                {
                    let mut all = early.lock().unwrap_or_else(|p| p.into_inner());
                    all.push_str(&line);
                    all.push('\n');
                }
            });
        }
        let pid = child.id();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                eprintln!("harbormaster exited during start ({status}):");
                eprint!("{}", early.lock().unwrap_or_else(|p| p.into_inner()));
                if log_path.exists() {
                    eprintln!("last lines of {}:", log_path.display());
                    eprint!("{}", tail(&log_path, 20));
                }
                return ExitCode::FAILURE;
            }
            if runtime_dir::read_info(&dir).is_some_and(|i| i.pid == pid) {
                if let Some(code) = failed_app(&dir, pid).await {
                    return code;
                }
                if let Ok((200, _)) =
                    client::request(&dir, "GET", "/ready", Duration::from_secs(2)).await
                {
                    let info = runtime_dir::read_info(&dir);
                    println!(
                        "started harbormaster pid {pid}: gateway {} admin {} (log {})",
                        info.as_ref()
                            .map_or(String::new(), |i| i.gateway.join(", ")),
                        info.as_ref().map_or(String::new(), |i| i.admin.clone()),
                        log_path.display()
                    );
                    return ExitCode::SUCCESS;
                }
            }
            if Instant::now() >= deadline {
                eprintln!("harbormaster pid {pid} is not ready after {}; it keeps running; last log lines:", humantime::format_duration(timeout));
                eprint!("{}", tail(&log_path, 20));
                return ExitCode::FAILURE;
            }
            // A client waiting on another process's readiness: poll the files
            // and /ready, bounded by the deadline above.
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
}

/// If a required app has failed: says which, why and its last lines, stops
/// the background harbormaster and returns exit 1.
async fn failed_app(dir: &Path, pid: u32) -> Option<ExitCode> {
    let Ok((200, body)) = client::request(dir, "GET", "/v1/status", Duration::from_secs(2)).await
    else {
        return None;
    };
    let health: Health = serde_json::from_str(&body).ok()?;
    let (name, app) = health
        .apps
        .iter()
        .find(|(_, a)| a.required && super::status::failed(a))?;
    eprintln!("required app {name} failed:");
    for i in &app.instances {
        eprintln!("  {}: {}", i.id, i.detail.as_deref().unwrap_or(&i.state));
    }
    if let Some(death) = app.instances.iter().find_map(|i| i.last_death.as_ref()) {
        eprintln!("last lines of {name}:");
        for line in super::status::once(&death.last_lines) {
            eprintln!("  {line}");
        }
    }
    eprintln!("stopping harbormaster pid {pid}");
    let _ = client::request(dir, "POST", "/v1/shutdown", Duration::from_secs(2)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    if !crate::supervisor::process_group::wait_exit(pid as i32, deadline).await {
        eprintln!("harbormaster pid {pid} is still running");
    }
    Some(ExitCode::FAILURE)
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let mut out = crate::supervisor::output::tail_file(path, n).join("\n");
    out.push('\n');
    out
}
