// Deadlines here bound waits on real processes and sockets.
#![allow(clippy::disallowed_types)]

//! HTTP/2 fan-out against the upstream connection limit: 2,000 streams on
//! 20 connections. Its own test binary, so it never shares the 2 cores with
//! the hardening tests' floods (cargo runs test binaries one at a time).

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::external::{behind, breaker_opened};
use support::harbor::Backend;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_share_a_bounded_number_of_upstream_connections() {
    // 50: most streams wait for a connection, some get 503 "upstream busy".
    h2_streams_to_a_slow_endpoint(Some(50)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_stay_within_the_default_upstream_connection_limit() {
    h2_streams_to_a_slow_endpoint(None).await;
}

/// 20 HTTP/2 connections × 100 streams to a 1 s endpoint: harbormaster's
/// descriptors stay below `max_upstream_connections` + connections + 100,
/// and `/live` answers throughout.
async fn h2_streams_to_a_slow_endpoint(max_upstream_connections: Option<usize>) {
    let backend = Backend::start(&[]);
    let gateway = match max_upstream_connections {
        Some(n) => format!("max_upstream_connections = {n}\nupstream_connect_timeout = \"3s\""),
        None => String::new(),
    };
    let (h, gw) = behind(&gateway, &[backend.port], "");
    let (pid, admin) = (h.pid(), h.admin());
    let bound = max_upstream_connections.unwrap_or(512) + 20 + 100;
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let done = done.clone();
        std::thread::spawn(move || {
            let (mut most, mut live_failures) = (0, 0);
            while !done.load(Ordering::Relaxed) {
                let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .unwrap()
                    .count();
                most = most.max(fds);
                if support::harbor::get(admin.port(), "/live").is_err() {
                    live_failures += 1;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (most, live_failures)
        })
    };
    let mut calls = Vec::new();
    for _ in 0..20 {
        let client = reqwest::Client::builder()
            .no_proxy()
            .http2_prior_knowledge()
            .build()
            .unwrap();
        for _ in 0..100 {
            let (client, url) = (client.clone(), format!("http://{gw}/slow?ms=1000"));
            calls.push(tokio::spawn(async move {
                match client.get(url).send().await {
                    Ok(res) => res.status().as_u16(),
                    Err(_) => 0,
                }
            }));
        }
    }
    let mut statuses = std::collections::BTreeMap::new();
    for call in calls {
        *statuses.entry(call.await.unwrap()).or_insert(0) += 1;
    }
    done.store(true, Ordering::Relaxed);
    let (most, live_failures) = watcher.join().unwrap();
    assert!(most < bound, "{most} open descriptors (bound {bound})");
    assert_eq!(live_failures, 0, "/live did not answer");
    // Every stream got an answer: served, or 503 while every connection was busy.
    assert!(
        statuses.keys().all(|s| *s == 200 || *s == 503),
        "{statuses:?}"
    );
    assert!(
        statuses.get(&200).copied().unwrap_or(0) >= 100,
        "{statuses:?}"
    );
    assert!(!breaker_opened(&h), "a busy instance is not a broken one");
}
