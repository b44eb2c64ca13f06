//! The guard: when harbormaster dies without stopping its apps (SIGKILL, OOM
//! killer, a panic in the wrong place), every instance still gets its stop
//! ladder within `stop.timeout` + a moment, not at the next start.
//!
//! Why a separate process: nothing runs in a process killed by SIGKILL, and
//! `PR_SET_PDEATHSIG` alone sends one fixed signal to direct children only —
//! it cannot wait `stop.timeout` and then SIGKILL an instance that ignores
//! SIGTERM, and it never reaches descendants that left the group. So
//! harbormaster re-executes itself once per run as `harbormaster __guard
//! --pids DIR` with the read end of a pipe as stdin; harbormaster keeps the
//! write end (close-on-exec, so no app inherits it). When harbormaster's last
//! copy of it closes — however harbormaster ended — the guard reads EOF at
//! once and runs the leftover sweep (`leftovers::clean`: every recorded
//! instance in parallel, its own signal, timeout, then SIGKILL, descendants
//! found by `HARBORMASTER_INSTANCE`). After a clean stop the records are gone
//! and the sweep does nothing. One guard per run rather than one per
//! instance: it costs one small idle process, and the sweep is already
//! per instance and parallel.
//!
//! The guard lives in its own process group and ignores SIGINT, SIGTERM and
//! SIGHUP, so a terminal's Ctrl-C or a signal to harbormaster's group does
//! not take it away while harbormaster runs; it exits by itself right after
//! the sweep.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};

use nix::sys::signal::{signal, SigHandler, Signal};

/// Held by harbormaster for its whole life; its drop (or death) wakes the guard.
#[derive(Debug)]
pub struct Guard {
    _write_end: OwnedFd,
    pub pid: u32,
}

/// The hidden verb the guard runs as.
pub const VERB: &str = "__guard";

/// Starts the guard for the records in `pids_dir` (this run's folder only).
pub fn spawn(pids_dir: &Path) -> std::io::Result<Guard> {
    // Both ends close-on-exec; Stdio::from makes the read end the guard's
    // stdin (dup2 clears the flag for fd 0 only).
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // /proc/self/exe: the very binary that runs, even if it was replaced or
    // deleted on disk since (an upgrade in progress).
    let mut cmd = Command::new("/proc/self/exe");
    std::os::unix::process::CommandExt::arg0(&mut cmd, "harbormaster");
    cmd.arg(VERB)
        .arg("--pids")
        .arg(pids_dir)
        .stdin(Stdio::from(read_end))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let child = cmd.spawn()?;
    Ok(Guard {
        _write_end: write_end,
        pid: child.id(),
    })
}

/// The guard's body: wait for EOF on stdin, then sweep. Returns the exit code.
pub fn run(pids_dir: &Path) -> u8 {
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        let _ = ignore(sig);
    }
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin().lock();
    loop {
        match stdin.read(&mut sink) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            say(&format!("cannot start a runtime: {e}"));
            return 1;
        }
    };
    for line in runtime.block_on(super::leftovers::clean(pids_dir)) {
        say(&format!("harbormaster is gone; {line}"));
    }
    let _ = std::fs::remove_dir(pids_dir);
    0
}

/// One line to harbormaster's log (our stderr); a closed stderr is no reason to stop.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "harbormaster guard: {line}");
}

/// `signal(sig, SIG_IGN)`. nix marks `signal` unsafe because a handler
/// function could be unsound; ignoring runs no code of ours.
#[allow(unsafe_code)]
fn ignore(sig: Signal) -> nix::Result<SigHandler> {
    // SAFETY: SIG_IGN is not a Rust function; no handler code ever runs.
    unsafe { signal(sig, SigHandler::SigIgn) }
}
