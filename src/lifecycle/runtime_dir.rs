//! The runtime directory: `harbormaster.lock` (flock, held for the life of
//! the process), `runtime.json` (written atomically once listeners are bound),
//! `admin.sock` (0600, the CLI's channel to the admin API) and `pids/`.
//!
//! It is private to the user (0700, refused when another user owns it) and
//! never beside the config, so no app that serves its working directory can
//! hand out anything from it; and it holds no secret at all: the socket's
//! file permission is the authentication. Its default location depends only
//! on the config file's absolute path, so the CLI finds a running instance
//! even when the config no longer parses.
//!
//! The lock makes staleness provable: a `runtime.json` whose lock is free was
//! left by a process that is gone.

use std::fs::{File, OpenOptions};
use std::hash::Hasher;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::admin::api::RuntimeInfo;

pub const LOCK: &str = "harbormaster.lock";
pub const RUNTIME_JSON: &str = "runtime.json";
pub const SOCKET: &str = "admin.sock";
/// Crash-recovery records of running instances (see `supervisor::leftovers`).
pub const PIDS: &str = "pids";

#[derive(Debug, thiserror::Error)]
pub enum RuntimeDirError {
    #[error("harbormaster is already running on {dir} (pid {pid}, admin {admin}) — stop it with `harbormaster stop`, or use another --runtime-dir")]
    Held {
        dir: String,
        pid: String,
        admin: String,
    },
    #[error("cannot use the runtime directory {dir}: {source}")]
    Io {
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing the runtime directory {dir}: it is owned by uid {owner}, not by this user (uid {me}); remove it or choose another with --runtime-dir")]
    NotOurs { dir: String, owner: u32, me: u32 },
    #[error("refusing the runtime directory {dir}: it is a symbolic link or not a directory")]
    NotADir { dir: String },
}

fn io_err(dir: &Path) -> impl Fn(std::io::Error) -> RuntimeDirError + '_ {
    move |source| RuntimeDirError::Io {
        dir: dir.display().to_string(),
        source,
    }
}

/// The runtime dir for the config file at `config`: `--runtime-dir`, else
/// `[runtime] dir`, else the private default (INTERFACES.md):
/// `$XDG_RUNTIME_DIR/harbormaster/<stem>-<hash>/`, without XDG_RUNTIME_DIR
/// `/run/harbormaster/…` for root and `${TMPDIR:-/tmp}/harbormaster-<uid>/…`
/// for others. Pure: nothing is created.
pub fn locate(flag: Option<&Path>, configured: Option<&Path>, config: &Path) -> PathBuf {
    if let Some(dir) = flag.or(configured) {
        return dir.to_path_buf();
    }
    default_base().join(default_name(config))
}

/// The folder that holds the default runtime dirs of this user.
fn default_base() -> PathBuf {
    let env = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    match env("XDG_RUNTIME_DIR") {
        Some(xdg) => PathBuf::from(xdg).join("harbormaster"),
        None if nix::unistd::geteuid().is_root() => PathBuf::from("/run/harbormaster"),
        None => PathBuf::from(env("TMPDIR").unwrap_or_else(|| "/tmp".into()))
            .join(format!("harbormaster-{}", nix::unistd::geteuid())),
    }
}

/// `<config-stem>-<8 hex of a hash of the config's absolute path>`. FNV-1a
/// because its output is fixed by its definition (std's hasher may change
/// between Rust releases, which would hide running instances).
fn default_name(config: &Path) -> String {
    let abs = std::path::absolute(config).unwrap_or_else(|_| config.to_path_buf());
    let mut hasher = fnv::FnvHasher::default();
    hasher.write(abs.as_os_str().as_encoded_bytes());
    let stem: String = abs
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "harbormaster".into())
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{stem}-{:08x}", hasher.finish() as u32)
}

/// Creates `dir` (and missing parents) mode 0700 and checks that this user
/// owns it and that it is a real directory; tightens a looser mode.
pub fn ensure_private(dir: &Path) -> Result<(), RuntimeDirError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io_err(dir))?;
    let meta = std::fs::symlink_metadata(dir).map_err(io_err(dir))?;
    if !meta.is_dir() {
        return Err(RuntimeDirError::NotADir {
            dir: dir.display().to_string(),
        });
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(RuntimeDirError::NotOurs {
            dir: dir.display().to_string(),
            owner: meta.uid(),
            me,
        });
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io_err(dir))?;
    }
    Ok(())
}

/// A runtime directory this process owns (its lock is held).
#[derive(Debug)]
pub struct RuntimeDir {
    path: PathBuf,
    /// `None` once handed over to an upgrade's new process.
    lock: Option<Flock<File>>,
}

