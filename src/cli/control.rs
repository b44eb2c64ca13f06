//! `stop`, `drain`, `resume`, `restart` and `reload`: verbs that talk to the running
//! harbormaster found through the runtime directory.

use std::process::ExitCode;
use std::time::Duration;

use tokio::time::Instant;

use super::client::{self, Found, NOT_RUNNING};
use super::Cli;
use crate::admin::api::{Health, RuntimeInfo};
use crate::lifecycle::runtime_dir;
use crate::supervisor::process_group;

pub(super) const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);

/// The runtime dir for the command line's config; when the config does not
/// load, says so (and that the instance running for it is still found).
fn runtime_dir(cli: &Cli) -> (std::path::PathBuf, Option<String>) {
    let dirs = client::dirs(cli);
    (dirs.runtime, dirs.config_error)
}

/// "config has errors; harbormaster pid N is running for it" when it applies.
fn note_config(cli: &Cli, config_error: &Option<String>, info: &RuntimeInfo) {
    if let Some(why) = config_error {
        eprintln!(
            "{}: config has errors ({why}; see `harbormaster check`); harbormaster pid {} is running for it",
            cli.config.display(),
            info.pid
        );
    }
}

/// The running harbormaster, or the exit code that says why there is none.
pub(super) async fn running(cli: &Cli) -> Result<(std::path::PathBuf, RuntimeInfo), ExitCode> {
    let (dir, config_error) = runtime_dir(cli);
    let dir = &dir;
    match client::find(dir).await {
        Found::Running(info) => {
            note_config(cli, &config_error, &info);
            Ok((dir.clone(), info))
        }
        Found::Nothing => Err(not_running(dir)),
        Found::Stale { why, .. } => {
            eprintln!(
                "stale: harbormaster is not running ({why}); runtime dir {}",
                dir.display()
            );
            Err(ExitCode::from(NOT_RUNNING))
        }
    }
}

/// POST to the admin API over admin.sock. An unreachable API is printed
/// (prefixed with `what`) and becomes exit 1.
async fn post_admin(
    dir: &std::path::Path,
    path: &str,
    timeout: Duration,
    what: &str,
) -> Result<(u16, String), ExitCode> {
    client::request(dir, "POST", path, timeout)
        .await
        .map_err(|e| {
            eprintln!("{what}: {e}");
            ExitCode::FAILURE
        })
}

fn not_running(dir: &std::path::Path) -> ExitCode {
    eprintln!("no running harbormaster (runtime dir {})", dir.display());
    ExitCode::from(NOT_RUNNING)
}

/// `harbormaster stop [--timeout DUR]`.
pub fn stop(cli: &Cli, timeout: Duration) -> ExitCode {
    let (dir, config_error) = runtime_dir(cli);
    client::block_on(async {
        let info = match client::find(&dir).await {
            Found::Nothing => return not_running(&dir),
            Found::Stale { info, why } => {
                if !runtime_dir::is_locked(&dir) {
                    let _ = std::fs::remove_file(dir.join(runtime_dir::RUNTIME_JSON));
                    eprintln!("stale runtime dir {}: {why}; cleaned up", dir.display());
                    return ExitCode::from(NOT_RUNNING);
                }
                // Locked but not answering: the process exists; ask it with a signal.
                eprintln!(
                    "harbormaster pid {} does not answer its admin API ({why}); sending SIGTERM",
                    info.pid
                );
                signal_term(&info);
                info
            }
            Found::Running(info) => {
                note_config(cli, &config_error, &info);
                match client::request(&dir, "POST", "/v1/shutdown", ADMIN_TIMEOUT).await {
                    Ok((202, _)) => {}
                    other => {
                        eprintln!(
                            "admin API refused the shutdown ({other:?}); sending SIGTERM to pid {}",
                            info.pid
                        );
                        signal_term(&info);
                    }
                }
                info
            }
        };
        let deadline = Instant::now() + timeout;
        if !process_group::wait_exit(info.pid as i32, deadline).await {
            eprintln!(
                "harbormaster pid {} is still running after {}",
                info.pid,
                humantime::format_duration(timeout)
            );
            return ExitCode::FAILURE;
        }
        if runtime_dir::read_info(&dir).is_some_and(|i| i.pid == info.pid) {
            // It died without cleaning up (it was killed): do it for it.
            let _ = std::fs::remove_file(dir.join(runtime_dir::RUNTIME_JSON));
        }
        println!("stopped harbormaster pid {}", info.pid);
        ExitCode::SUCCESS
    })
}

fn signal_term(info: &RuntimeInfo) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(info.pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
}

/// An app name checked before it becomes part of a request path.
fn app_name(app: &str) -> Result<crate::config::AppName, ExitCode> {
    crate::config::AppName::new(app).map_err(|why| {
        eprintln!("invalid app name `{app}`: {why}");
        ExitCode::FAILURE
    })
}

