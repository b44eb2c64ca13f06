//! Token buckets for MCP calls: one per server (all callers together) and
//! one per client. A bucket of `calls` per `per` starts full, holds at most
//! `calls` tokens and refills continuously; a refusal says when the next
//! token comes (`retry_after_ms`). Time is passed in, so tests set it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// `calls` per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub calls: u32,
    pub per: Duration,
}

#[derive(Debug)]
pub struct Bucket {
    limit: Limit,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(limit: Limit, now: Instant) -> Self {
        Self {
            limit,
            tokens: f64::from(limit.calls),
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        let rate = f64::from(self.limit.calls) / self.limit.per.as_secs_f64().max(1e-9);
        self.tokens = (self.tokens + elapsed * rate).min(f64::from(self.limit.calls));
        self.last = now;
    }

    /// How long until a token is there (zero: one is there now).
    pub fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            return Duration::ZERO;
        }
        let rate = f64::from(self.limit.calls) / self.limit.per.as_secs_f64().max(1e-9);
        Duration::from_secs_f64((1.0 - self.tokens) / rate)
    }

    fn take(&mut self) {
        self.tokens -= 1.0;
    }
}

/// Which bucket refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Server(String),
    Client(String),
}

/// A refusal: no token in `scope` for `retry_after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    pub scope: Scope,
    pub retry_after: Duration,
}

impl Limited {
    /// Whole milliseconds, rounded up (never 0 for a real wait).
    pub fn retry_after_ms(&self) -> u64 {
        self.retry_after.as_micros().div_ceil(1000) as u64
    }
}

/// Every bucket; servers and clients without a limit pass freely.
#[derive(Debug, Default)]
pub struct RateLimits {
    servers: HashMap<String, Mutex<Bucket>>,
    clients: HashMap<String, Mutex<Bucket>>,
}

fn lock(m: &Mutex<Bucket>) -> std::sync::MutexGuard<'_, Bucket> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl RateLimits {
    pub fn new(
        servers: impl IntoIterator<Item = (String, Limit)>,
        clients: impl IntoIterator<Item = (String, Limit)>,
        now: Instant,
    ) -> Self {
        let bucket = |(name, limit)| (name, Mutex::new(Bucket::new(limit, now)));
        Self {
            servers: servers.into_iter().map(bucket).collect(),
            clients: clients.into_iter().map(bucket).collect(),
        }
    }

    /// Takes one token from the server's and the client's bucket, or none
    /// (a refused call costs nothing).
    pub fn admit(&self, server: &str, client: &str, now: Instant) -> Result<(), Limited> {
        // Always server before client: one lock order.
        let mut s = self.servers.get(server).map(lock);
        let mut c = self.clients.get(client).map(lock);
        if let Some(b) = s.as_mut() {
            let retry_after = b.wait(now);
            if !retry_after.is_zero() {
                let scope = Scope::Server(server.into());
                return Err(Limited { scope, retry_after });
            }
        }
        if let Some(b) = c.as_mut() {
            let retry_after = b.wait(now);
            if !retry_after.is_zero() {
                let scope = Scope::Client(client.into());
                return Err(Limited { scope, retry_after });
            }
        }
        s.iter_mut().for_each(|b| b.take());
        c.iter_mut().for_each(|b| b.take());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIVE_PER_S: Limit = Limit {
        calls: 5,
        per: Duration::from_secs(1),
    };

    #[tokio::test(start_paused = true)]
    async fn the_sixth_call_within_the_second_waits_200ms() {
        let limits = RateLimits::new([("s".to_string(), FIVE_PER_S)], [], Instant::now());
        for _ in 0..5 {
            limits.admit("s", "alice", Instant::now()).unwrap();
        }
        let refused = limits.admit("s", "alice", Instant::now()).unwrap_err();
        assert_eq!(refused.scope, Scope::Server("s".into()));
        assert_eq!(refused.retry_after_ms(), 200);
        tokio::time::advance(Duration::from_millis(150)).await;
        let refused = limits.admit("s", "alice", Instant::now()).unwrap_err();
        assert_eq!(refused.retry_after_ms(), 50);
        tokio::time::advance(Duration::from_millis(50)).await;
        limits.admit("s", "alice", Instant::now()).unwrap();
        // A bucket never holds more than `calls`.
        tokio::time::advance(Duration::from_secs(60)).await;
        for _ in 0..5 {
            limits.admit("s", "alice", Instant::now()).unwrap();
        }
        assert!(limits.admit("s", "alice", Instant::now()).is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn clients_have_their_own_buckets_and_a_refusal_costs_nothing() {
        let two = Limit {
            calls: 2,
            per: Duration::from_secs(10),
        };
        let limits = RateLimits::new(
            [("s".to_string(), FIVE_PER_S)],
            [("alice".to_string(), two), ("bob".to_string(), two)],
            Instant::now(),
        );
        let now = Instant::now();
        limits.admit("s", "alice", now).unwrap();
        limits.admit("s", "alice", now).unwrap();
        let refused = limits.admit("s", "alice", now).unwrap_err();
        assert_eq!(refused.scope, Scope::Client("alice".into()));
        assert_eq!(refused.retry_after_ms(), 5000);
        // alice's refusals took no server token: bob still gets the 3 left.
        for _ in 0..3 {
            let _ = limits.admit("s", "alice", now);
        }
        limits.admit("s", "bob", now).unwrap();
        limits.admit("s", "bob", now).unwrap();
        limits.admit("s", "carol", now).unwrap();
        let refused = limits.admit("s", "carol", now).unwrap_err();
        assert_eq!(refused.scope, Scope::Server("s".into()));
        // Unlimited server and client: always admitted.
        for _ in 0..100 {
            limits.admit("other", "carol", now).unwrap();
        }
    }
}
