//! The runtime directory: `harbormaster.lock` (flock, held for the life of
//! the process), `runtime.json` (written atomically once listeners are bound),
//! `admin.token` (0600, new each start), `pids/` and `logs/`.
//!
//! The lock makes staleness provable: a `runtime.json` whose lock is free was
//! left by a process that is gone.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use crate::admin::api::RuntimeInfo;

pub const LOCK: &str = "harbormaster.lock";
pub const RUNTIME_JSON: &str = "runtime.json";
pub const TOKEN: &str = "admin.token";

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
}

/// A runtime directory this process owns (its lock is held).
#[derive(Debug)]
pub struct RuntimeDir {
    path: PathBuf,
    _lock: Flock<File>,
    token: String,
}

impl RuntimeDir {
    /// Takes the lock, cleans a stale `runtime.json`, writes a new token.
    pub fn acquire(path: &Path) -> Result<Self, RuntimeDirError> {
        let io = |source| RuntimeDirError::Io {
            dir: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(path).map_err(io)?;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path.join(LOCK))
            .map_err(io)?;
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
        let token = new_token().map_err(io)?;
        let _ = std::fs::remove_file(path.join(TOKEN));
        let mut f = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(path.join(TOKEN))
            .map_err(io)?;
        f.write_all(token.as_bytes()).map_err(io)?;
        Ok(Self {
            path: path.to_path_buf(),
            _lock: lock,
            token,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    /// Writes `runtime.json` atomically (temp file + rename).
    pub fn publish(&self, info: &RuntimeInfo) -> std::io::Result<()> {
        let tmp = self.path.join(format!("{RUNTIME_JSON}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(info)?)?;
        std::fs::rename(tmp, self.path.join(RUNTIME_JSON))
    }

    /// Clean exit: runtime.json and the token go; the lock is released on drop.
    pub fn retire(self) {
        let _ = std::fs::remove_file(self.path.join(RUNTIME_JSON));
        let _ = std::fs::remove_file(self.path.join(TOKEN));
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

/// 32 random bytes from the kernel, hex-encoded.
fn new_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    std::io::Read::read_exact(&mut File::open("/dev/urandom")?, &mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_owner_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = RuntimeDir::acquire(dir.path()).unwrap();
        let info = RuntimeInfo {
            pid: 42,
            version: "0".into(),
            started_at: "now".into(),
            config: "c".into(),
            gateway: vec![],
            admin: "http://127.0.0.1:1".into(),
        };
        first.publish(&info).unwrap();
        assert!(is_locked(dir.path()));
        let err = RuntimeDir::acquire(dir.path()).unwrap_err().to_string();
        assert!(err.contains("(pid 42, admin http://127.0.0.1:1)"), "{err}");
        let mode = std::fs::metadata(dir.path().join(TOKEN)).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join(TOKEN)).unwrap(),
            first.token()
        );
        first.retire();
        assert!(!is_locked(dir.path()));
        assert!(read_info(dir.path()).is_none());
        let second = RuntimeDir::acquire(dir.path()).unwrap();
        assert_eq!(second.token().len(), 64);
    }

    #[test]
    fn a_stale_runtime_json_is_removed_by_the_next_owner() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(RUNTIME_JSON), r#"{"pid":7,"version":"0","started_at":"x","config":"c","gateway":[],"admin":"http://x"}"#).unwrap();
        assert!(!is_locked(dir.path()));
        let _owner = RuntimeDir::acquire(dir.path()).unwrap();
        assert!(read_info(dir.path()).is_none());
    }
}
