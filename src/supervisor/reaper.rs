//! Reaping adopted orphans. When harbormaster is PID 1 (a container's
//! entrypoint) or a child subreaper, orphaned descendants are re-parented to
//! it; unreaped, they pile up as zombies.
//!
//! tokio reaps our *direct* children itself (`Child::wait`), so a blanket
//! `waitpid(-1)` would steal their exit statuses. Instead, on every SIGCHLD we
//! reap exactly the zombie children that are not ours (`crate::children`);
//! spawning and scanning take one lock, so a just-spawned child is never
//! mistaken for an orphan.

use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use super::process_group;
use crate::children;

/// Whether orphans are re-parented to this process.
pub fn adopts_orphans() -> bool {
    std::process::id() == 1 || nix::sys::prctl::get_child_subreaper().unwrap_or(false)
}

/// Makes this process a child subreaper: orphaned descendants (daemons that
/// double-forked) are re-parented to it instead of init, so they stay
/// visible, are stopped with their instance, and are reaped here.
pub fn become_subreaper() -> nix::Result<()> {
    nix::sys::prctl::set_child_subreaper(true)
}

/// Reaps adopted zombies until `cancel`.
pub fn spawn(cancel: CancellationToken) -> std::io::Result<()> {
    let mut sigchld = signal(SignalKind::child())?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                got = sigchld.recv() => if got.is_none() { return },
            }
            // Under the registry's lock: no child can be spawned meanwhile.
            children::while_locked(|ours| {
                for pid in adopted_zombies(ours) {
                    match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                        Ok(status) => tracing::debug!(pid, ?status, "reaped adopted orphan"),
                        Err(e) => tracing::debug!(pid, error = %e, "could not reap adopted orphan"),
                    }
                }
            });
        }
    });
    Ok(())
}

fn adopted_zombies(ours: &dyn Fn(i32) -> bool) -> Vec<i32> {
    let me = std::process::id() as i32;
    process_group::processes()
        .filter(|&pid| process_group::stat(pid).is_some_and(|s| s.state == 'Z' && s.ppid == me))
        .filter(|&pid| !ours(pid))
        .collect()
}