/// `harbormaster drain APP` and `harbormaster resume APP`.
pub fn app_switch(cli: &Cli, app: &str, action: &str) -> ExitCode {
    if let Err(code) = app_name(app) {
        return code;
    }
    client::block_on(async {
        let (dir, _) = match running(cli).await {
            Ok(found) => found,
            Err(code) => return code,
        };
        let what = format!("{action} {app}");
        let path = format!("/v1/apps/{app}/{action}");
        match post_admin(&dir, &path, ADMIN_TIMEOUT, &what).await {
            Err(code) => code,
            Ok((202, _)) => {
                println!(
                    "{app}: {}",
                    if action == "drain" {
                        "draining (new requests get 503 + Retry-After)"
                    } else {
                        "resumed"
                    }
                );
                ExitCode::SUCCESS
            }
            Ok((code, body)) => {
                eprintln!("{what}: {code} {body}");
                ExitCode::FAILURE
            }
        }
    })
}

/// `harbormaster restart APP`: rolling restart; waits until it is done.
pub fn restart(cli: &Cli, app: &str, timeout: Duration) -> ExitCode {
    if let Err(code) = app_name(app) {
        return code;
    }
    client::block_on(async {
        let (dir, _) = match running(cli).await {
            Ok(found) => found,
            Err(code) => return code,
        };
        // The harbor gives up on replacements that are not ready by then.
        let path = format!(
            "/v1/apps/{app}/restart?timeout={}",
            humantime::format_duration(timeout)
                .to_string()
                .replace(' ', "")
        );
        match post_admin(&dir, &path, ADMIN_TIMEOUT, &format!("restart {app}")).await {
            Err(code) => return code,
            Ok((202, _)) => {}
            Ok((code, body)) => {
                eprintln!("restart {app}: {code} {body}");
                return ExitCode::FAILURE;
            }
        }
        // The harbor gives up on the replacements at `timeout`; stopping
        // them (or draining the old ones) takes a little longer.
        let deadline = Instant::now() + timeout + Duration::from_secs(30);
        loop {
            // A client following another process's progress: poll the
            // status, bounded by the deadline.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let health = match client::request(&dir, "GET", "/v1/status", ADMIN_TIMEOUT).await {
                Ok((200, body)) => serde_json::from_str::<Health>(&body).ok(),
                _ => None,
            };
            if let Some(a) = health.as_ref().and_then(|h| h.apps.get(app)) {
                if !a.restarting {
                    return match &a.restart_error {
                        Some(e) => {
                            eprintln!("restart {app} failed: {e}");
                            ExitCode::FAILURE
                        }
                        None => {
                            let ids: Vec<&str> =
                                a.instances.iter().map(|i| i.id.as_str()).collect();
                            println!("{app}: restarted ({})", ids.join(", "));
                            ExitCode::SUCCESS
                        }
                    };
                }
            }
            if Instant::now() >= deadline {
                eprintln!(
                    "restart {app}: not finished after {}",
                    humantime::format_duration(timeout)
                );
                return ExitCode::FAILURE;
            }
        }
    })
}

/// `harbormaster reload`: apply config changes live; exit 1 with the
/// validation errors (as `check` prints them) if the file is invalid.
pub fn reload(cli: &Cli) -> ExitCode {
    client::block_on(async {
        let (dir, _) = match running(cli).await {
            Ok(found) => found,
            Err(code) => return code,
        };
        // A reload waits for new instances to become ready: allow minutes.
        let (code, body) =
            match post_admin(&dir, "/v1/reload", Duration::from_secs(600), "reload").await {
                Ok(answer) => answer,
                Err(code) => return code,
            };
        let Ok(result) = serde_json::from_str::<crate::admin::api::ReloadResult>(&body) else {
            eprintln!("reload: {code} {body}");
            return ExitCode::FAILURE;
        };
        match (code, result.status.as_str()) {
            (200, "applied") => {
                let plan = result.plan.unwrap_or_default();
                let list = |k: &str| -> Vec<String> {
                    plan[k]
                        .as_array()
                        .map(|a| {
                            a.iter()
                                .filter_map(|v| v.as_str().map(String::from))
                                .collect()
                        })
                        .unwrap_or_default()
                };
                let mut parts = Vec::new();
                for (key, what) in [
                    ("added", "added"),
                    ("removed", "removed"),
                    ("replaced", "replaced"),
                    ("in_place", "changed in place"),
                ] {
                    let apps = list(key);
                    if !apps.is_empty() {
                        parts.push(format!("{what}: {}", apps.join(", ")));
                    }
                }
                for key in [
                    "listeners_added",
                    "listeners_removed",
                    "tls_listeners_added",
                    "tls_listeners_removed",
                ] {
                    let l = list(key);
                    if !l.is_empty() {
                        parts.push(format!("{}: {}", key.replace('_', " "), l.join(", ")));
                    }
                }
                println!(
                    "reloaded: {}",
                    if parts.is_empty() {
                        "nothing changed".into()
                    } else {
                        parts.join("; ")
                    }
                );
                for what in list("not_applied") {
                    eprintln!("not applied (restart harbormaster to apply): {what}");
                }
                if result.failed.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    for f in &result.failed {
                        eprintln!("failed: {f}");
                    }
                    ExitCode::FAILURE
                }
            }
            _ => {
                for e in &result.errors {
                    eprintln!("{e}");
                }
                if result.status == "invalid" {
                    eprintln!(
                        "{}: {} error(s); the running config was kept",
                        cli.config.display(),
                        result.errors.len()
                    );
                }
                ExitCode::FAILURE
            }
        }
    })
}
