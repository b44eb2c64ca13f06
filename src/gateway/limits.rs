//! File descriptors: the one resource a flood of connections exhausts.
//!
//! A proxy needs about two descriptors per client (the client's and one
//! upstream connection), plus some for probes, logs and the admin API. The
//! soft `nofile` limit (often 1024) is raised to the hard limit at start,
//! and the default `max_connections` is derived from it with headroom, so
//! a flood waits in the listen backlog instead of starving the admin API,
//! the probes and the supervisor of descriptors. If descriptors still run
//! out, the accept loop backs off and says so once a second, with a count.

use std::time::Duration;

use tokio::time::Instant;

/// Descriptors kept back from client connections: the admin API, probes,
/// app logs, pipes to children, the runtime dir.
const HEADROOM: u64 = 256;

/// Raises the soft open-file limit to the hard limit; returns the soft
/// limit now in force (`None` if it cannot be read).
pub fn raise_nofile() -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    // An unlimited hard limit still cannot exceed the kernel's nr_open.
    let target = limit.maximum.unwrap_or(1 << 20);
    if limit.current.is_some_and(|c| c < target) {
        let raised = Rlimit {
            current: Some(target),
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => return Some(target),
            Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
        }
    }
    limit.current
}

/// Connections that wait for an accept: std binds with 128, which a burst
/// (or a flood past `max_connections`) fills at once; then new clients'
/// handshakes are dropped and retried only after a second.
const BACKLOG: i32 = 1024;

/// Lets `listener` queue [`BACKLOG`] connections (the kernel caps it at
/// `net.core.somaxconn`).
pub fn deepen_backlog(listener: &std::net::TcpListener) {
    if let Err(e) = rustix::net::listen(listener, BACKLOG) {
        tracing::debug!(error = %e, "cannot set the listen backlog");
    }
}

/// `max_connections` when the config does not set it: half of what the
/// open-file limit leaves after the headroom, at most 10,000.
pub fn default_max_connections() -> usize {
    let soft = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    derive(soft)
}

fn derive(soft: u64) -> usize {
    (soft.saturating_sub(HEADROOM) / 2).clamp(16, 10_000) as usize
}

/// Accept failures of one worker: when to try again and when to say so.
#[derive(Debug, Default)]
pub struct AcceptErrors {
    since_log: u64,
    last_log: Option<Instant>,
    pause: Duration,
}

impl AcceptErrors {
    const LOG_EVERY: Duration = Duration::from_secs(1);
    const MIN_PAUSE: Duration = Duration::from_millis(5);
    const MAX_PAUSE: Duration = Duration::from_millis(200);

    /// Records a failed accept; returns how long to pause before the next
    /// (descriptor exhaustion), or `None` to go on at once (a connection
    /// that was reset before it was accepted, and the like).
    pub fn failed(&mut self, e: &std::io::Error) -> Option<Duration> {
        let exhausted = matches!(
            e.raw_os_error(),
            Some(
                libc_errno::EMFILE | libc_errno::ENFILE | libc_errno::ENOBUFS | libc_errno::ENOMEM
            )
        );
        if !exhausted {
            tracing::debug!(error = %e, "accept failed");
            return None;
        }
        self.since_log += 1;
        let now = Instant::now();
        if self.last_log.is_none_or(|t| now >= t + Self::LOG_EVERY) {
            tracing::warn!(
                event = "accept_failed",
                error = %e,
                count = self.since_log,
                "cannot accept connections: out of file descriptors; backing off"
            );
            self.since_log = 0;
            self.last_log = Some(now);
        }
        self.pause = (self.pause * 2).clamp(Self::MIN_PAUSE, Self::MAX_PAUSE);
        Some(self.pause)
    }

    /// An accept succeeded: the next failure starts from the shortest pause.
    pub fn accepted(&mut self) {
        self.pause = Duration::ZERO;
    }

    /// The next connection on `listener`, backing off while descriptors
    /// are exhausted; `None` once `shutdown` is cancelled.
    pub async fn accept(
        &mut self,
        listener: &tokio::net::TcpListener,
        shutdown: &tokio_util::sync::CancellationToken,
    ) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
        loop {
            let failed = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => {
                        self.accepted();
                        return Some(a);
                    }
                    Err(e) => e,
                },
                _ = shutdown.cancelled() => return None,
            };
            if let Some(pause) = self.failed(&failed) {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shutdown.cancelled() => return None,
                }
            }
        }
    }
}

/// The errno values accept(2) reports for exhausted resources.
mod libc_errno {
    pub const EMFILE: i32 = rustix::io::Errno::MFILE.raw_os_error();
    pub const ENFILE: i32 = rustix::io::Errno::NFILE.raw_os_error();
    pub const ENOBUFS: i32 = rustix::io::Errno::NOBUFS.raw_os_error();
    pub const ENOMEM: i32 = rustix::io::Errno::NOMEM.raw_os_error();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_leaves_headroom_and_two_descriptors_per_client() {
        assert_eq!(derive(1024), 384);
        assert_eq!(derive(1_048_576), 10_000);
        assert_eq!(derive(100), 16);
    }

    #[tokio::test(start_paused = true)]
    async fn descriptor_exhaustion_backs_off_and_other_errors_do_not() {
        let mut errors = AcceptErrors::default();
        let emfile = std::io::Error::from_raw_os_error(libc_errno::EMFILE);
        assert_eq!(errors.failed(&emfile), Some(AcceptErrors::MIN_PAUSE));
        assert_eq!(errors.failed(&emfile), Some(AcceptErrors::MIN_PAUSE * 2));
        for _ in 0..10 {
            errors.failed(&emfile);
        }
        assert_eq!(errors.failed(&emfile), Some(AcceptErrors::MAX_PAUSE));
        errors.accepted();
        assert_eq!(errors.failed(&emfile), Some(AcceptErrors::MIN_PAUSE));
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionAborted);
        assert_eq!(errors.failed(&reset), None);
    }
}
