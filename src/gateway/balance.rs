//! Choosing an instance among an app's routable ones.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::routes::{AppEntry, Upstream};
use crate::config::Balance;
use crate::health::breaker::Admission;

/// The outcome of choosing an instance.
#[derive(Debug)]
pub enum Pick<'a> {
    Upstream(&'a Arc<Upstream>),
    /// Every candidate's breaker is open; the first half-opens in this long.
    AllOpen {
        retry_after: Duration,
    },
    /// No candidate at all.
    NoneReady,
}

/// Picks an upstream whose breaker admits a request, never `exclude` (used
/// for retries).
pub fn pick(app: &AppEntry, exclude: Option<SocketAddr>, now: Instant) -> Pick<'_> {
    let n = app.upstreams.len();
    // A load and a store, not an atomic add: no `lock` instruction on a
    // line both workers write. Two workers taking a turn at the same
    // moment may take the same one; consecutive requests still rotate.
    let turn = app.shared.next.load(Ordering::Relaxed);
    app.shared
        .next
        .store(turn.wrapping_add(1), Ordering::Relaxed);
    let rotated = || {
        (0..n)
            .map(move |k| &app.upstreams[(turn + k) % n.max(1)])
            .filter(move |u| Some(u.addr) != exclude && !u.is_retired())
    };
    if app.balance == Balance::LeastInFlight {
        // Fewest in flight among closed/half-open breakers; the rotation
        // breaks ties evenly.
        if let Some(best) = rotated()
            .filter(|u| !u.is_open(now))
            .min_by_key(|u| u.in_flight.get())
        {
            if best.admit(now)
                != (Admission::Deny {
                    retry_after: Duration::ZERO,
                })
            {
                return Pick::Upstream(best);
            }
        }
    }
    let mut candidates = 0;
    let mut first_half_open: Option<Duration> = None;
    for u in rotated() {
        candidates += 1;
        match u.admit(now) {
            Admission::Allow | Admission::Trial => return Pick::Upstream(u),
            Admission::Deny { retry_after } => {
                first_half_open = Some(first_half_open.map_or(retry_after, |r| r.min(retry_after)));
            }
        }
    }
    match (candidates, first_half_open) {
        (0, _) => Pick::NoneReady,
        (_, Some(retry_after)) => Pick::AllOpen { retry_after },
        (_, None) => Pick::NoneReady,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AppName;
    use crate::gateway::inflight::Guard;
    use crate::gateway::routes::AppShared;
    use std::sync::Arc;

    fn app(balance: Balance, n: u16) -> AppEntry {
        AppEntry {
            name: AppName::new("web").unwrap(),
            balance,
            trip_on_5xx: false,
            upstreams: (0..n)
                .map(|i| Arc::new(crate::gateway::routes::testing::upstream(i)))
                .collect(),
            shared: Arc::new(AppShared::default()),
        }
    }

    fn chosen(app: &AppEntry, exclude: Option<SocketAddr>) -> Option<&Upstream> {
        match pick(app, exclude, Instant::now()) {
            Pick::Upstream(u) => Some(&**u),
            _ => None,
        }
    }

    fn labels(app: &AppEntry, k: usize) -> Vec<String> {
        (0..k)
            .map(|_| chosen(app, None).unwrap().label.clone())
            .collect()
    }

    #[test]
    fn round_robin_cycles() {
        let a = app(Balance::RoundRobin, 3);
        assert_eq!(labels(&a, 4), ["web#0", "web#1", "web#2", "web#0"]);
    }

    #[test]
    fn least_in_flight_prefers_the_idle_instance() {
        let a = app(Balance::LeastInFlight, 2);
        let _busy = Guard::new(a.upstreams[0].clone());
        assert_eq!(labels(&a, 3), ["web#1", "web#1", "web#1"]);
    }

    #[test]
    fn retry_excludes_the_failed_instance() {
        let a = app(Balance::RoundRobin, 2);
        let first = a.upstreams[0].addr;
        for _ in 0..4 {
            assert_ne!(chosen(&a, Some(first)).unwrap().addr, first);
        }
        let single = app(Balance::RoundRobin, 1);
        assert!(chosen(&single, Some(single.upstreams[0].addr)).is_none());
        assert!(chosen(&app(Balance::RoundRobin, 0), None).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn open_breakers_take_instances_out_of_rotation() {
        let a = app(Balance::RoundRobin, 2);
        // failures = 1: one failure opens a breaker.
        a.upstreams[0].record(false, Instant::now());
        assert_eq!(labels(&a, 3), ["web#1", "web#1", "web#1"]);
        a.upstreams[1].record(false, Instant::now());
        tokio::time::advance(Duration::from_secs(4)).await;
        match pick(&a, None, Instant::now()) {
            Pick::AllOpen { retry_after } => assert_eq!(retry_after, Duration::from_secs(6)),
            other => panic!("{other:?}"),
        }
        // Due for half-open: a trial request goes through.
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(matches!(pick(&a, None, Instant::now()), Pick::Upstream(_)));
    }
}
