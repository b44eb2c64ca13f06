//! `harbormaster upgrade [--binary PATH]`: asks the running harbormaster
//! (over admin.sock) to hand over to a new binary; see `lifecycle::upgrade`
//! for what happens. Exit 0 once the new process is ready (the old one is
//! draining), 1 with the reason when it is not (the old one keeps serving),
//! 3 when nothing runs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::client;
use super::control::running;
use super::Cli;
use crate::admin::api::{UpgradeDone, UpgradeRequest};

#[derive(Debug, clap::Args)]
pub struct UpgradeArgs {
    /// The new binary (default: this one, e.g. the version just installed).
    #[arg(long)]
    pub binary: Option<PathBuf>,
    /// How long the new process may take until every required app is ready.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

pub fn upgrade(cli: &Cli, args: &UpgradeArgs) -> ExitCode {
    let binary = match args.binary.clone().map_or_else(std::env::current_exe, Ok) {
        Ok(b) => std::path::absolute(&b).unwrap_or(b),
        Err(e) => {
            eprintln!("upgrade: cannot tell which binary this is ({e}); pass --binary PATH");
            return ExitCode::FAILURE;
        }
    };
    if !binary.is_file() {
        eprintln!("upgrade: {} is not a file", binary.display());
        return ExitCode::FAILURE;
    }
    client::block_on(async {
        let (dir, info) = match running(cli).await {
            Ok(found) => found,
            Err(code) => return code,
        };
        let body = serde_json::to_string(&UpgradeRequest {
            binary: binary.display().to_string(),
            timeout_ms: Some(args.timeout.as_millis() as u64),
        })
        .unwrap_or_default();
        // The new process gets `timeout` to become ready; allow for the rest.
        let wait = args.timeout + Duration::from_secs(30);
        let (code, answer) =
            match client::request_with(&dir, "POST", "/v1/upgrade", body, wait).await {
                Ok(answer) => answer,
                Err(e) => {
                    eprintln!("upgrade: {e}");
                    return ExitCode::FAILURE;
                }
            };
        match (code, serde_json::from_str::<UpgradeDone>(&answer)) {
            (200, Ok(done)) => {
                println!(
                    "upgraded: pid {} → {} ({}); the old process is draining",
                    info.pid, done.pid, done.binary
                );
                ExitCode::SUCCESS
            }
            _ => {
                let why = serde_json::from_str::<serde_json::Value>(&answer)
                    .ok()
                    .and_then(|v| v["error"].as_str().map(String::from))
                    .unwrap_or(answer);
                eprintln!("upgrade failed: {why}");
                ExitCode::FAILURE
            }
        }
    })
}
