//! Reaping adopted orphans. When harbormaster is PID 1 (a container's
//! entrypoint) or a child subreaper, orphaned descendants are re-parented to
//! it; unreaped, they pile up as zombies.
//!
//! tokio reaps our *direct* children itself (`Child::wait`), so a blanket
//! `waitpid(-1)` would steal their exit statuses. Instead, on every SIGCHLD we
//! reap exactly the zombie children that are not ours; spawning and
//! scanning take one lock, so a just-spawned child is never mistaken.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

use super::process_group;

/// Pids of the processes harbormaster spawned itself (tokio reaps those).
/// Process-wide, like the subreaper flag it protects against: instances and
/// exec probes register here.
static DIRECT: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

fn direct() -> MutexGuard<'static, Option<HashSet<i32>>> {
    DIRECT.lock().unwrap_or_else(|p| p.into_inner())
}

/// Spawns `cmd` and registers its pid *under the same lock the reaper scans
/// with*, so a child that dies at once cannot be taken for an adopted orphan
/// and have its exit status stolen from tokio.
pub fn spawn_tracked(cmd: &mut tokio::process::Command) -> std::io::Result<Tracked> {
    let mut set = direct();
    let child = cmd.spawn()?;
    let pid = child.id().map_or(0, |p| p as i32);
    set.get_or_insert_with(HashSet::new).insert(pid);
    Ok(Tracked { child, pid })
}

/// A child spawned through [`spawn_tracked`]; dropping it lets the reaper
/// have its pid again.
#[derive(Debug)]
pub struct Tracked {
    pub child: tokio::process::Child,
    pub pid: i32,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(set) = direct().as_mut() {
            set.remove(&self.pid);
        }
    }
}

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
            let set = direct();
            for pid in adopted_zombies(set.as_ref()) {
                match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                    Ok(status) => tracing::debug!(pid, ?status, "reaped adopted orphan"),
                    Err(e) => tracing::debug!(pid, error = %e, "could not reap adopted orphan"),
                }
            }
        }
    });
    Ok(())
}

fn adopted_zombies(ours: Option<&HashSet<i32>>) -> Vec<i32> {
    let me = std::process::id() as i32;
    process_group::processes()
        .filter(|&pid| process_group::stat(pid).is_some_and(|s| s.state == 'Z' && s.ppid == me))
        .filter(|pid| !ours.is_some_and(|set| set.contains(pid)))
        .collect()
}
