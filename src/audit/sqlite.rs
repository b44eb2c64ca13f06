//! The embedded default sink: an SQLite file in WAL mode (readers such as
//! `harbormaster audit` never block the writer). rusqlite is blocking, so
//! every call runs on the blocking pool with the connection moved there and
//! back.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context;
use rusqlite::{params, Connection, OptionalExtension};

use super::record::{rfc3339, Envelope, Record};
use super::schema;
use super::sink::Sink;

pub struct SqliteSink {
    path: PathBuf,
    conn: Option<Connection>,
}

impl SqliteSink {
    pub fn new(path: PathBuf) -> Self {
        Self { path, conn: None }
    }

    /// Runs `f` with the open connection on the blocking pool.
    async fn with<T: Send + 'static>(
        &mut self,
        f: impl FnOnce(&mut Connection) -> anyhow::Result<T> + Send + 'static,
    ) -> anyhow::Result<T> {
        let mut conn = self.conn.take().context("the audit database is not open")?;
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let result = f(&mut conn);
            (conn, result)
        })
        .await
        .context("the audit database task panicked")?;
        // A failed call may have left a transaction open: start over.
        if result.is_ok() {
            self.conn = Some(conn);
        }
        result
    }
}

/// Opens `path` (creating its folder), WAL mode, schema migrated.
pub fn open(path: &Path) -> anyhow::Result<Connection> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut conn = Connection::open(path)
        .with_context(|| format!("cannot open the audit database {}", path.display()))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    migrate(&mut conn)?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch(schema::VERSION_TABLE)?;
    let version: Option<i64> = tx
        .query_row("SELECT version FROM harbormaster_schema", [], |r| r.get(0))
        .optional()?;
    let version = version.unwrap_or(0) as usize;
    for (i, sql) in schema::SQLITE.iter().enumerate().skip(version) {
        tx.execute_batch(sql)
            .with_context(|| format!("audit schema migration {} failed", i + 1))?;
    }
    if version < schema::SQLITE.len() {
        tx.execute("DELETE FROM harbormaster_schema", [])?;
        tx.execute(
            "INSERT INTO harbormaster_schema (version) VALUES (?1)",
            [schema::SQLITE.len() as i64],
        )?;
    }
    tx.commit()?;
    Ok(())
}

fn insert(tx: &rusqlite::Transaction<'_>, e: &Envelope) -> rusqlite::Result<usize> {
    match &e.record {
        Record::Mcp(c) => tx
            .prepare_cached(
                "INSERT OR IGNORE INTO mcp_calls (uid, ts, client, front, session, server, tool,
                 status, latency_ms, request_bytes, response_bytes, error)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )?
            .execute(params![
                e.uid,
                rfc3339(c.ts),
                c.client,
                c.front.as_str(),
                c.session,
                c.server,
                c.tool,
                c.status.as_str(),
                c.latency_ms,
                c.request_bytes as i64,
                c.response_bytes as i64,
                c.error,
            ]),
        Record::Admin(a) => tx
            .prepare_cached(
                "INSERT OR IGNORE INTO admin_actions (uid, ts, action, target, result, peer, via)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                e.uid,
                rfc3339(a.ts),
                a.action,
                a.target,
                a.result,
                a.peer,
                a.via.as_str(),
            ]),
    }
}

impl Sink for SqliteSink {
    async fn connect(&mut self) -> anyhow::Result<()> {
        let path = self.path.clone();
        let conn = tokio::task::spawn_blocking(move || open(&path))
            .await
            .context("the audit database task panicked")??;
        self.conn = Some(conn);
        Ok(())
    }

    async fn write(&mut self, batch: &[Envelope]) -> anyhow::Result<()> {
        let batch = batch.to_vec();
        self.with(move |conn| {
            let tx = conn.transaction()?;
            for e in &batch {
                insert(&tx, e)?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn purge(&mut self, before: SystemTime) -> anyhow::Result<u64> {
        let cutoff = rfc3339(before);
        self.with(move |conn| {
            let tx = conn.transaction()?;
            let mut n = tx.execute("DELETE FROM mcp_calls WHERE ts < ?1", [&cutoff])?;
            n += tx.execute("DELETE FROM admin_actions WHERE ts < ?1", [&cutoff])?;
            tx.commit()?;
            Ok(n as u64)
        })
        .await
    }

    async fn close(&mut self) -> anyhow::Result<()> {
        if self.conn.is_none() {
            return Ok(());
        }
        self.with(|conn| {
            conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
        .await?;
        self.conn = None;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }
}
