//! The audit log: one record per MCP `tools/call` and per mutating admin
//! call, written by ONE writer task behind a bounded queue (`[audit] queue`).
//!
//! Nothing is ever dropped: when the queue is full a caller waits for room
//! (counted in [`StatsSnapshot::waits`]); when the database is away the
//! writer keeps its batch and retries, and the queue holds the rest. A caller
//! that must not act unless its record is sure to be written takes a
//! [`Slot`] first ([`Audit::reserve`]), acts, then fills it.
//!
//! Shutdown (the harbor's `flushing` phase): [`Audit::close`] closes the
//! queue, the writer drains it (reserved slots included), SQLite checkpoints
//! its WAL (`wal_checkpoint(TRUNCATE)`), and `audit_drained` is logged with
//! the count.
//!
//! Sinks: SQLite (`sqlite.rs`, the default, `state_dir/audit.db`) and
//! PostgreSQL (`postgres.rs`, `[audit] url`); `query.rs` reads either back.

mod mcp;
mod postgres;
pub mod query;
mod record;
mod schema;
mod sink;
mod sqlite;
mod stats;
mod writer;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use postgres::PostgresSink;
pub use record::*;
pub use sink::Sink;
pub use sqlite::SqliteSink;
pub use stats::StatsSnapshot;
pub use writer::{Drained, MAX_BATCH, PURGE_EVERY};

use crate::config::{AuditConfig, AuditSink};

/// The queue was closed (the harbor is shutting down): nothing can be recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the audit log is closed (shutting down)")]
pub struct Closed;

/// A handle on the audit log; clones share the one queue and writer.
#[derive(Clone)]
pub struct Audit {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Envelope>,
    stats: Arc<stats::Stats>,
    /// Random per process: with `seq`, the records' idempotency keys.
    boot: u64,
    seq: AtomicU64,
    closing: CancellationToken,
    close_deadline: Arc<Mutex<Duration>>,
    writer: Mutex<Option<tokio::task::JoinHandle<Drained>>>,
    sink: String,
}

/// Room for one record in the queue, taken before acting.
pub struct Slot {
    permit: mpsc::OwnedPermit<Envelope>,
    uid: String,
}

impl Slot {
    pub fn send(self, record: Record) {
        self.permit.send(Envelope {
            uid: self.uid,
            record,
        });
    }
}

impl Audit {
    /// Opens the configured database and starts the writer. SQLite must
    /// open now (a bad path is a setup error); PostgreSQL may be down at
    /// start: the writer keeps connecting, and records wait in the queue.
    pub async fn open(config: &AuditConfig) -> anyhow::Result<Self> {
        let queue = config.queue.get() as usize;
        match &config.sink {
            AuditSink::Sqlite(path) => {
                let mut sink = SqliteSink::new(path.clone());
                sink.connect().await?;
                Ok(Self::with_sink(sink, true, queue, config.retention))
            }
            AuditSink::Postgres(url) => {
                let mut sink = PostgresSink::new(url.clone());
                let connected = match sink.connect().await {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(event = "audit_sink_down", sink = %sink.describe(), error = %format!("{e:#}"), "records wait in the queue until the database is reachable");
                        false
                    }
                };
                Ok(Self::with_sink(sink, connected, queue, config.retention))
            }
        }
    }

    /// Starts the writer on `sink` (`connected`: `sink.connect()` succeeded).
    pub fn with_sink<S: Sink>(sink: S, connected: bool, queue: usize, retention: Duration) -> Self {
        let (tx, rx) = mpsc::channel(queue.max(1));
        let stats = Arc::new(stats::Stats::default());
        let closing = CancellationToken::new();
        let close_deadline = Arc::new(Mutex::new(Duration::from_secs(30)));
        let describe = sink.describe();
        let writer = writer::Writer {
            sink,
            rx,
            stats: stats.clone(),
            closing: closing.clone(),
            close_deadline: close_deadline.clone(),
            retention,
            connected,
        };
        let task = tokio::spawn(writer.run());
        tracing::info!(event = "audit_started", sink = %describe, queue);
        Self {
            inner: Arc::new(Inner {
                tx,
                stats,
                boot: fastrand::u64(..),
                seq: AtomicU64::new(0),
                closing,
                close_deadline,
                writer: Mutex::new(Some(task)),
                sink: describe,
            }),
        }
    }

    /// Takes room for one record, waiting while the queue is full.
    pub async fn reserve(&self) -> Result<Slot, Closed> {
        let tx = self.inner.tx.clone();
        let permit = match tx.clone().try_reserve_owned() {
            Ok(p) => p,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.inner.stats.waits.fetch_add(1, Relaxed);
                tx.reserve_owned().await.map_err(|_| Closed)?
            }
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Closed),
        };
        let seq = self.inner.seq.fetch_add(1, Relaxed);
        let uid = format!("{:016x}-{seq}", self.inner.boot);
        Ok(Slot { permit, uid })
    }

    /// Queues `record`, waiting while the queue is full.
    pub async fn record(&self, record: Record) -> Result<(), Closed> {
        self.reserve().await?.send(record);
        Ok(())
    }

    pub fn stats(&self) -> StatsSnapshot {
        let tx = &self.inner.tx;
        let in_queue = (tx.max_capacity() - tx.capacity()) as u64;
        self.inner
            .stats
            .snapshot(in_queue, tx.max_capacity() as u64)
    }

    /// Closes the queue and waits for the writer to drain it and checkpoint;
    /// `deadline` bounds retries when the database is away. Logs
    /// `audit_drained`. A second call returns at once with zeros.
    pub async fn close(&self, deadline: Duration) -> Drained {
        *self
            .inner
            .close_deadline
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = deadline;
        self.inner.closing.cancel();
        let task = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let Some(task) = task else {
            return Drained::default();
        };
        let drained = task.await.unwrap_or_else(|e| {
            tracing::error!(error = %e, "the audit writer panicked");
            Drained::default()
        });
        tracing::info!(
            event = "audit_drained",
            sink = %self.inner.sink,
            records = drained.drained,
            written = drained.written,
            lost = drained.lost,
        );
        drained
    }
}
