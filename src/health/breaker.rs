//! The circuit breaker of one instance, fed by the gateway's request outcomes.
//!
//! `closed` → `open` after `failures` consecutive failures; open for
//! `open_for`, doubling with each consecutive trip up to `max_open_for`; then
//! `half_open`, which admits `half_open_requests` trial requests: a success
//! closes it, a failure opens it again. Pure: time comes in as arguments
//! (after linkerd's consecutive-failures breaker, without its generics).

use std::time::Duration;

use tokio::time::Instant;

use crate::config::CircuitBreaker;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open { until: Instant },
    HalfOpen,
}

impl BreakerState {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open { .. } => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// May a request go to this instance now?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allow,
    /// Allowed as one of the half-open trial requests.
    Trial,
    /// Not now; half-open in this long (zero: trials are all taken).
    Deny {
        retry_after: Duration,
    },
}

#[derive(Debug, Clone)]
pub struct Breaker {
    cfg: CircuitBreaker,
    state: BreakerState,
    /// Consecutive failures while closed.
    failures: u32,
    /// Consecutive trips without closing in between.
    trips: u32,
    /// Trial requests handed out in this half-open period.
    trials: u32,
}

/// A state change, for the event log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
}

impl Breaker {
    pub fn new(cfg: CircuitBreaker) -> Self {
        Self {
            cfg,
            state: BreakerState::Closed,
            failures: 0,
            trips: 0,
            trials: 0,
        }
    }

    /// The state as of `now` (an expired open period reads as half-open).
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.state {
            BreakerState::Open { until } if now >= until => BreakerState::HalfOpen,
            s => s,
        }
    }

    /// Asks to send one request; may move open → half-open.
    pub fn admit(&mut self, now: Instant) -> (Admission, Option<Transition>) {
        let mut transition = None;
        if let BreakerState::Open { until } = self.state {
            if now < until {
                return (
                    Admission::Deny {
                        retry_after: until - now,
                    },
                    None,
                );
            }
            transition = self.set(BreakerState::HalfOpen);
            self.trials = 0;
        }
        let admission = match self.state {
            BreakerState::Closed => Admission::Allow,
            BreakerState::HalfOpen if self.trials < self.cfg.half_open_requests.get() => {
                self.trials += 1;
                Admission::Trial
            }
            _ => Admission::Deny {
                retry_after: Duration::ZERO,
            },
        };
        (admission, transition)
    }

    /// Closed without a failure since the last success: admitting and
    /// recording a success change nothing (the gateway's lock-free path).
    pub fn is_clean(&self) -> bool {
        self.state == BreakerState::Closed && self.failures == 0
    }

    /// Records how a request went.
    pub fn record(&mut self, success: bool, now: Instant) -> Option<Transition> {
        match (self.state, success) {
            (BreakerState::Closed, true) => {
                self.failures = 0;
                None
            }
            (BreakerState::Closed, false) => {
                self.failures += 1;
                (self.failures >= self.cfg.failures.get())
                    .then(|| self.trip(now))
                    .flatten()
            }
            (BreakerState::HalfOpen, true) => {
                self.failures = 0;
                self.trips = 0;
                self.set(BreakerState::Closed)
            }
            (BreakerState::HalfOpen, false) => self.trip(now),
            // Late results of requests sent before it opened change nothing.
            (BreakerState::Open { .. }, _) => None,
        }
    }

    fn trip(&mut self, now: Instant) -> Option<Transition> {
        let open_for = self
            .cfg
            .open_for
            .saturating_mul(1u32 << self.trips.min(20))
            .min(self.cfg.max_open_for);
        self.trips += 1;
        self.failures = 0;
        self.set(BreakerState::Open {
            until: now + open_for,
        })
    }

    fn set(&mut self, to: BreakerState) -> Option<Transition> {
        let from = std::mem::replace(&mut self.state, to);
        (from != to).then_some(Transition { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::num::NonZeroU32;

    fn breaker(failures: u32, half_open: u32) -> Breaker {
        Breaker::new(CircuitBreaker {
            failures: NonZeroU32::new(failures).unwrap(),
            open_for: Duration::from_secs(10),
            max_open_for: Duration::from_secs(35),
            half_open_requests: NonZeroU32::new(half_open).unwrap(),
            trip_on_5xx: false,
        })
    }

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[tokio::test(start_paused = true)]
    async fn opens_after_consecutive_failures_only() {
        let mut b = breaker(3, 1);
        let now = Instant::now();
        assert_eq!(b.record(false, now), None);
        assert_eq!(b.record(false, now), None);
        assert_eq!(b.record(true, now), None); // resets the count
        assert_eq!(b.record(false, now), None);
        assert_eq!(b.record(false, now), None);
        let t = b.record(false, now).unwrap();
        assert_eq!((t.from.name(), t.to.name()), ("closed", "open"));
        assert_eq!(b.admit(now).0, Admission::Deny { retry_after: S(10) });
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_trials_and_a_success_closes() {
        let mut b = breaker(1, 2);
        b.record(false, Instant::now());
        tokio::time::advance(S(10)).await;
        let now = Instant::now();
        assert_eq!(b.state(now), BreakerState::HalfOpen);
        let (a, t) = b.admit(now);
        assert_eq!(a, Admission::Trial);
        assert_eq!(t.unwrap().to, BreakerState::HalfOpen);
        assert_eq!(b.admit(now).0, Admission::Trial);
        assert_eq!(
            b.admit(now).0,
            Admission::Deny {
                retry_after: Duration::ZERO
            }
        );
        assert_eq!(b.record(true, now).unwrap().to, BreakerState::Closed);
        assert_eq!(b.admit(now).0, Admission::Allow);
    }

    #[tokio::test(start_paused = true)]
    async fn each_consecutive_trip_doubles_open_time_up_to_the_cap() {
        let mut b = breaker(1, 1);
        let mut open_times = Vec::new();
        for _ in 0..4 {
            let now = Instant::now();
            let t = b.record(false, now).unwrap();
            let BreakerState::Open { until } = t.to else {
                panic!()
            };
            open_times.push((until - now).as_secs());
            tokio::time::advance(until - now).await;
            assert_eq!(b.admit(Instant::now()).0, Admission::Trial);
        }
        assert_eq!(open_times, [10, 20, 35, 35]);
        // A success closes it and the next trip starts from open_for again.
        b.record(true, Instant::now());
        let now = Instant::now();
        let t = b.record(false, now).unwrap();
        assert_eq!(t.to, BreakerState::Open { until: now + S(10) });
    }

    #[tokio::test(start_paused = true)]
    async fn late_results_while_open_change_nothing() {
        let mut b = breaker(1, 1);
        let now = Instant::now();
        b.record(false, now);
        assert_eq!(b.record(true, now), None);
        assert!(matches!(b.state(now), BreakerState::Open { .. }));
    }
}
