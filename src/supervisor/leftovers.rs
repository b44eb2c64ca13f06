//! Crash leftovers: each running instance's pid and process group are
//! recorded under `RUNTIME/pids/`. After harbormaster itself was killed
//! (`kill -9`), the next start finds surviving members of those groups,
//! checks they are ours (`HARBORMASTER_INSTANCE` in `/proc/PID/environ`) and
//! stops them before starting anything, so no orphan keeps a port.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

use super::process_group;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidRecord {
    pub app: String,
    pub index: u32,
    pub instance_id: String,
    pub pid: i32,
    pub pgid: i32,
}

fn record_path(dir: &Path, app: &str, index: u32) -> PathBuf {
    dir.join(format!("{app}.{index}.json"))
}

/// Writes the record atomically (temp file + rename).
pub fn record(dir: &Path, rec: &PidRecord) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let path = record_path(dir, &rec.app, rec.index);
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(rec)?)?;
    std::fs::rename(tmp, path)
}

pub fn forget(dir: &Path, app: &str, index: u32) {
    let _ = std::fs::remove_file(record_path(dir, app, index));
}

/// Whether a live member of `pgid` carries `HARBORMASTER_INSTANCE=instance_id`.
pub fn group_is_ours(pgid: i32, instance_id: &str) -> bool {
    let needle = format!("HARBORMASTER_INSTANCE={instance_id}");
    process_group::members(pgid).into_iter().any(|pid| {
        std::fs::read(format!("/proc/{pid}/environ"))
            .map(|env| env.split(|b| *b == 0).any(|var| var == needle.as_bytes()))
            .unwrap_or(false)
    })
}

/// Stops every surviving group recorded in `dir` and removes the records.
/// Returns one line per group that was stopped, for the log.
pub async fn clean(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut report = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            let _ = std::fs::remove_file(&path);
            continue;
        }
        let rec: Option<PidRecord> = std::fs::read(&path)
            .ok()
            .and_then(|raw| serde_json::from_slice(&raw).ok());
        if let Some(rec) = rec {
            if group_is_ours(rec.pgid, &rec.instance_id) {
                let members = process_group::members(rec.pgid);
                let survivors =
                    process_group::terminate(rec.pgid, Signal::SIGTERM, Duration::from_secs(5))
                        .await;
                report.push(format!(
                    "stopped leftover {} instance {} (process group {}, pids {:?}){}",
                    rec.app,
                    rec.instance_id,
                    rec.pgid,
                    members,
                    if survivors.is_empty() {
                        String::new()
                    } else {
                        format!("; still alive after SIGKILL: {survivors:?}")
                    }
                ));
            }
        }
        let _ = std::fs::remove_file(&path);
    }
    report
}
