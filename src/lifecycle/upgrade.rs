//! `harbormaster upgrade`: a new harbormaster binary takes over without
//! dropping a request, the way HAProxy (`-x`) and pingora hand their
//! listening sockets to a new process.
//!
//! Chosen: **exec with inherited fds**, not fd passing over `admin.sock`.
//! The running harbormaster spawns the new binary with its own command line
//! (plus `--upgrade`) and hands it, as fds 3.. named by `LISTEN_FDNAMES`
//! (the systemd socket-activation convention `lifecycle::listeners` already
//! reads, so there is one way in for handed-over sockets): every gateway
//! and TLS listener, the admin listener, `admin.sock`, the runtime dir's
//! lock, and the write end of a pipe. The kernel keeps one accept queue per
//! socket, so from the moment the new process runs, both processes accept
//! from the same queues: no connection is refused at any point. An
//! SCM_RIGHTS exchange would need the new process to connect back and a
//! protocol on the socket; an inherited fd needs neither.
//!
//! Sequence:
//! 1. old: spawn `BINARY run … --upgrade` with the fds (one change at a
//!    time: reloads and restarts wait);
//! 2. new: adopts the sockets and the lock (flock belongs to the open file,
//!    which both now share), skips the leftover sweep (the old instances are
//!    alive, not leftovers), starts its own instances, rewrites runtime.json,
//!    and writes `ready` to the pipe once every required app is ready;
//! 3. old: on `ready`, tells systemd `MAINPID=new`, gives the runtime dir
//!    up without removing anything (runtime.json, admin.sock and the lock
//!    are the new process's now), and runs its ordinary graceful shutdown:
//!    listeners close (the new process keeps accepting on the same sockets),
//!    kept-alive HTTP/1 connections get `Connection: close`, HTTP/2 GOAWAY,
//!    in-flight requests and streams finish, its instances stop;
//! 4. if the new process exits, or is not ready within the timeout (then it
//!    is sent SIGTERM), the old one keeps serving and reports why.
//!
//! Managed apps are **replaced blue-green**, not adopted: the new process
//! starts its own instances and is ready only when they are; the old
//! instances drain and stop with the old process. Adoption is not possible
//! as a process: the instances are children of the old process (only it can
//! wait for them, and they die with it through their parent-death signal).
//! This is the steps of the replace sequence (`replace.rs`: new ready →
//! switch → drain old → stop old) carried out across the two processes: the
//! new one's start is "start new, wait ready", the shared sockets are the
//! switch, the old one's shutdown is "drain, stop". An app with a fixed
//! `port` cannot run twice at once: its new instance fails to bind until
//! the old one stops, so give such apps `port = 0` when upgrades matter.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::harbor::{lock, HarborCtx, Phase};

/// The name of the pipe's write end among the handed-over fds.
pub const READY_FD_NAME: &str = "upgrade.ready";

/// The dups of every socket and file a new process would take over, named
/// as `LISTEN_FDNAMES` names them. Cleared when the shutdown starts, so a
/// closed listener frees its port.
#[derive(Debug, Default)]
pub struct Handover(Mutex<Vec<(String, OwnedFd)>>);

impl Handover {
    /// Keeps a dup of `fd` under `name` (a failed dup is logged: an upgrade
    /// would then hand over one socket fewer, and the new process binds it).
    pub fn keep(&self, name: &str, fd: impl AsFd) {
        match fd.as_fd().try_clone_to_owned() {
            Ok(dup) => lock(&self.0).push((name.to_string(), dup)),
            Err(e) => tracing::warn!(name, error = %e, "cannot keep a socket for upgrades"),
        }
    }

    /// Forgets the listener bound to `addr` (a reload closed it).
    pub fn forget(&self, addr: &std::net::SocketAddr) {
        lock(&self.0).retain(|(_, fd)| {
            rustix::net::getsockname(fd)
                .ok()
                .and_then(|a| std::net::SocketAddr::try_from(a).ok())
                != Some(*addr)
        });
    }

    pub fn clear(&self) {
        lock(&self.0).clear();
    }

    fn dups(&self) -> std::io::Result<Vec<(String, OwnedFd)>> {
        lock(&self.0)
            .iter()
            .map(|(n, fd)| Ok((n.clone(), fd.try_clone()?)))
            .collect()
    }
}

