//! Process groups: every instance runs in its own, so one signal reaches the
//! instance and everything it started, and "stopped" can be confirmed by
//! finding no live member left.
//!
//! Waiting is event-driven: a pidfd becomes readable when its process exits,
//! so confirming an empty group does not poll.

use std::os::fd::OwnedFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::time::Instant;

/// Live (not zombie) processes whose process group is `pgid`.
pub fn members(pgid: i32) -> Vec<i32> {
    processes()
        .filter(|&pid| stat(pid).is_some_and(|s| s.pgrp == pgid && s.state != 'Z'))
        .collect()
}

/// Every pid in `/proc`.
pub fn processes() -> impl Iterator<Item = i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
}

/// The fields of `/proc/PID/stat` that supervision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// `R`, `S`, `Z`, …
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
}

pub fn stat(pid: i32) -> Option<ProcStat> {
    let raw = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; fields follow the last ')'.
    let rest = raw.get(raw.rfind(')')? + 2..)?;
    let mut fields = rest.split_whitespace();
    Some(ProcStat {
        state: fields.next()?.chars().next()?,
        ppid: fields.next()?.parse().ok()?,
        pgrp: fields.next()?.parse().ok()?,
    })
}

/// Sends `signal` to the whole group; a group that is already gone is fine.
pub fn signal(pgid: i32, signal: Signal) -> Result<(), Errno> {
    match killpg(Pid::from_raw(pgid), signal) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Waits until no live member of `pgid` is left, or `deadline` passes.
/// Returns the members still alive (empty: confirmed).
pub async fn wait_empty(pgid: i32, deadline: Instant) -> Vec<i32> {
    wait_until_empty(|| members(pgid), deadline).await
}

/// Waits until `members()` finds no live process, or `deadline` passes;
/// wakes on each exit (pidfd), never on a timer. Returns what is still alive.
pub async fn wait_until_empty(members: impl Fn() -> Vec<i32>, deadline: Instant) -> Vec<i32> {
    loop {
        let alive = members();
        if alive.is_empty() || Instant::now() >= deadline {
            return alive;
        }
        let fds: Vec<AsyncFd<OwnedFd>> = alive
            .iter()
            .filter_map(|&pid| pidfd(pid))
            .filter_map(watchable)
            .collect();
        if fds.is_empty() {
            // Every member exited between the scan and pidfd_open: scan again.
            continue;
        }
        let any_exit =
            futures_util::future::select_all(fds.iter().map(|fd| Box::pin(fd.readable())));
        tokio::select! {
            _ = any_exit => {}
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

/// Registers a pidfd with the runtime so its exit can be awaited.
#[allow(unsafe_code)]
fn watchable(fd: OwnedFd) -> Option<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd takes ownership of `fd`; an OwnedFd stays open and
    // refers to the same file description until it is dropped, which is all
    // `register_with_interest` requires. (tokio has no safe constructor now.)
    unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE).ok() }
}

fn pidfd(pid: i32) -> Option<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid)?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::NONBLOCK).ok()
}

/// Signal the group, give it `grace`, then SIGKILL and confirm it is empty.
/// Returns the pids that survived even SIGKILL (should be none).
pub async fn terminate(pgid: i32, first: Signal, grace: Duration) -> Vec<i32> {
    if members(pgid).is_empty() {
        return Vec::new();
    }
    let _ = signal(pgid, first);
    if wait_empty(pgid, Instant::now() + grace).await.is_empty() {
        return Vec::new();
    }
    kill(pgid).await
}

/// SIGKILL the group and confirm it is empty.
pub async fn kill(pgid: i32) -> Vec<i32> {
    let _ = signal(pgid, Signal::SIGKILL);
    wait_empty(pgid, Instant::now() + Duration::from_secs(5)).await
}

/// Waits until process `pid` has exited (true) or `deadline` passes (false).
/// Works for processes that are not our children (pidfd).
pub async fn wait_exit(pid: i32, deadline: Instant) -> bool {
    let Some(fd) = pidfd(pid).and_then(watchable) else {
        return true; // already gone
    };
    tokio::select! {
        _ = fd.readable() => true,
        _ = tokio::time::sleep_until(deadline) => false,
    }
}
