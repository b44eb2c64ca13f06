//! The processes harbormaster spawned itself, so the orphan reaper
//! (`supervisor::reaper`) can tell them from adopted orphans: tokio reaps
//! its own children, and a reaper that took one of their exit statuses
//! would make `Child::wait` fail.
//!
//! It sits at the bottom of the module order because both the supervisor
//! (instances) and `health` (exec probes) spawn children. Spawning and the
//! reaper's scan take the same lock, so a child that dies the moment it is
//! spawned is already registered when the reaper looks.

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

/// Process-wide, like the subreaper flag it protects against.
static SPAWNED: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

fn spawned() -> MutexGuard<'static, Option<HashSet<i32>>> {
    SPAWNED.lock().unwrap_or_else(|p| p.into_inner())
}

/// Spawns `cmd` and registers its pid under the lock the reaper scans with.
pub fn spawn_tracked(cmd: &mut tokio::process::Command) -> std::io::Result<Tracked> {
    let mut set = spawned();
    let child = cmd.spawn()?;
    let pid = child.id().map_or(0, |p| p as i32);
    set.get_or_insert_with(HashSet::new).insert(pid);
    Ok(Tracked { child, pid })
}

/// Runs `f` with "is this pid one of ours?" while no child can be spawned.
pub fn while_locked<R>(f: impl FnOnce(&dyn Fn(i32) -> bool) -> R) -> R {
    let set = spawned();
    f(&|pid| set.as_ref().is_some_and(|s| s.contains(&pid)))
}

/// A child spawned through [`spawn_tracked`]; dropping it (after waiting for
/// it) lets the reaper have its pid again.
#[derive(Debug)]
pub struct Tracked {
    pub child: tokio::process::Child,
    /// 0 if the child was already gone when spawn returned.
    pub pid: i32,
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if let Some(set) = spawned().as_mut() {
            set.remove(&self.pid);
        }
    }
}
