//! Reaping adopted orphans, and the other duties of PID 1. When
//! harbormaster is PID 1 (a container's entrypoint; detected, no flag) or a
//! child subreaper, orphaned descendants are re-parented to it; unreaped,
//! they pile up as zombies.
//!
//! tokio reaps our *direct* children itself (`Child::wait`, and its orphan
//! queue for dropped children, both `waitpid(pid)` of a specific pid), and
//! the supervisor's exit handling relies on those statuses, so a blanket
//! `waitpid(-1)` (what tini does: it has only one child it cares about)
//! would steal them. `waitid(P_ALL, WEXITED|WNOHANG|WNOWAIT)` can peek
//! without reaping, but it shows one zombie at a time: while that one is a
//! child of ours that tokio has not waited for yet, every other zombie
//! stays hidden behind it. So on every SIGCHLD we list the zombies whose
//! parent is us from `/proc` and reap exactly those that are not ours
//! (`crate::children`); spawning and scanning take one lock, so a
//! just-spawned child is never mistaken for an orphan. (In a container
//! `/proc` is the container's own; `unshare --pid` needs `--mount-proc`.)
//!
//! Signals as PID 1: the kernel delivers to PID 1 only the signals it
//! handles. SIGTERM and SIGINT start the graceful, ordered stop (a second
//! one forces it), SIGHUP reloads — harbormaster passes them on to its apps
//! in order through their stop sequences rather than all at once as tini
//! does. SIGUSR1, SIGUSR2 and SIGWINCH have no meaning for harbormaster
//! and are forwarded to every running instance's process group
//! ([`forward_signals`]), so `docker kill -s USR1` reaches the apps.

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

/// The signals PID 1 forwards to every instance's process group.
const FORWARDED: [SignalKind; 3] = [
    SignalKind::user_defined1(),
    SignalKind::user_defined2(),
    SignalKind::window_change(),
];

/// Forwards SIGUSR1, SIGUSR2 and SIGWINCH to the process group of every
/// running instance (`pids` lists their pids, which lead their groups),
/// until `cancel`.
pub fn forward_signals(
    pids: impl Fn() -> Vec<u32> + Send + Sync + 'static,
    cancel: CancellationToken,
) -> std::io::Result<()> {
    let pids = std::sync::Arc::new(pids);
    for kind in FORWARDED {
        let mut stream = signal(kind)?;
        let Ok(sig) = nix::sys::signal::Signal::try_from(kind.as_raw_value()) else {
            continue;
        };
        let (pids, cancel) = (pids.clone(), cancel.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    got = stream.recv() => if got.is_none() { return },
                }
                for pid in pids() {
                    let ok = process_group::signal(pid as i32, sig).is_ok();
                    tracing::info!(
                        event = "signal_forwarded",
                        signal = sig.as_str(),
                        pgid = pid,
                        ok
                    );
                }
            }
        });
    }
    Ok(())
}
