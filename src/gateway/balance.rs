//! Choosing an instance among an app's routable ones.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use super::routes::{AppEntry, Upstream};
use crate::config::Balance;

/// Picks an upstream, never `exclude` when another exists (used for retries).
pub fn pick(app: &AppEntry, exclude: Option<SocketAddr>) -> Option<&Upstream> {
    let ups = &app.upstreams;
    let candidates = || ups.iter().filter(move |u| Some(u.addr) != exclude);
    let n = candidates().count();
    if n == 0 {
        return None;
    }
    let turn = app.shared.next.fetch_add(1, Ordering::Relaxed);
    match app.balance {
        Balance::RoundRobin => candidates().nth(turn % n),
        // Fewest in flight; rotate the start so ties spread evenly.
        Balance::LeastInFlight => candidates()
            .cycle()
            .skip(turn % n)
            .take(n)
            .min_by_key(|u| u.in_flight.get()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AppName;
    use crate::gateway::inflight::{Counter, Guard};
    use crate::gateway::routes::AppShared;
    use std::sync::Arc;

    fn app(balance: Balance, n: u16) -> AppEntry {
        AppEntry {
            name: AppName::new("web").unwrap(),
            balance,
            upstreams: (0..n)
                .map(|i| {
                    Upstream::new(
                        format!("web#{i}"),
                        ([127, 0, 0, 1], 1000 + i).into(),
                        Arc::default(),
                    )
                })
                .collect(),
            shared: Arc::new(AppShared::default()),
        }
    }

    fn labels(app: &AppEntry, k: usize) -> Vec<String> {
        (0..k)
            .map(|_| pick(app, None).unwrap().label.clone())
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
        let g = Arc::new(Counter::default());
        let _busy = Guard::new(&g, &g, &a.upstreams[0].in_flight);
        assert_eq!(labels(&a, 3), ["web#1", "web#1", "web#1"]);
    }

    #[test]
    fn retry_excludes_the_failed_instance() {
        let a = app(Balance::RoundRobin, 2);
        let first = a.upstreams[0].addr;
        for _ in 0..4 {
            assert_ne!(pick(&a, Some(first)).unwrap().addr, first);
        }
        let single = app(Balance::RoundRobin, 1);
        assert!(pick(&single, Some(single.upstreams[0].addr)).is_none());
        assert!(pick(&app(Balance::RoundRobin, 0), None).is_none());
    }
}
