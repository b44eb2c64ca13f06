//! `[audit]`: where the audit log of MCP calls and admin actions goes, how
//! many records wait in memory, how long rows are kept (INTERFACES.md
//! "Audit log"). Parsed here, with the same `file:line:col` errors as the rest.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use super::raw::S;
use super::values::{Checker, Zero};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// `false`: no audit log even with `[mcp]` (for measurements; default true).
    pub enabled: Option<S<bool>>,
    pub path: Option<S<String>>,
    pub url: Option<S<String>>,
    pub queue: Option<S<i64>>,
    pub retention: Option<S<String>>,
}

/// The validated `[audit]` table.
#[derive(Clone, PartialEq)]
pub struct AuditConfig {
    pub sink: AuditSink,
    /// Records buffered in memory; when full, callers wait.
    pub queue: NonZeroU32,
    /// Rows older than this are deleted.
    pub retention: Duration,
}

/// Where records are written.
#[derive(Clone, PartialEq)]
pub enum AuditSink {
    /// An SQLite file (absolute; relative paths resolved against `state_dir`).
    Sqlite(PathBuf),
    /// A PostgreSQL connection string (`postgres://…`).
    Postgres(String),
}

impl std::fmt::Debug for AuditConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditConfig")
            .field("sink", &self.sink)
            .field("queue", &self.queue)
            .field("retention", &self.retention)
            .finish()
    }
}

impl std::fmt::Debug for AuditSink {
    /// The URL may hold a password: only its database part is shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "Sqlite({})", p.display()),
            Self::Postgres(url) => {
                let tail = url.rsplit('/').next().unwrap_or("");
                write!(f, "Postgres(…/{tail})")
            }
        }
    }
}

pub const DEFAULT_QUEUE: u32 = 10_000;
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

impl Checker<'_, '_> {
    /// `on`: the audit log is wanted (`[audit]` or `[mcp]` is present).
    pub(crate) fn audit(
        &mut self,
        raw: Option<&S<RawAudit>>,
        on: bool,
        state_dir: &Path,
    ) -> Option<AuditConfig> {
        let default = RawAudit::default();
        let a = raw.map_or(&default, |a| a.get_ref());
        if !on || a.enabled.as_ref().is_some_and(|e| !*e.get_ref()) {
            return None;
        }
        let path = match &a.path {
            Some(p) if p.get_ref().trim().is_empty() => {
                self.rep.error(
                    p.span(),
                    "audit.path",
                    "empty path",
                    Some("write a file name such as \"audit.db\", or remove the key".into()),
                );
                state_dir.join("audit.db")
            }
            Some(p) => state_dir.join(p.get_ref()),
            None => state_dir.join("audit.db"),
        };
        let sink = match &a.url {
            None => AuditSink::Sqlite(path),
            Some(url) => {
                if let Some(p) = &a.path {
                    self.rep.error(
                        p.span(),
                        "audit.path",
                        "path and url are both set",
                        Some("keep url for PostgreSQL, or path for SQLite; not both".into()),
                    );
                }
                self.postgres_url(url);
                AuditSink::Postgres(url.get_ref().clone())
            }
        };
        let queue = self.int(
            a.queue.as_ref(),
            "audit.queue",
            DEFAULT_QUEUE,
            1,
            10_000_000,
        );
        Some(AuditConfig {
            sink,
            queue: NonZeroU32::new(queue).unwrap_or(NonZeroU32::MIN),
            retention: self.duration(
                a.retention.as_ref(),
                "audit.retention",
                DEFAULT_RETENTION,
                Zero::Rejected,
            ),
        })
    }

    fn postgres_url(&mut self, url: &S<String>) {
        let text = url.get_ref();
        let hint = "write postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE, e.g. \"postgres://hm@127.0.0.1:5432/harbormaster\"";
        if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
            self.rep.error(
                url.span(),
                "audit.url",
                "not a PostgreSQL URL (it must start with postgres://)",
                Some(hint.into()),
            );
            return;
        }
        if let Err(e) = tokio_postgres::Config::from_str(text) {
            self.rep.error(
                url.span(),
                "audit.url",
                format!("invalid PostgreSQL URL: {e}"),
                Some(hint.into()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn load(text: &str) -> Result<crate::Config, String> {
        crate::config::from_str(text, Path::new("/srv/hm/harbormaster.toml"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn off_without_the_table_sqlite_by_default_with_it() {
        assert_eq!(load("").unwrap().audit, None);
        let audit = load("[audit]\n").unwrap().audit.unwrap();
        assert_eq!(
            audit.sink,
            AuditSink::Sqlite("/srv/hm/.harbormaster/audit.db".into())
        );
        assert_eq!(audit.queue.get(), DEFAULT_QUEUE);
        assert_eq!(audit.retention, DEFAULT_RETENTION);
        let text = "[runtime]\nstate_dir = \"/var/lib/hm\"\n[audit]\npath = \"a/x.db\"\nqueue = 5\nretention = \"7d\"\n";
        let audit = load(text).unwrap().audit.unwrap();
        assert_eq!(audit.sink, AuditSink::Sqlite("/var/lib/hm/a/x.db".into()));
        assert_eq!(audit.queue.get(), 5);
        assert_eq!(audit.retention, Duration::from_secs(7 * 86400));
    }

    #[test]
    fn mcp_turns_it_on_unless_enabled_is_false() {
        let mcp = "[mcp]\n[mcp.servers.s]\ncommand = [\"x\"]\n";
        assert!(load(mcp).unwrap().audit.is_some());
        let off = format!("{mcp}[audit]\nenabled = false\n");
        assert_eq!(load(&off).unwrap().audit, None);
    }

    #[test]
    fn postgres_url() {
        let text = "[audit]\nurl = \"postgres://hm:secret@127.0.0.1:5432/audit\"\n";
        let audit = load(text).unwrap().audit.unwrap();
        assert!(matches!(audit.sink, AuditSink::Postgres(_)));
        assert!(
            !format!("{audit:?}").contains("secret"),
            "no password in Debug"
        );
    }

    #[test]
    fn errors_point_at_the_value() {
        let err = load("[audit]\nqueue = 0\nretention = \"soon\"\n").unwrap_err();
        assert!(
            err.contains("harbormaster.toml:2:9: audit.queue: must be at least 1"),
            "{err}"
        );
        assert!(
            err.contains("harbormaster.toml:3:13: audit.retention: invalid duration"),
            "{err}"
        );
        let err = load("[audit]\nurl = \"mysql://x\"\n").unwrap_err();
        assert!(
            err.contains(":2:7: audit.url: not a PostgreSQL URL"),
            "{err}"
        );
        let err = load("[audit]\npath = \"a.db\"\nurl = \"postgres://h/db\"\n").unwrap_err();
        assert!(
            err.contains(":2:8: audit.path: path and url are both set"),
            "{err}"
        );
        let err = load("[audit]\nqueu = 5\n").unwrap_err();
        assert!(
            err.contains("unknown key `queu`") && err.contains("did you mean `queue`?"),
            "{err}"
        );
    }
}
