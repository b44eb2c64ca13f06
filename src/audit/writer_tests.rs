//! The writer against sinks made for the test: slow, failing, counting.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::super::*;

/// Stores uids; each write takes `delay`; fails while `down` is set.
#[derive(Clone, Default)]
struct TestSink {
    rows: Arc<Mutex<Vec<String>>>,
    batches: Arc<Mutex<Vec<usize>>>,
    down: Arc<std::sync::atomic::AtomicBool>,
    delay: Duration,
}

impl Sink for TestSink {
    async fn connect(&mut self) -> anyhow::Result<()> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            anyhow::bail!("down");
        }
        Ok(())
    }

    async fn write(&mut self, batch: &[Envelope]) -> anyhow::Result<()> {
        tokio::time::sleep(self.delay).await;
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            anyhow::bail!("down");
        }
        self.batches.lock().unwrap().push(batch.len());
        self.rows
            .lock()
            .unwrap()
            .extend(batch.iter().map(|e| e.uid.clone()));
        Ok(())
    }

    async fn purge(&mut self, _before: SystemTime) -> anyhow::Result<u64> {
        Ok(0)
    }

    async fn close(&mut self) -> anyhow::Result<()> {
        Ok(())
    }

    fn describe(&self) -> String {
        "test".into()
    }
}

fn action(n: usize) -> Record {
    Record::Admin(AdminAction {
        ts: SystemTime::now(),
        action: "drain".into(),
        target: Some(format!("app{n}")),
        result: "ok".into(),
        peer: "socket".into(),
        via: Via::Socket,
    })
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_makes_callers_wait_and_drops_nothing() {
    let sink = TestSink {
        delay: Duration::from_millis(50),
        ..Default::default()
    };
    let audit = Audit::with_sink(sink.clone(), true, 2, Duration::from_secs(3600));
    let callers: Vec<_> = (0..200)
        .map(|n| {
            let audit = audit.clone();
            tokio::spawn(async move { audit.record(action(n)).await })
        })
        .collect();
    for c in callers {
        c.await.unwrap().unwrap();
    }
    let stats = audit.stats();
    assert!(
        stats.waits > 0,
        "200 callers on a queue of 2 must wait: {stats:?}"
    );
    let drained = audit.close(Duration::from_secs(5)).await;
    let rows = sink.rows.lock().unwrap().clone();
    assert_eq!(rows.len(), 200, "every record written");
    assert_eq!(rows.iter().collect::<HashSet<_>>().len(), 200, "each once");
    assert_eq!(drained.written, 200);
    assert_eq!(drained.lost, 0);
    assert_eq!(audit.stats().written, 200);
    assert_eq!(audit.stats().queue_depth, 0);
    // Batches: more than one record per transaction while callers waited.
    assert!(sink.batches.lock().unwrap().iter().any(|&n| n > 1));
    // Closed: a new record is refused, not lost silently.
    assert_eq!(audit.record(action(0)).await, Err(Closed));
}

#[tokio::test(start_paused = true)]
async fn records_wait_while_the_database_is_away() {
    let sink = TestSink::default();
    sink.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let audit = Audit::with_sink(sink.clone(), false, 1000, Duration::from_secs(3600));
    for n in 0..100 {
        audit.record(action(n)).await.unwrap();
    }
    // Let the writer fail a few times.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(audit.stats().write_errors >= 2, "{:?}", audit.stats());
    assert_eq!(audit.stats().queue_depth, 100);
    assert!(sink.rows.lock().unwrap().is_empty());
    sink.down.store(false, std::sync::atomic::Ordering::SeqCst);
    let drained = audit.close(Duration::from_secs(30)).await;
    assert_eq!(drained.drained, 100);
    assert_eq!(sink.rows.lock().unwrap().len(), 100);
}

#[tokio::test(start_paused = true)]
async fn a_slot_taken_before_the_close_is_still_written() {
    let sink = TestSink::default();
    let audit = Audit::with_sink(sink.clone(), true, 10, Duration::from_secs(3600));
    let slot = audit.reserve().await.unwrap();
    let closing = {
        let audit = audit.clone();
        tokio::spawn(async move { audit.close(Duration::from_secs(5)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !closing.is_finished(),
        "the writer waits for the reserved slot"
    );
    assert!(
        audit.reserve().await.is_err(),
        "no new slot after the close"
    );
    slot.send(action(1));
    let drained = closing.await.unwrap();
    assert_eq!(drained.drained, 1);
    assert_eq!(sink.rows.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_database_away_past_the_close_deadline_counts_the_lost() {
    let sink = TestSink::default();
    sink.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let audit = Audit::with_sink(sink.clone(), false, 100, Duration::from_secs(3600));
    for n in 0..10 {
        audit.record(action(n)).await.unwrap();
    }
    let drained = audit.close(Duration::from_secs(2)).await;
    assert_eq!(drained.lost, 10);
    assert_eq!(drained.written, 0);
}
