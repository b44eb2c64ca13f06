//! Mutating admin calls in the audit log, through the real binary: over
//! `admin.sock` (the CLI) and over TCP with a token, into SQLite and into a
//! real PostgreSQL server; and a SIGTERM in the middle of a burst of them.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::harbor::{post, testapp_command, Harbor};
use support::postgres::Postgres;
use support::Cmd;

const TOKEN: &str = "audit-test-token-0123456789";

fn config(audit: &str) -> String {
    format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\n[admin]\ntokens = [\"{TOKEN}\"]\n\
         [apps.web]\nroutes = [{{ path = \"/\" }}]\ncommand = {}\n{audit}",
        testapp_command(&[])
    )
}

/// `harbormaster audit --admin --json` for the harbor's config.
fn admin_rows(h: &Harbor) -> Vec<Value> {
    let config = h.dir.join("harbormaster.toml");
    let out = Cmd::harbormaster(["-c", config.to_str().unwrap(), "audit", "--admin", "--json"])
        .current_dir(&h.dir)
        .run();
    assert_eq!(out.code, 0, "{out:?}");
    out.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn row(r: &Value) -> (String, String, String, String, String) {
    let s = |k: &str| r[k].as_str().unwrap_or("-").to_string();
    let peer = if s("peer") == "socket" {
        "socket".into()
    } else {
        assert!(s("peer").starts_with("127.0.0.1:"), "{r}");
        "tcp".into()
    };
    (s("action"), s("target"), s("result"), peer, s("via"))
}

fn drain_resume_restart_each_recorded_once(audit: &str) {
    let mut h = Harbor::start(&config(audit));
    h.wait_state("web#0", "ready", 0);
    let admin = h.admin();
    for verb in [
        &["drain", "web"][..],
        &["resume", "web"],
        &["restart", "web"],
    ] {
        let out = support::verb(&h.dir, verb);
        assert_eq!(out.code, 0, "{verb:?}: {out:?}");
    }
    assert_eq!(support::verb(&h.dir, &["drain", "nope"]).code, 1);
    for action in ["drain", "resume", "restart"] {
        let (code, body) = post(admin, &format!("/v1/apps/web/{action}"), Some(TOKEN));
        assert_eq!(code, 202, "{action}: {body}");
    }
    // Refused before it acts: not an admin action, not recorded.
    assert_eq!(post(admin, "/v1/apps/web/drain", None).0, 401);
    assert_eq!(
        post(admin, "/v1/apps/web/drain", Some("wrong-token-0123456789")).0,
        401
    );
    // The writer's counters are in /health.
    let health = || -> Value {
        let (_, body) = support::harbor::fetch(admin, "x", "/health").unwrap();
        serde_json::from_str(&body).unwrap()
    };
    assert_eq!(health()["audit"]["queue_capacity"], 10000);
    support::harbor::eventually(Duration::from_secs(20), "7 records written", || {
        health()["audit"]["written"].as_u64() == Some(7)
    });
    // Read while harbormaster runs (and writes).
    assert_eq!(admin_rows(&h).len(), 7);
    let out = support::verb(&h.dir, &["reload"]);
    assert_eq!(out.code, 0, "{out:?}");
    assert_eq!(post(admin, "/v1/shutdown", Some(TOKEN)).0, 202);
    assert_eq!(h.wait_exit(Duration::from_secs(30)), Some(0));
    let drained = h.wait_for(Duration::from_secs(1), |e| e["event"] == "audit_drained");
    assert_eq!(drained["lost"], 0, "{drained}");

    let rows: Vec<_> = admin_rows(&h).iter().map(row).collect();
    let t = |a: &str, target: &str, result: &str, peer: &str, via: &str| {
        (
            a.into(),
            target.into(),
            result.into(),
            peer.into(),
            via.into(),
        )
    };
    assert_eq!(
        rows,
        vec![
            t("drain", "web", "ok", "socket", "socket"),
            t("resume", "web", "ok", "socket", "socket"),
            t("restart", "web", "ok", "socket", "socket"),
            t("drain", "nope", "failed (404)", "socket", "socket"),
            t("drain", "web", "ok", "tcp", "token"),
            t("resume", "web", "ok", "tcp", "token"),
            t("restart", "web", "ok", "tcp", "token"),
            t("reload", "-", "ok", "socket", "socket"),
            t("shutdown", "-", "ok", "tcp", "token"),
        ]
    );
}

#[test]
fn admin_actions_are_recorded_exactly_once_in_sqlite() {
    drain_resume_restart_each_recorded_once("[audit]\n");
}

/// A PostgreSQL server with database `db`, and the `[audit]` table naming it.
fn postgres_audit(db: &str) -> (Postgres, String) {
    let pg = Postgres::start();
    let url = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(pg.create_db(db));
    (pg, format!("[audit]\nurl = \"{url}\"\n"))
}

#[test]
fn admin_actions_are_recorded_exactly_once_in_postgres() {
    let (_pg, audit) = postgres_audit("admin_once");
    drain_resume_restart_each_recorded_once(&audit);
}

/// 8 clients draining and resuming `web` over TCP as fast as they can.
#[derive(Default)]
struct Counts {
    answered: AtomicUsize,
    /// 503 from a closed audit log: nothing changed, nothing recorded.
    refused_closed: AtomicUsize,
    attempted: AtomicUsize,
    stop: AtomicBool,
}

struct Burst {
    counts: Arc<Counts>,
    clients: Vec<std::thread::JoinHandle<()>>,
}

impl Burst {
    fn start(admin: std::net::SocketAddr) -> Self {
        let counts = Arc::new(Counts::default());
        let clients = (0..8)
            .map(|i| {
                let c = counts.clone();
                std::thread::spawn(move || {
                    for n in 0.. {
                        if c.stop.load(SeqCst) {
                            return;
                        }
                        let action = if (i + n) % 2 == 0 { "drain" } else { "resume" };
                        c.attempted.fetch_add(1, SeqCst);
                        let headers = format!("Authorization: Bearer {TOKEN}\r\n");
                        let path = format!("/v1/apps/web/{action}");
                        match support::harbor::request(admin, "POST", "x", &path, &headers) {
                            Some((503, body)) if body.contains("audit log is closed") => {
                                c.refused_closed.fetch_add(1, SeqCst);
                            }
                            Some(_) => {
                                c.answered.fetch_add(1, SeqCst);
                            }
                            None => return, // the admin listener is gone
                        }
                    }
                })
            })
            .collect();
        Self { counts, clients }
    }

    fn answered(&self) -> usize {
        self.counts.answered.load(SeqCst)
    }

    fn wait_answered(&self, n: usize) {
        support::harbor::eventually(
            Duration::from_secs(30),
            &format!("{n} answered calls"),
            || self.answered() >= n,
        );
    }

    /// After harbormaster exited: every answered call has its row.
    fn check(mut self, h: &Harbor) {
        self.counts.stop.store(true, SeqCst);
        for c in std::mem::take(&mut self.clients) {
            c.join().unwrap();
        }
        let answered = self.answered();
        let drained = h.wait_for(Duration::from_secs(1), |e| e["event"] == "audit_drained");
        let rows = admin_rows(h);
        eprintln!(
            "answered {answered}, refused as closed {}, rows {}, {drained}",
            self.counts.refused_closed.load(SeqCst),
            rows.len()
        );
        assert!(
            rows.len() >= answered,
            "{} rows for {answered} answered calls; {drained}",
            rows.len(),
        );
        assert!(rows.len() <= self.counts.attempted.load(SeqCst));
        assert_eq!(drained["lost"], 0);
        assert!(rows
            .iter()
            .all(|r| r["via"] == "token" && r["result"] == "ok"));
    }
}

/// SIGTERM in the middle of a burst: every call that got an answer (but the
/// 503s of a closed audit log) has its row.
fn sigterm_during_a_burst(audit: &str) {
    let mut h = Harbor::start(&config(audit));
    h.wait_state("web#0", "ready", 0);
    let burst = Burst::start(h.admin());
    burst.wait_answered(40);
    h.signal(nix::sys::signal::Signal::SIGTERM);
    eprintln!("{} answered at SIGTERM", burst.answered());
    assert_eq!(h.wait_exit(Duration::from_secs(60)), Some(0));
    burst.check(&h);
}

#[test]
fn sigterm_during_a_burst_of_admin_calls_loses_no_answered_one_sqlite() {
    sigterm_during_a_burst("[audit]\n");
}

#[test]
fn sigterm_during_a_burst_of_admin_calls_loses_no_answered_one_postgres() {
    let (_pg, audit) = postgres_audit("burst");
    sigterm_during_a_burst(&audit);
}

/// PostgreSQL stopped and started again under a burst of admin calls, with
/// a queue of 5: callers wait while it is away, and every answered call
/// (before, during and after) has its row.
#[test]
fn postgres_restarted_under_a_burst_of_admin_calls_loses_none() {
    let (mut pg, audit) = postgres_audit("restart_burst");
    let mut h = Harbor::start(&config(&audit.replace("[audit]\n", "[audit]\nqueue = 5\n")));
    h.wait_state("web#0", "ready", 0);
    let burst = Burst::start(h.admin());
    burst.wait_answered(40);
    pg.stop();
    h.wait_for(Duration::from_secs(20), |e| e["event"] == "audit_sink_down");
    let during = burst.answered();
    pg.resume();
    h.wait_for(Duration::from_secs(30), |e| e["event"] == "audit_sink_back");
    burst.wait_answered(during + 40);
    h.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(h.wait_exit(Duration::from_secs(60)), Some(0));
    burst.check(&h);
}
