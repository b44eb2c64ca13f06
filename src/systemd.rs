//! systemd's notify protocol (`Type=notify`), without libsystemd: one
//! datagram per message to the Unix socket named by `NOTIFY_SOCKET` (a path,
//! or `@name` for an abstract socket), as `sd_notify(3)` documents.
//!
//! What harbormaster says, and when:
//! - `READY=1` once every required app is ready (the harbor's `ready` event),
//!   so `systemctl start` returns when traffic can be served;
//! - `RELOADING=1` + `MONOTONIC_USEC=…` when a reload starts (systemd ≥ 253
//!   wants the timestamp for `Type=notify-reload`) and `READY=1` when it ends;
//! - `STOPPING=1` when the shutdown starts;
//! - `STATUS=…` with the phase and what is going on;
//! - `WATCHDOG=1` every half `WATCHDOG_USEC` when it is set (and
//!   `WATCHDOG_PID`, if set, is this process), from a task on the async
//!   runtime, so a stuck runtime stops the pings and systemd restarts us.
//!
//! The notifier is process-wide, like the variables it comes from:
//! [`init_from_env`] takes them out of the environment once, before any
//! thread starts, so the managed apps (which inherit our environment) can
//! never speak for harbormaster. Without `NOTIFY_SOCKET` every call is a no-op.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

#[derive(Debug)]
struct Notifier {
    socket: UnixDatagram,
    addr: SocketAddr,
    watchdog: Option<Duration>,
}

static NOTIFIER: OnceLock<Notifier> = OnceLock::new();
/// The variables as they were given, for a process that takes over from
/// this one (`harbormaster upgrade`).
static GIVEN: OnceLock<Vec<(String, String)>> = OnceLock::new();
/// `READY=1` was sent once: reloads may say `RELOADING=1` / `READY=1`.
static ANNOUNCED: AtomicBool = AtomicBool::new(false);

/// Reads and removes `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`
/// (call it before other threads exist: it changes the environment).
/// Returns whether a notify socket was given.
pub fn init_from_env() -> bool {
    let socket = std::env::var_os("NOTIFY_SOCKET");
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    let mut given = Vec::new();
    for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC"] {
        if let Ok(v) = std::env::var(name) {
            given.push((name.to_string(), v));
        }
    }
    let _ = GIVEN.set(given);
    for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
        std::env::remove_var(name);
    }
    let Some(socket) = socket else { return false };
    let addr = match address(&socket.to_string_lossy()) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "NOTIFY_SOCKET is not usable; systemd is not told our state");
            return false;
        }
    };
    let Ok(unbound) = UnixDatagram::unbound() else {
        return false;
    };
    let watchdog = watchdog_interval(usec.as_deref(), pid.as_deref(), std::process::id());
    NOTIFIER
        .set(Notifier {
            socket: unbound,
            addr,
            watchdog,
        })
        .is_ok()
}

/// `/run/systemd/notify` or `@abstract-name`.
fn address(value: &str) -> std::io::Result<SocketAddr> {
    match value.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None if value.starts_with('/') => SocketAddr::from_pathname(value),
        None => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{value:?} is neither an absolute path nor @abstract"),
        )),
    }
}

/// Half of `WATCHDOG_USEC`, when it is set and meant for `pid`.
fn watchdog_interval(usec: Option<&str>, for_pid: Option<&str>, pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(p) = for_pid {
        if p.trim().parse::<u32>().ok() != Some(pid) {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2))
}

/// Sends `message` (newline-separated `KEY=value` lines) when systemd listens.
pub fn notify(message: &str) {
    let Some(n) = NOTIFIER.get() else { return };
    if let Err(e) = n.socket.send_to_addr(message.as_bytes(), &n.addr) {
        tracing::debug!(error = %e, "cannot notify systemd");
    }
}

/// `NOTIFY_SOCKET` and `WATCHDOG_USEC` as systemd gave them, for the
/// process an upgrade starts (it becomes the main pid: `MAINPID=`).
pub fn child_env() -> Vec<(String, String)> {
    GIVEN.get().cloned().unwrap_or_default()
}

/// Whether systemd is being told our state.
pub fn enabled() -> bool {
    NOTIFIER.get().is_some()
}

/// Every required app is ready: the service is up.
pub fn ready(status: &str) {
    ANNOUNCED.store(true, Ordering::SeqCst);
    notify(&format!("READY=1\nSTATUS={status}"));
}

/// A reload starts (said only once the service was up: before that,
/// systemd still waits for the first `READY=1`).
pub fn reloading() {
    if !ANNOUNCED.load(Ordering::SeqCst) {
        return;
    }
    notify(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the configuration",
        monotonic_usec()
    ));
}

/// A reload ended (applied or not): up again.
pub fn reloaded(status: &str) {
    if ANNOUNCED.load(Ordering::SeqCst) {
        notify(&format!("READY=1\nSTATUS={status}"));
    } else {
        self::status(status);
    }
}

pub fn stopping() {
    notify("STOPPING=1\nSTATUS=stopping: draining connections");
}

pub fn status(status: &str) {
    notify(&format!("STATUS={status}"));
}

/// CLOCK_MONOTONIC in microseconds (what systemd compares against).
fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000
    })
}

/// Sends `WATCHDOG=1` every half `WATCHDOG_USEC` until `cancel` (returns at
/// once when systemd asked for no watchdog).
pub async fn watchdog(cancel: CancellationToken) {
    let Some(every) = NOTIFIER.get().and_then(|n| n.watchdog) else {
        return;
    };
    tracing::info!(
        event = "systemd_watchdog",
        every_ms = every.as_millis() as u64
    );
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = tick.tick() => notify("WATCHDOG=1"),
            _ = cancel.cancelled() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_pings_at_half_the_interval_for_this_pid_only() {
        let half = Some(Duration::from_secs(5));
        assert_eq!(watchdog_interval(Some("10000000"), None, 7), half);
        assert_eq!(watchdog_interval(Some("10000000"), Some("7"), 7), half);
        assert_eq!(watchdog_interval(Some("10000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("x"), None, 7), None);
        assert_eq!(watchdog_interval(None, None, 7), None);
    }

    #[test]
    fn notify_socket_is_a_path_or_an_abstract_name() {
        use std::os::linux::net::SocketAddrExt;
        let abs = address("@hm-test").unwrap();
        assert_eq!(abs.as_abstract_name(), Some(&b"hm-test"[..]));
        let path = address("/run/systemd/notify").unwrap();
        assert_eq!(
            path.as_pathname(),
            Some(std::path::Path::new("/run/systemd/notify"))
        );
        assert!(address("relative").is_err());
    }
}