impl RuntimeDir {
    /// Makes sure the dir is private, takes the lock, cleans what a process
    /// that is gone left behind (runtime.json, admin.sock).
    pub fn acquire(path: &Path) -> Result<Self, RuntimeDirError> {
        let io = io_err(path);
        // Under the default base (in a shared /tmp, say), whoever owns the
        // base could swap our dir: it must be ours and private too.
        if path.parent() == Some(default_base().as_path()) {
            ensure_private(&default_base())?;
        }
        ensure_private(path)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join(LOCK))
            .map_err(&io)?;
        let lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                let info = read_info(path);
                return Err(RuntimeDirError::Held {
                    dir: path.display().to_string(),
                    pid: info
                        .as_ref()
                        .map_or("unknown".into(), |i| i.pid.to_string()),
                    admin: info.map_or("unknown".into(), |i| i.admin),
                });
            }
            Err((_, e)) => return Err(io(e.into())),
        };
        if let Some(stale) = read_info(path) {
            tracing::warn!(
                event = "stale_runtime_removed",
                pid = stale.pid,
                "removed runtime.json left by a harbormaster that is gone"
            );
            let _ = std::fs::remove_file(path.join(RUNTIME_JSON));
        }
        // Left by an older version; nothing reads it any more.
        let _ = std::fs::remove_file(path.join("admin.token"));
        Ok(Self {
            path: path.to_path_buf(),
            lock: Some(lock),
        })
    }

    /// Takes over the runtime dir of the harbormaster being upgraded: `lock`
    /// is its lock file, open (the flock belongs to the open file, which
    /// both processes now share), so the lock is held without a gap.
    pub fn adopt(path: &Path, lock: std::os::fd::OwnedFd) -> Result<Self, RuntimeDirError> {
        let lock = Flock::lock(File::from(lock), FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| io_err(path)(e.into()))?;
        Ok(Self {
            path: path.to_path_buf(),
            lock: Some(lock),
        })
    }

    /// The lock file, for an upgrade to hand over.
    pub fn lock_file(&self) -> Option<&File> {
        self.lock.as_deref()
    }

    /// An upgrade's new process owns the dir now: [`RuntimeDir::retire`]
    /// leaves runtime.json and admin.sock, and the lock is not released
    /// (closing our copy of the shared open file keeps it held).
    pub fn hand_over(&mut self) {
        if let Some(lock) = self.lock.take() {
            std::mem::forget(lock);
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn socket_path(&self) -> PathBuf {
        self.path.join(SOCKET)
    }

    /// Binds `admin.sock` (mode 0600), replacing a stale one (the lock is ours).
    pub fn bind_socket(&self) -> std::io::Result<UnixListener> {
        let path = self.socket_path();
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(listener)
    }

    /// Writes `runtime.json` atomically (temp file + rename).
    pub fn publish(&self, info: &RuntimeInfo) -> std::io::Result<()> {
        let tmp = self.path.join(format!("{RUNTIME_JSON}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(info)?)?;
        std::fs::rename(tmp, self.path.join(RUNTIME_JSON))
    }

    /// Clean exit: runtime.json and the socket go; the lock is released on drop.
    pub fn retire(self) {
        if self.lock.is_none() {
            return; // handed over to an upgrade's new process
        }
        let _ = std::fs::remove_file(self.path.join(RUNTIME_JSON));
        let _ = std::fs::remove_file(self.socket_path());
    }
}

/// `runtime.json` of `dir`, if any.
pub fn read_info(dir: &Path) -> Option<RuntimeInfo> {
    serde_json::from_slice(&std::fs::read(dir.join(RUNTIME_JSON)).ok()?).ok()
}

/// Whether some process holds the lock of `dir` (checked without keeping it).
pub fn is_locked(dir: &Path) -> bool {
    let Ok(file) = File::open(dir.join(LOCK)) else {
        return false;
    };
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(_released_on_drop) => false,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RuntimeInfo {
        RuntimeInfo {
            pid: 42,
            version: "0".into(),
            started_at: "now".into(),
            config: "c".into(),
            gateway: vec![],
            admin: "http://127.0.0.1:1".into(),
            socket: "s".into(),
        }
    }

    #[test]
    fn a_second_owner_is_refused_until_the_first_lets_go() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("rt");
        let first = RuntimeDir::acquire(&dir).unwrap();
        first.publish(&info()).unwrap();
        let _socket = first.bind_socket().unwrap();
        assert!(is_locked(&dir));
        let err = RuntimeDir::acquire(&dir).unwrap_err().to_string();
        assert!(err.contains("(pid 42, admin http://127.0.0.1:1)"), "{err}");
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&first.socket_path()), 0o600);
        first.retire();
        assert!(!is_locked(&dir));
        assert!(read_info(&dir).is_none());
        assert!(!dir.join(SOCKET).exists());
        RuntimeDir::acquire(&dir).unwrap();
    }

    #[test]
    fn a_stale_runtime_json_is_removed_by_the_next_owner() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(RUNTIME_JSON),
            serde_json::to_vec(&info()).unwrap(),
        )
        .unwrap();
        assert!(!is_locked(dir.path()));
        let _owner = RuntimeDir::acquire(dir.path()).unwrap();
        assert!(read_info(dir.path()).is_none());
    }

    #[test]
    fn the_default_depends_only_on_the_config_path() {
        let a = locate(None, None, Path::new("/srv/app/harbormaster.toml"));
        let b = locate(None, None, Path::new("/srv/other/harbormaster.toml"));
        let name = a.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("harbormaster-") && name.len() == 21,
            "{name}"
        );
        assert_ne!(a, b);
        assert_eq!(
            a,
            locate(None, None, Path::new("/srv/app/harbormaster.toml"))
        );
        let over = locate(Some(Path::new("/x")), Some(Path::new("/y")), Path::new("c"));
        assert_eq!(over, Path::new("/x"));
    }

    #[test]
    fn a_dir_owned_by_another_user_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("theirs");
        std::fs::create_dir(&dir).unwrap();
        // Only root can give a folder away; as another user there is nothing to check.
        if nix::unistd::chown(&dir, Some(nix::unistd::Uid::from_raw(65534)), None).is_err() {
            return;
        }
        let err = RuntimeDir::acquire(&dir).unwrap_err();
        assert!(
            matches!(err, RuntimeDirError::NotOurs { owner: 65534, .. }),
            "{err}"
        );
        assert!(!dir.join(LOCK).exists(), "nothing is created in it");
    }

    #[test]
    fn a_dir_with_a_loose_mode_is_tightened() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private(tmp.path()).unwrap();
        let mode = std::fs::metadata(tmp.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }
}
