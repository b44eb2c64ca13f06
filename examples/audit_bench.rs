//! Audit writer throughput: P producers record N `McpCall`s as fast as the
//! queue takes them; prints records/s and how often producers waited.
//! Run by `bench/audit.sh` (which also starts a throwaway PostgreSQL).
//!
//! `audit_bench sqlite PATH [N] [P] [QUEUE]` or `audit_bench postgres URL [N] [P] [QUEUE]`

use std::num::NonZeroU32;
use std::time::{Duration, SystemTime};

use harbormaster::audit::{Audit, CallStatus, Front, McpCall, Record};
use harbormaster::config::{AuditConfig, AuditSink};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg =
        |i: usize, default: usize| args.get(i).and_then(|a| a.parse().ok()).unwrap_or(default);
    let sink = match (args.first().map(String::as_str), args.get(1)) {
        (Some("sqlite"), Some(p)) => AuditSink::Sqlite(p.into()),
        (Some("postgres"), Some(u)) => AuditSink::Postgres(u.clone()),
        _ => anyhow::bail!("usage: audit_bench sqlite PATH | postgres URL [N] [P] [QUEUE]"),
    };
    let (n, producers, queue) = (arg(2, 100_000), arg(3, 8), arg(4, 10_000));
    let config = AuditConfig {
        sink,
        queue: NonZeroU32::new(queue as u32).unwrap_or(NonZeroU32::MIN),
        retention: Duration::from_secs(30 * 86400),
    };
    let audit = Audit::open(&config).await?;
    let started = tokio::time::Instant::now();
    let tasks: Vec<_> = (0..producers)
        .map(|p| {
            let audit = audit.clone();
            tokio::spawn(async move {
                for i in 0..n / producers {
                    let call = McpCall {
                        ts: SystemTime::now(),
                        client: format!("client{p}"),
                        front: Front::Http,
                        session: Some(format!("session-{p}")),
                        server: "everything".into(),
                        tool: format!("everything__tool{}", i % 10),
                        status: CallStatus::Ok,
                        latency_ms: 1.25,
                        request_bytes: 180,
                        response_bytes: 420,
                        error: None,
                    };
                    audit.record(Record::Mcp(call)).await.expect("queue open");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    let queued = started.elapsed();
    let drained = audit.close(Duration::from_secs(60)).await;
    let total = started.elapsed();
    let stats = audit.stats();
    println!(
        "records={} producers={producers} queue={queue} enqueue_s={:.3} total_s={:.3} records_per_s={:.0} waits={} write_errors={} lost={}",
        drained.written,
        queued.as_secs_f64(),
        total.as_secs_f64(),
        drained.written as f64 / total.as_secs_f64(),
        stats.waits,
        stats.write_errors,
        drained.lost
    );
    Ok(())
}
