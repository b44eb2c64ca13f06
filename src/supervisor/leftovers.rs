//! Crash leftovers: each running instance's pid, process group, instance id
//! and stop settings are recorded under `RUNTIME/pids/RUN/`, one folder per
//! harbormaster run and one file per start. A run's guard sweeps only its
//! own folder, so it never touches the instances of a harbormaster started
//! after it.
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

/// The records in `dir` and in its subfolders (one per run), with their
/// paths; unreadable ones and temp files of unfinished writes are removed.
fn records(dir: &Path, out: &mut Vec<(PathBuf, PidRecord)>, dirs: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            records(&path, out, dirs);
            dirs.push(path);
            continue;
        }
        let rec: Option<PidRecord> = (path.extension().is_some_and(|e| e == "json"))
            .then(|| std::fs::read(&path).ok())
            .flatten()
            .and_then(|raw| serde_json::from_slice(&raw).ok());
        match rec {
            Some(rec) => out.push((path, rec)),
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// Stops every surviving instance recorded in `dir` or its subfolders (in
/// parallel, each with its own signal and timeout) and removes the records
/// it read. Returns one line per instance that was stopped, for the log.
pub async fn clean(dir: &Path) -> Vec<String> {
    let (mut records, mut dirs) = (Vec::new(), Vec::new());
    self::records(dir, &mut records, &mut dirs);
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
    let report = futures_util::future::join_all(stops)
        .await
        .into_iter()
        .flatten()
        .collect();
    // Run folders go once empty (one that a new run writes to is not).
    for dir in dirs {
        let _ = std::fs::remove_dir(dir);
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str) -> PidRecord {
        PidRecord {
            app: "web".into(),
            index: 0,
            instance_id: id.into(),
            // No such group: nothing to stop, the record just goes.
            pid: i32::MAX - 1,
            pgid: i32::MAX - 1,
            signal: default_signal(),
            timeout_ms: 10,
        }
    }

    #[tokio::test]
    async fn a_run_sweeps_its_own_folder_and_the_next_start_sweeps_them_all() {
        let pids = tempfile::tempdir().unwrap();
        let (old, new) = (pids.path().join("old"), pids.path().join("new"));
        record(&old, &rec("web-0-old-1")).unwrap();
        record(&new, &rec("web-0-new-1")).unwrap();
        clean(&old).await;
        assert!(!old.join("web-0-old-1.json").exists());
        assert!(
            new.join("web-0-new-1.json").exists(),
            "another run's record stays"
        );
        clean(pids.path()).await;
        assert!(!new.exists(), "emptied run folders are removed");
    }
}
