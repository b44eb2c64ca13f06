//! Every process of an instance, including the ones that left its process
//! group (`setsid`, double-forked daemons), so that stopping an instance
//! leaves nothing behind.
//!
//! An instance's processes are the live members of its process group plus
//! every live process whose environment carries its unique
//! `HARBORMASTER_INSTANCE` value (children inherit it through fork, setsid
//! and exec). We chose this over a cgroup v2 per instance because it works
//! everywhere harbormaster runs, unprivileged and on cgroup v1 or hybrid
//! hosts (the machine this was built on mounts only v1 controllers), with no
//! delegation set-up; harbormaster is also a child subreaper by default
//! (`reaper.rs`), so escaped daemons are re-parented to it and reaped rather
//! than lost to init. The limit, stated plainly: a process that clears or
//! rewrites its own environment *and* leaves the group is not found; a cgroup
//! would catch it, and is the upgrade path where cgroup v2 is writable.

use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::time::Instant;

use super::process_group;

/// Which processes make up one instance.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// The leader's pid, which is also its process group id.
    pub pgid: i32,
    /// The instance's `HARBORMASTER_INSTANCE` value.
    pub instance_id: &'a str,
}

impl Target<'_> {
    /// Live (not zombie) processes of the instance.
    pub fn members(&self) -> Vec<i32> {
        let me = std::process::id() as i32;
        let needle = format!("HARBORMASTER_INSTANCE={}", self.instance_id);
        process_group::processes()
            .filter(|&pid| pid != me)
            .filter(|&pid| {
                process_group::stat(pid).is_some_and(|s| {
                    s.state != 'Z' && (s.pgrp == self.pgid || carries(pid, needle.as_bytes()))
                })
            })
            .collect()
    }

    /// Sends `signal` to the group and to every member outside it.
    pub fn signal(&self, signal: Signal) {
        let _ = process_group::signal(self.pgid, signal);
        for pid in self.members() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal);
        }
    }

    /// Waits until no member is left or `deadline` passes; returns the members
    /// still alive (empty: confirmed).
    pub async fn wait_gone(&self, deadline: Instant) -> Vec<i32> {
        process_group::wait_until_empty(|| self.members(), deadline).await
    }

    /// SIGKILL to every member until none is left (bounded); returns survivors.
    pub async fn kill(&self) -> Vec<i32> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            // A member may fork between the scan and the kill: repeat.
            self.signal(Signal::SIGKILL);
            let left = self
                .wait_gone((Instant::now() + Duration::from_millis(200)).min(deadline))
                .await;
            if left.is_empty() || Instant::now() >= deadline {
                return left;
            }
        }
    }

    /// The stop ladder without hooks: `first` to every member, `grace` to
    /// leave, then SIGKILL. Returns the pids that survived even SIGKILL.
    pub async fn terminate(&self, first: Signal, grace: Duration) -> Vec<i32> {
        if self.members().is_empty() {
            return Vec::new();
        }
        self.signal(first);
        if self.wait_gone(Instant::now() + grace).await.is_empty() {
            return Vec::new();
        }
        self.kill().await
    }
}

/// Whether `/proc/PID/environ` holds exactly `var` (`NAME=value`).
fn carries(pid: i32, var: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|env| env.split(|b| *b == 0).any(|v| v == var))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn finds_and_stops_a_process_that_left_the_group() {
        let id = format!("test-{}", fastrand::u64(..));
        // The shell is the group leader; `setsid` puts the sleep in its own session.
        let mut child = tokio::process::Command::new("/bin/sh")
            .args(["-c", "setsid sleep 4242 & exec sleep 4243"])
            .env("HARBORMASTER_INSTANCE", &id)
            .process_group(0)
            .spawn()
            .unwrap();
        let target = Target {
            pgid: child.id().unwrap() as i32,
            instance_id: &id,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        let escaped = || -> Vec<i32> {
            target
                .members()
                .into_iter()
                .filter(|&p| process_group::stat(p).is_some_and(|s| s.pgrp != target.pgid))
                .collect()
        };
        // Under load the forked child can be seen before its setsid ran.
        while target.members().len() < 2 || escaped().is_empty() {
            assert!(
                Instant::now() < deadline,
                "the setsid sleep never left the group"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(escaped().len(), 1, "one member left the group");
        let survivors = target
            .terminate(Signal::SIGTERM, Duration::from_secs(2))
            .await;
        assert!(survivors.is_empty(), "{survivors:?}");
        let _ = child.wait().await;
        assert!(target.members().is_empty());
    }
}
