//! Reading the audit log back (`harbormaster audit`), from SQLite or
//! PostgreSQL, whether harbormaster runs or not. Rows come in `id` order so
//! a follower asks for `id > last` again and again.

use std::time::SystemTime;

use anyhow::Context;
use rusqlite::OpenFlags;
use serde::Serialize;

use super::record::{rfc3339, CallStatus};
use crate::config::{AuditConfig, AuditSink};

/// Rows per query, at most.
pub const PAGE: i64 = 10_000;

/// What to show.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub since: Option<SystemTime>,
    pub status: Option<CallStatus>,
    /// A glob over exposed tool names (`everything__*`).
    pub tool: Option<globset::GlobMatcher>,
    pub client: Option<String>,
    /// Only rows with a greater id.
    pub after_id: i64,
}

/// One row of `mcp_calls`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct McpRow {
    pub id: i64,
    pub ts: String,
    pub client: String,
    pub front: String,
    pub session: Option<String>,
    pub server: String,
    pub tool: String,
    pub status: String,
    pub latency_ms: f64,
    pub request_bytes: i64,
    pub response_bytes: i64,
    pub error: Option<String>,
}

/// One row of `admin_actions`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AdminRow {
    pub id: i64,
    pub ts: String,
    pub action: String,
    pub target: Option<String>,
    pub result: String,
    pub peer: String,
    pub via: String,
}

/// An open audit database.
pub enum Reader {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

const MCP_COLUMNS: &str = "id, ts, client, front, session, server, tool, status, latency_ms, request_bytes, response_bytes, error";
const ADMIN_COLUMNS: &str = "id, ts, action, target, result, peer, via";

impl Reader {
    pub async fn open(config: &AuditConfig) -> anyhow::Result<Self> {
        match &config.sink {
            AuditSink::Sqlite(path) => {
                if !path.exists() {
                    anyhow::bail!(
                        "no audit database at {} yet (it is created when harbormaster starts with [audit] or [mcp])",
                        path.display()
                    );
                }
                // Read-write (never create) lets SQLite use the WAL index as
                // usual; a file we may only read is opened read-only.
                let open = |flags| {
                    rusqlite::Connection::open_with_flags(
                        path,
                        flags | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                    )
                };
                let conn = open(OpenFlags::SQLITE_OPEN_READ_WRITE)
                    .or_else(|_| open(OpenFlags::SQLITE_OPEN_READ_ONLY))
                    .with_context(|| format!("cannot open {}", path.display()))?;
                conn.busy_timeout(std::time::Duration::from_secs(5))?;
                Ok(Self::Sqlite(conn))
            }
            AuditSink::Postgres(url) => Ok(Self::Postgres(super::postgres::connect(url).await?)),
        }
    }

    /// The next page of MCP calls after `f.after_id`, and the last id it
    /// covered (rows the tool glob filtered out included), for the next page.
    pub async fn mcp_calls(&mut self, f: &Filter) -> anyhow::Result<(Vec<McpRow>, Option<i64>)> {
        let since = f.since.map(rfc3339);
        let status = f.status.map(|s| s.as_str());
        let mut rows = match self {
            Self::Sqlite(conn) => {
                let sql = format!("SELECT {MCP_COLUMNS} FROM mcp_calls WHERE id > ?1 AND (?2 IS NULL OR ts >= ?2) AND (?3 IS NULL OR status = ?3) AND (?4 IS NULL OR client = ?4) ORDER BY id LIMIT {PAGE}");
                let mut stmt = conn.prepare(&sql)?;
                let rows = stmt.query_map(
                    rusqlite::params![f.after_id, since, status, f.client],
                    |r| {
                        Ok(McpRow {
                            id: r.get(0)?,
                            ts: r.get(1)?,
                            client: r.get(2)?,
                            front: r.get(3)?,
                            session: r.get(4)?,
                            server: r.get(5)?,
                            tool: r.get(6)?,
                            status: r.get(7)?,
                            latency_ms: r.get(8)?,
                            request_bytes: r.get(9)?,
                            response_bytes: r.get(10)?,
                            error: r.get(11)?,
                        })
                    },
                )?;
                rows.collect::<Result<Vec<_>, _>>()?
            }
            Self::Postgres(client) => {
                let sql = format!("SELECT {MCP_COLUMNS} FROM mcp_calls WHERE id > $1 AND ($2::timestamptz IS NULL OR ts >= $2) AND ($3::text IS NULL OR status = $3) AND ($4::text IS NULL OR client = $4) ORDER BY id LIMIT {PAGE}");
                client
                    .query(&sql, &[&f.after_id, &f.since, &status, &f.client])
                    .await?
                    .iter()
                    .map(|r| McpRow {
                        id: r.get(0),
                        ts: rfc3339(r.get(1)),
                        client: r.get(2),
                        front: r.get(3),
                        session: r.get(4),
                        server: r.get(5),
                        tool: r.get(6),
                        status: r.get(7),
                        latency_ms: r.get(8),
                        request_bytes: r.get(9),
                        response_bytes: r.get(10),
                        error: r.get(11),
                    })
                    .collect()
            }
        };
        let last = rows.last().map(|r| r.id);
        if let Some(glob) = &f.tool {
            rows.retain(|r| glob.is_match(&r.tool));
        }
        Ok((rows, last))
    }

    pub async fn admin_actions(&mut self, f: &Filter) -> anyhow::Result<Vec<AdminRow>> {
        let since = f.since.map(rfc3339);
        match self {
            Self::Sqlite(conn) => {
                let sql = format!("SELECT {ADMIN_COLUMNS} FROM admin_actions WHERE id > ?1 AND (?2 IS NULL OR ts >= ?2) ORDER BY id LIMIT {PAGE}");
                let mut stmt = conn.prepare(&sql)?;
                let rows = stmt.query_map(rusqlite::params![f.after_id, since], |r| {
                    Ok(AdminRow {
                        id: r.get(0)?,
                        ts: r.get(1)?,
                        action: r.get(2)?,
                        target: r.get(3)?,
                        result: r.get(4)?,
                        peer: r.get(5)?,
                        via: r.get(6)?,
                    })
                })?;
                Ok(rows.collect::<Result<Vec<_>, _>>()?)
            }
            Self::Postgres(client) => {
                let sql = format!("SELECT {ADMIN_COLUMNS} FROM admin_actions WHERE id > $1 AND ($2::timestamptz IS NULL OR ts >= $2) ORDER BY id LIMIT {PAGE}");
                Ok(client
                    .query(&sql, &[&f.after_id, &f.since])
                    .await?
                    .iter()
                    .map(|r| AdminRow {
                        id: r.get(0),
                        ts: rfc3339(r.get(1)),
                        action: r.get(2),
                        target: r.get(3),
                        result: r.get(4),
                        peer: r.get(5),
                        via: r.get(6),
                    })
                    .collect())
            }
        }
    }
}
