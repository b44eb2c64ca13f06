//! Reaping adopted orphans. When harbormaster is PID 1 (a container's
//! entrypoint) or a child subreaper, orphaned descendants are re-parented to
//! it; unreaped, they pile up as zombies.
//!
//! tokio reaps our *direct* children itself (`Child::wait`), so a blanket
//! `waitpid(-1)` would steal their exit statuses. Instead, on every SIGCHLD we
//! reap exactly the zombie children that are not ours.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use super::process_group;

/// Pids of the processes harbormaster spawned itself (tokio reaps those).
#[derive(Debug, Default)]
pub struct DirectChildren(Mutex<HashSet<i32>>);

impl DirectChildren {
    pub fn add(&self, pid: i32) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(pid);
    }

    pub fn remove(&self, pid: i32) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid);
    }

    fn contains(&self, pid: i32) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&pid)
    }
}

/// Whether orphans are re-parented to this process.
pub fn adopts_orphans() -> bool {
    std::process::id() == 1 || nix::sys::prctl::get_child_subreaper().unwrap_or(false)
}

/// Makes this process a child subreaper (`run --subreaper`).
pub fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// Reaps adopted zombies until `cancel`.
pub fn spawn(children: Arc<DirectChildren>, cancel: CancellationToken) -> std::io::Result<()> {
    let mut sigchld = signal(SignalKind::child())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                got = sigchld.recv() => if got.is_none() { return },
            }
            for pid in adopted_zombies(&children) {
                match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                    Ok(status) => tracing::debug!(pid, ?status, "reaped adopted orphan"),
                    Err(e) => tracing::debug!(pid, error = %e, "could not reap adopted orphan"),
                }
            }
        }
    });
    Ok(())
}

fn adopted_zombies(children: &DirectChildren) -> Vec<i32> {
    let me = std::process::id() as i32;
    process_group::processes()
        .filter(|&pid| process_group::stat(pid).is_some_and(|s| s.state == 'Z' && s.ppid == me))
        .filter(|&pid| !children.contains(pid))
        .collect()
}
