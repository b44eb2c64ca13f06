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
        if !on {
            return None;
        }
        let default = RawAudit::default();
        let a = raw.map_or(&default, |a| a.get_ref());
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
