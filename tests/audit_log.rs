//! The audit writer against REAL databases (SQLite files and a PostgreSQL
//! server started for the test), and `harbormaster audit` reading them back.

mod support;

use std::num::NonZeroU32;
use std::path::Path;
use std::time::{Duration, SystemTime};

use harbormaster::audit::{
    AdminAction, Audit, CallStatus, Front, McpCall, Record, StatsSnapshot, Via,
};
use harbormaster::config::{AuditConfig, AuditSink};
use support::postgres::Postgres;
use support::Cmd;

const DAY: Duration = Duration::from_secs(86400);

fn config(sink: AuditSink, queue: u32) -> AuditConfig {
    AuditConfig {
        sink,
        queue: NonZeroU32::new(queue).unwrap(),
        retention: 30 * DAY,
    }
}

fn call(n: usize, client: &str, status: CallStatus, age: Duration) -> Record {
    Record::Mcp(McpCall {
        ts: SystemTime::now() - age,
        client: client.into(),
        front: Front::Http,
        session: Some("s1".into()),
        server: "srv".into(),
        tool: format!("srv__tool{}", n % 3),
        status,
        latency_ms: 1.5,
        request_bytes: 100,
        response_bytes: 200,
        error: (status != CallStatus::Ok).then(|| status.as_str().to_string()),
    })
}

