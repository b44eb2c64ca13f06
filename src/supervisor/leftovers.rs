//! Crash leftovers: each running instance's pid, process group, instance id
//! and stop settings are recorded under `RUNTIME/pids/`, one file per start.
//! When harbormaster itself was killed (`kill -9`), its guard (`guard.rs`)
//! runs this sweep at once, and the next start runs it again before starting
//! anything, so no orphan keeps a port.
//!
//! The sweep stops every recorded instance in parallel, each with its own
//! `stop.signal` and `stop.timeout` (then SIGKILL): two instances that ignore
//! SIGTERM cost one timeout, not two. Only processes that carry the recorded
//! `HARBORMASTER_INSTANCE` value (or sit in the recorded group while one of
//! them does) are touched, so a recycled pid is never signalled.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use super::descendants::Target;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidRecord {
    pub app: String,
    pub index: u32,
    pub instance_id: String,
    pub pid: i32,
    pub pgid: i32,
    /// `stop.signal`, such as `SIGTERM`.
    #[serde(default = "default_signal")]
    pub signal: String,
    /// `stop.timeout` in milliseconds.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_signal() -> String {
    "SIGTERM".into()
}

fn default_timeout_ms() -> u64 {
    10_000
}

/// One file per start: a sweep that removes what it read never removes the
/// record of an instance started after it.
fn record_path(dir: &Path, instance_id: &str) -> PathBuf {
    dir.join(format!("{instance_id}.json"))
}

/// Writes the record atomically (temp file + rename).
pub fn record(dir: &Path, rec: &PidRecord) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = record_path(dir, &rec.instance_id);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(rec)?)?;
    std::fs::rename(tmp, path)
}

pub fn forget(dir: &Path, instance_id: &str) {
    let _ = std::fs::remove_file(record_path(dir, instance_id));
}

/// Whether the recorded instance still has a live process of its own: a
/// group member or any process carrying its `HARBORMASTER_INSTANCE`.
fn target_of(rec: &PidRecord) -> Option<Target<'_>> {
    let target = Target {
        pgid: rec.pgid,
        instance_id: &rec.instance_id,
    };
    let needle = format!("HARBORMASTER_INSTANCE={}", rec.instance_id);
    let ours = target.members().into_iter().any(|pid| {
        std::fs::read(format!("/proc/{pid}/environ"))
            .map(|env| env.split(|b| *b == 0).any(|v| v == needle.as_bytes()))
            .unwrap_or(false)
    });
    // A group whose members all lost the variable is left alone (pid reuse).
    ours.then_some(target)
}

/// Stops every surviving instance recorded in `dir` (in parallel, each with
/// its own signal and timeout) and removes the records it read. Returns one
/// line per instance that was stopped, for the log.
pub async fn clean(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut records = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            // A temp file of a write that never finished.
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let rec: Option<PidRecord> = std::fs::read(&path)
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok());
        match rec {
            Some(rec) => records.push((path, rec)),
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    let stops = records.iter().map(|(path, rec)| async move {
        let line = match target_of(rec) {
            None => None,
            Some(target) => {
                let members = target.members();
                let signal = Signal::from_str(&rec.signal).unwrap_or(Signal::SIGTERM);
                let survivors = target
                    .terminate(signal, Duration::from_millis(rec.timeout_ms))
                    .await;
                Some(format!(
                    "stopped leftover {} instance {} (process group {}, pids {members:?}, {} then SIGKILL after {} ms){}",
                    rec.app,
                    rec.instance_id,
                    rec.pgid,
                    rec.signal,
                    rec.timeout_ms,
                    if survivors.is_empty() {
                        String::new()
                    } else {
                        format!("; still alive after SIGKILL: {survivors:?}")
                    }
                ))
            }
        };
        let _ = std::fs::remove_file(path);
        line
    });
    futures_util::future::join_all(stops)
        .await
        .into_iter()
        .flatten()
        .collect()
}
