//! What the writer needs from a database: connect (and migrate), write one
//! batch in one transaction, delete old rows, close. One implementation per
//! database (`sqlite.rs`, `postgres.rs`); tests bring slow or failing ones.

use std::future::Future;
use std::time::SystemTime;

use super::record::Envelope;

pub trait Sink: Send + 'static {
    /// Connects (again, after a failure) and brings the schema up to date.
    fn connect(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Writes `batch` in one transaction: all rows or none. A record whose
    /// `uid` is already stored is skipped (a retried commit).
    fn write(&mut self, batch: &[Envelope]) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// Deletes rows older than `before`; returns how many.
    fn purge(&mut self, before: SystemTime) -> impl Future<Output = anyhow::Result<u64>> + Send;
    /// After the last write: SQLite checkpoints its WAL (TRUNCATE).
    fn close(&mut self) -> impl Future<Output = anyhow::Result<()>> + Send;
    /// For logs: `sqlite:/path` or `postgres:DBNAME`.
    fn describe(&self) -> String;
}