/// Why an upgrade did not happen (the old process keeps serving).
#[derive(Debug, thiserror::Error)]
pub enum UpgradeError {
    #[error("harbormaster is shutting down")]
    ShuttingDown,
    #[error("cannot start {binary}: {source}")]
    Spawn {
        binary: String,
        source: std::io::Error,
    },
    #[error("the new harbormaster ({binary}, pid {pid}) exited with {status} before it was ready; see its lines in this log. The old process keeps serving")]
    Exited {
        binary: String,
        pid: u32,
        status: String,
    },
    #[error("the new harbormaster ({binary}, pid {pid}) was not ready within {}; it was stopped. The old process keeps serving", humantime::format_duration(*.timeout))]
    NotReady {
        binary: String,
        pid: u32,
        timeout: Duration,
    },
    #[error("cannot hand over the sockets: {0}")]
    Io(#[from] std::io::Error),
}

/// The write end of the pipe the old process waits on (in a process
/// started with `--upgrade`).
static READY_PIPE: Mutex<Option<OwnedFd>> = Mutex::new(None);

/// Remembers the pipe to tell the old process that this one is ready.
pub fn set_ready_pipe(fd: OwnedFd) {
    *lock(&READY_PIPE) = Some(fd);
}

/// Tells the old process (if this one was started by an upgrade) that every
/// required app is ready: it drains and exits now.
pub fn tell_ready() {
    if let Some(fd) = lock(&READY_PIPE).take() {
        let file = std::fs::File::from(fd);
        if let Err(e) = std::io::Write::write_all(&mut &file, b"ready\n") {
            tracing::warn!(error = %e, "cannot tell the old harbormaster that this one is ready");
        }
    }
}

impl HarborCtx {
    /// Hands everything over to `binary` (see the module doc); returns the
    /// new process's pid once it is ready, and starts this one's shutdown.
    pub async fn upgrade(&self, binary: PathBuf, timeout: Duration) -> Result<u32, UpgradeError> {
        if *self.phase.borrow() != Phase::Running || self.shutdown_requested.is_cancelled() {
            return Err(UpgradeError::ShuttingDown);
        }
        let _turn = self.changes.lock().await;
        let shown = binary.display().to_string();
        tracing::info!(event = "upgrade_started", binary = %shown);
        let mut fds = self.handover.dups()?;
        let (read_end, write_end) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)?;
        fds.push((READY_FD_NAME.to_string(), write_end));

        let mut cmd = tokio::process::Command::new(&binary);
        let args = std::env::args_os().skip(1).filter(|a| a != "--upgrade");
        cmd.args(args)
            .arg("--upgrade")
            .env("LISTEN_FDS", fds.len().to_string())
            .env(
                "LISTEN_FDNAMES",
                fds.iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(":"),
            )
            .env_remove("LISTEN_PID")
            .envs(crate::systemd::child_env())
            .stdin(std::process::Stdio::null());
        let raw: Vec<RawFd> = fds.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
        pass_fds(&mut cmd, raw);
        let mut child =
            crate::children::spawn_tracked(&mut cmd).map_err(|source| UpgradeError::Spawn {
                binary: shown.clone(),
                source,
            })?;
        drop(fds); // the child has its own copies (and the write end)
        let pid = child.pid as u32;
        tracing::info!(event = "upgrade_spawned", pid, binary = %shown);

        let mut pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(read_end)?;
        let ready = async {
            let mut said = Vec::new();
            let _ = pipe.read_to_end(&mut said).await;
            said.starts_with(b"ready")
        };
        let outcome = tokio::select! {
            ready = ready => if ready { Ok(()) } else {
                let status = child.child.wait().await.map_or_else(|e| e.to_string(), |s| s.to_string());
                Err(UpgradeError::Exited { binary: shown.clone(), pid, status })
            },
            status = child.child.wait() => Err(UpgradeError::Exited {
                binary: shown.clone(),
                pid,
                status: status.map_or_else(|e| e.to_string(), |s| s.to_string()),
            }),
            _ = tokio::time::sleep(timeout) => {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGTERM);
                let _ = child.child.wait().await;
                Err(UpgradeError::NotReady { binary: shown.clone(), pid, timeout })
            }
        };
        if let Err(e) = outcome {
            tracing::error!(event = "upgrade_failed", error = %e);
            return Err(e);
        }
        // Ready: from here on the new process owns the runtime dir.
        crate::systemd::notify(&format!("MAINPID={pid}"));
        if let Some(runtime) = lock(&self.runtime).as_mut() {
            runtime.hand_over();
        }
        // Wait for the new process in the background, so that if it ends
        // before we do it does not stay a zombie of ours.
        tokio::spawn(async move {
            let _ = child.child.wait().await;
        });
        tracing::info!(
            event = "upgrade_ready",
            pid,
            "the new harbormaster is ready; this one drains and exits"
        );
        self.shutdown();
        Ok(pid)
    }
}

/// Makes `fds` the child's fds 3, 4, … (close-on-exec cleared).
#[allow(unsafe_code)]
fn pass_fds(cmd: &mut tokio::process::Command, fds: Vec<RawFd>) {
    let first = super::listeners::FIRST_FD;
    let above = first + fds.len() as RawFd;
    // SAFETY: between fork and exec only fcntl and dup2 run (both
    // async-signal-safe), on fds this process owns (`fds` stay open in the
    // parent until the spawn returns). Each is first copied above the
    // target range (close-on-exec), so placing one never overwrites
    // another that is still to be placed.
    unsafe {
        cmd.pre_exec(move || {
            use nix::fcntl::{fcntl, FcntlArg};
            let mut high = Vec::with_capacity(fds.len());
            for &fd in &fds {
                let b = std::os::fd::BorrowedFd::borrow_raw(fd);
                high.push(fcntl(b, FcntlArg::F_DUPFD_CLOEXEC(above))?);
            }
            for (i, &fd) in high.iter().enumerate() {
                let b = std::os::fd::BorrowedFd::borrow_raw(fd);
                std::mem::forget(nix::unistd::dup2_raw(b, first + i as RawFd)?);
            }
            Ok(())
        });
    }
}

/// [`HarborCtx::upgrade`] for the admin API (`Control::upgrade`), its error as text.
pub async fn run(h: Arc<HarborCtx>, binary: PathBuf, timeout: Duration) -> Result<u32, String> {
    h.upgrade(binary, timeout).await.map_err(|e| e.to_string())
}
