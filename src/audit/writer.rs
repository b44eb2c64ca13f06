//! The one writer task: takes records off the queue in batches, writes each
//! batch in one transaction, retries (reconnecting) until the database
//! takes it, deletes rows past `retention` every hour, and on close drains
//! the queue and checkpoints.
//!
//! A failed batch is kept and retried as it is; meanwhile new records wait in
//! the bounded queue and callers wait for room — nothing is dropped. Only
//! when the queue was closed (shutdown) and the database stays away longer
//! than the close deadline are the rest given up, counted as `lost`.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::record::Envelope;
use super::sink::Sink;
use super::stats::Stats;

/// Records per transaction, at most.
pub const MAX_BATCH: usize = 512;
/// How often rows past `retention` are deleted (also once at start).
pub const PURGE_EVERY: Duration = Duration::from_secs(3600);
/// A connect or a batch that takes longer failed (a silently gone server).
const OP_TIMEOUT: Duration = Duration::from_secs(30);
const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// How long a batch waits for more records before it is written: without
/// it, a steady trickle (one MCP call every few hundred µs) makes one
/// transaction per record. Callers never wait for it.
pub const LINGER: Duration = Duration::from_millis(2);
const BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What the writer did after the queue was closed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drained {
    /// Records written after the close (they were queued then).
    pub drained: u64,
    /// Records written in the writer's life.
    pub written: u64,
    /// Records given up: the database stayed away past the close deadline.
    pub lost: u64,
}

pub struct Writer<S> {
    pub sink: S,
    pub rx: mpsc::Receiver<Envelope>,
    pub stats: Arc<Stats>,
    pub closing: CancellationToken,
    /// Set by whoever closes: how long to keep retrying after the close.
    pub close_deadline: Arc<std::sync::Mutex<Duration>>,
    pub retention: Duration,
    pub connected: bool,
}

impl<S: Sink> Writer<S> {
    /// Whatever is queued now, up to a full batch.
    fn fill(&mut self, batch: &mut Vec<Envelope>) {
        while batch.len() < MAX_BATCH {
            match self.rx.try_recv() {
                Ok(e) => batch.push(e),
                Err(_) => break,
            }
        }
    }

    pub async fn run(mut self) -> Drained {
        let mut batch: Vec<Envelope> = Vec::with_capacity(MAX_BATCH);
        let mut closed_at: Option<Instant> = None;
        let mut out = Drained::default();
        let mut next_purge = Instant::now();
        let mut backoff = BACKOFF_MIN;
        let mut failures = 0u64;
        if self.connected {
            self.purge().await;
            next_purge = Instant::now() + PURGE_EVERY;
        }
        loop {
            if closed_at.is_none() && self.closing.is_cancelled() {
                self.rx.close();
                closed_at = Some(Instant::now());
            }
            if batch.is_empty() {
                let next = tokio::select! {
                    biased;
                    r = self.rx.recv() => r,
                    _ = self.closing.cancelled(), if closed_at.is_none() => continue,
                    _ = tokio::time::sleep_until(next_purge), if self.connected => {
                        self.purge().await;
                        next_purge = Instant::now() + PURGE_EVERY;
                        continue;
                    }
                };
                match next {
                    Some(e) => batch.push(e),
                    None => break,
                }
            }
            self.fill(&mut batch);
            if failures == 0 && closed_at.is_none() && batch.len() < MAX_BATCH {
                let until = Instant::now() + LINGER;
                while batch.len() < MAX_BATCH {
                    match tokio::time::timeout_at(until, self.rx.recv()).await {
                        Ok(Some(e)) => {
                            batch.push(e);
                            self.fill(&mut batch);
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            }
            self.stats.queued.store(batch.len() as u64, Relaxed);
            match self.write(&batch).await {
                Ok(()) => {
                    let n = batch.len() as u64;
                    self.stats.written.fetch_add(n, Relaxed);
                    out.written += n;
                    if closed_at.is_some() {
                        out.drained += n;
                    }
                    batch.clear();
                    self.stats.queued.store(0, Relaxed);
                    if failures > 0 {
                        tracing::info!(event = "audit_sink_back", sink = %self.sink.describe(), failed_attempts = failures);
                    }
                    failures = 0;
                    backoff = BACKOFF_MIN;
                }
                Err(e) => {
                    self.stats.write_errors.fetch_add(1, Relaxed);
                    if failures == 0 {
                        tracing::warn!(event = "audit_sink_down", sink = %self.sink.describe(), error = %format!("{e:#}"), pending = batch.len(), "records wait in the queue until the database is back");
                    }
                    failures += 1;
                    let limit = *self
                        .close_deadline
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    if closed_at.is_some_and(|t| t.elapsed() >= limit) {
                        out.lost = batch.len() as u64 + self.give_up();
                        tracing::error!(event = "audit_lost", sink = %self.sink.describe(), lost = out.lost, error = %format!("{e:#}"), "the audit database stayed away past the shutdown deadline");
                        return out;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.closing.cancelled(), if closed_at.is_none() => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
        if self.connected {
            if let Err(e) = self.sink.close().await {
                tracing::warn!(sink = %self.sink.describe(), error = %format!("{e:#}"), "audit database checkpoint failed");
            }
        }
        out
    }

    async fn write(&mut self, batch: &[Envelope]) -> anyhow::Result<()> {
        let timed_out = || anyhow::anyhow!("no answer within {OP_TIMEOUT:?}");
        if !self.connected {
            tokio::time::timeout(OP_TIMEOUT, self.sink.connect())
                .await
                .map_err(|_| timed_out())??;
            self.connected = true;
        }
        let result = tokio::time::timeout(OP_TIMEOUT, self.sink.write(batch))
            .await
            .map_err(|_| timed_out())
            .and_then(|r| r);
        self.connected = result.is_ok();
        result
    }

    async fn purge(&mut self) {
        let Some(before) = SystemTime::now().checked_sub(self.retention) else {
            return;
        };
        match self.sink.purge(before).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(event = "audit_purged", rows = n, older_than = %super::record::rfc3339(before))
            }
            Err(e) => {
                self.connected = false;
                self.stats.write_errors.fetch_add(1, Relaxed);
                tracing::warn!(error = %format!("{e:#}"), "deleting old audit rows failed; retried in an hour");
            }
        }
    }

    /// Counts what is left in the closed queue.
    fn give_up(&mut self) -> u64 {
        let mut n = 0;
        while self.rx.try_recv().is_ok() {
            n += 1;
        }
        n
    }
}

#[cfg(test)]
#[path = "writer_tests.rs"]
mod tests;