/// Polls `cond` on the audit's counters until it holds (generous deadline).
async fn until(audit: &Audit, what: &str, cond: impl Fn(&StatsSnapshot) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !cond(&audit.stats()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}: {:?}",
            audit.stats()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `n` producers × `each` records, at once.
fn produce(audit: &Audit, n: usize, each: usize) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|p| {
            let audit = audit.clone();
            tokio::spawn(async move {
                for i in 0..each {
                    let record = call(
                        p * each + i,
                        &format!("c{p}"),
                        CallStatus::Ok,
                        Duration::ZERO,
                    );
                    audit.record(record).await.expect("queue open");
                    if i % 50 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect()
}

fn sqlite_count(path: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_in_the_middle_of_a_load_loses_nothing() {
    let mut pg = Postgres::start();
    let url = pg.create_db("restart_load").await;
    let audit = Audit::open(&config(AuditSink::Postgres(url.clone()), 500))
        .await
        .unwrap();
    let producers = produce(&audit, 10, 600);
    until(&audit, "some records written", |s| s.written >= 500).await;
    tokio::task::block_in_place(|| pg.stop());
    until(&audit, "a failed write", |s| s.write_errors > 0).await;
    until(&audit, "records waiting", |s| s.queue_depth > 0).await;
    tokio::task::block_in_place(|| pg.resume());
    for p in producers {
        p.await.unwrap();
    }
    let drained = audit.close(Duration::from_secs(30)).await;
    assert_eq!(drained.lost, 0);
    assert_eq!(drained.written, 6000);
    assert_eq!(
        Postgres::count(&url, "SELECT count(*) FROM mcp_calls").await,
        6000
    );
    assert_eq!(
        Postgres::count(&url, "SELECT count(DISTINCT uid) FROM mcp_calls").await,
        6000
    );
    let stats = audit.stats();
    assert!(stats.write_errors > 0, "{stats:?}");
    assert!(
        stats.waits > 0,
        "a queue of 500 under 6000 records: {stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_holds_every_record_once_and_is_checkpointed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state/audit.db");
    let audit = Audit::open(&config(AuditSink::Sqlite(path.clone()), 100))
        .await
        .unwrap();
    for p in produce(&audit, 10, 500) {
        p.await.unwrap();
    }
    let drained = audit.close(Duration::from_secs(10)).await;
    assert_eq!((drained.written, drained.lost), (5000, 0));
    assert_eq!(sqlite_count(&path, "SELECT count(*) FROM mcp_calls"), 5000);
    assert_eq!(
        sqlite_count(&path, "SELECT count(DISTINCT uid) FROM mcp_calls"),
        5000
    );
    let wal = path.with_file_name("audit.db-wal");
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    assert_eq!(wal_len, 0, "wal_checkpoint(TRUNCATE) empties the WAL");
    assert_eq!(
        sqlite_count(&path, "SELECT version FROM harbormaster_schema"),
        1
    );
}

/// Old rows (by their `ts`) go when the writer starts, and every hour.
async fn retention(sink: AuditSink, count: impl AsyncFn(&str) -> i64) {
    let audit = Audit::open(&config(sink.clone(), 10)).await.unwrap();
    for n in 0..5 {
        audit
            .record(call(n, "a", CallStatus::Ok, 40 * DAY))
            .await
            .unwrap();
        audit
            .record(call(n, "a", CallStatus::Ok, DAY))
            .await
            .unwrap();
    }
    let old_admin = AdminAction {
        ts: SystemTime::now() - 31 * DAY,
        action: "drain".into(),
        target: Some("web".into()),
        result: "ok".into(),
        peer: "socket".into(),
        via: Via::Socket,
    };
    audit.record(Record::Admin(old_admin)).await.unwrap();
    audit.close(Duration::from_secs(10)).await;
    assert_eq!(count("SELECT count(*) FROM mcp_calls").await, 10);
    assert_eq!(count("SELECT count(*) FROM admin_actions").await, 1);
    // The next start deletes what is older than 30 days.
    let audit = Audit::open(&config(sink, 10)).await.unwrap();
    audit.close(Duration::from_secs(10)).await;
    assert_eq!(count("SELECT count(*) FROM mcp_calls").await, 5);
    assert_eq!(count("SELECT count(*) FROM admin_actions").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_old_rows_in_sqlite_and_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.db");
    let p = path.clone();
    retention(AuditSink::Sqlite(path), async |sql: &str| {
        sqlite_count(&p, sql)
    })
    .await;

    let pg = Postgres::start();
    let url = pg.create_db("retention").await;
    let u = url.clone();
    retention(AuditSink::Postgres(url), async |sql: &str| {
        Postgres::count(&u, sql).await
    })
    .await;
}

/// Seeds a database with a known mix, then asks `harbormaster audit`.
async fn cli_filters(dir: &Path, audit_table: &str, sink: AuditSink) {
    std::fs::write(
        dir.join("harbormaster.toml"),
        format!("[runtime]\nstate_dir = \"state\"\n{audit_table}"),
    )
    .unwrap();
    let audit = Audit::open(&config(sink, 10)).await.unwrap();
    let seed = [
        call(0, "alice", CallStatus::Ok, Duration::ZERO),
        call(1, "alice", CallStatus::Denied, Duration::ZERO),
        call(2, "bob", CallStatus::RateLimited, Duration::ZERO),
        call(3, "bob", CallStatus::Ok, Duration::ZERO),
        call(
            4,
            "bob",
            CallStatus::Killed,
            2 * 3600 * Duration::from_secs(1),
        ),
    ];
    for r in seed {
        audit.record(r).await.unwrap();
    }
    let action = AdminAction {
        ts: SystemTime::now(),
        action: "restart".into(),
        target: Some("web".into()),
        result: "ok".into(),
        peer: "127.0.0.1:5555".into(),
        via: Via::Token,
    };
    audit.record(Record::Admin(action)).await.unwrap();
    audit.close(Duration::from_secs(10)).await;

    let dir = dir.to_path_buf();
    let run = move |args: &[&str]| {
        let mut all = vec!["-c", "harbormaster.toml", "audit"];
        all.extend_from_slice(args);
        let out = Cmd::harbormaster(all).current_dir(&dir).run();
        assert_eq!(out.code, 0, "{out:?}");
        out.stdout
    };
    let json = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        run(&all)
            .lines()
            .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
            .collect()
    };
    tokio::task::block_in_place(|| {
        assert_eq!(json(&[]).len(), 5);
        let denied = json(&["--status", "denied"]);
        assert_eq!(denied.len(), 1);
        assert_eq!(denied[0]["client"], "alice");
        assert_eq!(denied[0]["tool"], "srv__tool1");
        assert_eq!(denied[0]["status"], "denied");
        assert_eq!(denied[0]["front"], "http");
        assert_eq!(json(&["--client", "bob"]).len(), 3);
        assert_eq!(json(&["--client", "bob", "--since", "1h"]).len(), 2);
        let tools = json(&["--tool", "srv__tool[02]"]);
        let names: Vec<&str> = tools.iter().map(|r| r["tool"].as_str().unwrap()).collect();
        assert_eq!(names, ["srv__tool0", "srv__tool2", "srv__tool0"]);
        let admin = json(&["--admin"]);
        assert_eq!(admin.len(), 1);
        assert_eq!(admin[0]["action"], "restart");
        assert_eq!(admin[0]["via"], "token");
        assert_eq!(admin[0]["peer"], "127.0.0.1:5555");
        let table = run(&["--status", "rate_limited"]);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 2, "{table}");
        assert!(lines[0].starts_with("TIME"), "{table}");
        assert!(
            lines[1].contains("bob") && lines[1].contains("rate_limited"),
            "{table}"
        );
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_command_filters_sqlite_and_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state/audit.db");
    cli_filters(dir.path(), "[audit]\n", AuditSink::Sqlite(db)).await;

    let pg = Postgres::start();
    let url = pg.create_db("cli").await;
    let dir = tempfile::tempdir().unwrap();
    let table = format!("[audit]\nurl = \"{url}\"\n");
    cli_filters(dir.path(), &table, AuditSink::Postgres(url)).await;
}

#[test]
fn audit_command_explains_a_bad_status_and_an_audit_that_is_off() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("harbormaster.toml"), "").unwrap();
    let out = Cmd::harbormaster(["-c", "harbormaster.toml", "audit"])
        .current_dir(dir.path())
        .run();
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("the audit log is off"), "{out:?}");
    let out = Cmd::harbormaster(["-c", "harbormaster.toml", "audit", "--status", "nope"])
        .current_dir(dir.path())
        .run();
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("rate_limited"), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_follow_prints_records_as_they_are_written() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("harbormaster.toml"), "[audit]\n").unwrap();
    let sink = AuditSink::Sqlite(dir.path().join(".harbormaster/audit.db"));
    let audit = Audit::open(&config(sink.clone(), 10)).await.unwrap();
    audit
        .record(call(0, "first", CallStatus::Ok, Duration::ZERO))
        .await
        .unwrap();
    until(&audit, "the first row", |s| s.written == 1).await;
    let mut follower = std::process::Command::new(env!("CARGO_BIN_EXE_harbormaster"))
        .args([
            "-c",
            "harbormaster.toml",
            "audit",
            "--json",
            "-f",
            "--tool",
            "*tool1",
        ])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    // Rows the glob filters out come first.
    for n in [3, 5, 1] {
        let status = if n == 1 {
            CallStatus::Timeout
        } else {
            CallStatus::Ok
        };
        audit
            .record(call(n, "later", status, Duration::ZERO))
            .await
            .unwrap();
    }
    let line = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the follower prints the new row");
    let _ = follower.kill();
    let _ = follower.wait();
    let row: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(row["client"], "later");
    assert_eq!(row["tool"], "srv__tool1");
    assert_eq!(row["status"], "timeout");
    audit.close(Duration::from_secs(10)).await;
}
