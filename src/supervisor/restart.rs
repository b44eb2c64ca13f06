//! Restart decisions: policy, exponential backoff with full jitter, the
//! restart budget (`max_restarts` within `window`) and `reset_after`.
//!
//! Pure: time comes in as arguments and jitter as a number in `[0, 1)`, so
//! tests with paused time check exact delays.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::state::Exit;
use crate::config::{RestartConfig, RestartPolicy};

/// How a run of an instance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The process exited on its own.
    Exited(Exit),
    /// The process could not be started (spawn failed, port taken).
    NotStarted,
    /// harbormaster stopped it: a startup or liveness probe failed.
    Unhealthy,
}

/// What to do after an instance ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Start again after `delay`; `attempt` counts from 1 since the last reset.
    Restart { attempt: u32, delay: Duration },
    /// The policy does not restart this exit.
    Leave,
    /// The restart budget is spent.
    GiveUp { reason: String },
}

/// The restart history of one instance.
#[derive(Debug, Clone)]
pub struct RestartTracker {
    config: RestartConfig,
    /// Consecutive restarts since the last stable run.
    attempt: u32,
    /// When recent restarts happened, for the window budget.
    recent: VecDeque<Instant>,
}

impl RestartTracker {
    pub fn new(config: RestartConfig) -> Self {
        Self {
            config,
            attempt: 0,
            recent: VecDeque::new(),
        }
    }

    /// Decides what follows the end of a run that lasted `uptime`.
    /// `jitter` is uniform in `[0, 1)`.
    pub fn after_exit(
        &mut self,
        end: End,
        uptime: Duration,
        now: Instant,
        jitter: f64,
    ) -> Decision {
        let wanted = match (self.config.policy, end) {
            (RestartPolicy::Never, _) => false,
            (RestartPolicy::Always, _) => true,
            (RestartPolicy::OnFailure, End::Exited(exit)) => !exit.success(),
            (RestartPolicy::OnFailure, End::NotStarted | End::Unhealthy) => true,
        };
        if !wanted {
            return Decision::Leave;
        }
        if uptime >= self.config.reset_after && end != End::NotStarted {
            self.attempt = 0;
        }
        while self
            .recent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.config.window)
        {
            self.recent.pop_front();
        }
        if self.recent.len() as u32 >= self.config.max_restarts {
            return Decision::GiveUp {
                reason: format!(
                    "restarted {} times within {}",
                    self.recent.len(),
                    humantime::format_duration(self.config.window)
                ),
            };
        }
        self.recent.push_back(now);
        self.attempt += 1;
        Decision::Restart {
            attempt: self.attempt,
            delay: self.delay(self.attempt, jitter),
        }
    }

    /// Full jitter: uniform in `[0, min(max, initial × multiplier^(attempt-1))]`.
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let b = &self.config.backoff;
        let exp = b
            .multiplier()
            .powi(attempt.saturating_sub(1).min(1000) as i32);
        let ceiling = b.initial().as_secs_f64() * exp;
        let ceiling = if ceiling.is_finite() {
            ceiling.min(b.max().as_secs_f64())
        } else {
            b.max().as_secs_f64()
        };
        Duration::from_secs_f64(ceiling * jitter.clamp(0.0, 1.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Backoff;

    fn config(policy: RestartPolicy, max_restarts: u32) -> RestartConfig {
        RestartConfig {
            policy,
            backoff: Backoff::try_new(Duration::from_millis(100), Duration::from_secs(2), 2.0)
                .unwrap(),
            max_restarts,
            window: Duration::from_secs(60),
            reset_after: Duration::from_secs(30),
        }
    }

    const CRASH: End = End::Exited(Exit::Code(1));
    const SHORT: Duration = Duration::from_millis(10);

    #[test]
    fn backoff_grows_and_is_capped() {
        let t = RestartTracker::new(config(RestartPolicy::Always, 5));
        let ceilings: Vec<u128> = (1..=7).map(|a| t.delay(a, 1.0).as_millis()).collect();
        assert_eq!(ceilings, [100, 200, 400, 800, 1600, 2000, 2000]);
        assert_eq!(t.delay(1_000_000, 1.0), Duration::from_secs(2));
    }

    #[test]
    fn full_jitter_spans_zero_to_the_ceiling() {
        let t = RestartTracker::new(config(RestartPolicy::Always, 5));
        assert_eq!(t.delay(3, 0.0), Duration::ZERO);
        assert_eq!(t.delay(3, 0.5), Duration::from_millis(200));
        assert!(t.delay(3, 0.999) < Duration::from_millis(400));
    }

    #[test]
    fn policy_decides_which_exits_restart() {
        let now = Instant::now();
        let mut never = RestartTracker::new(config(RestartPolicy::Never, 5));
        assert_eq!(never.after_exit(CRASH, SHORT, now, 0.5), Decision::Leave);
        let mut on_failure = RestartTracker::new(config(RestartPolicy::OnFailure, 5));
        assert_eq!(
            on_failure.after_exit(End::Exited(Exit::Code(0)), SHORT, now, 0.5),
            Decision::Leave
        );
        assert!(matches!(
            on_failure.after_exit(End::Exited(Exit::Signal(9)), SHORT, now, 0.5),
            Decision::Restart { attempt: 1, .. }
        ));
        let mut always = RestartTracker::new(config(RestartPolicy::Always, 5));
        assert!(matches!(
            always.after_exit(End::Exited(Exit::Code(0)), SHORT, now, 0.5),
            Decision::Restart { attempt: 1, .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn budget_is_spent_within_the_window_and_recovers_after_it() {
        let mut t = RestartTracker::new(config(RestartPolicy::Always, 3));
        for attempt in 1..=3 {
            let d = t.after_exit(CRASH, SHORT, Instant::now(), 1.0);
            assert!(
                matches!(d, Decision::Restart { attempt: a, .. } if a == attempt),
                "{d:?}"
            );
            tokio::time::advance(Duration::from_secs(1)).await;
        }
        let d = t.after_exit(CRASH, SHORT, Instant::now(), 1.0);
        assert_eq!(
            d,
            Decision::GiveUp {
                reason: "restarted 3 times within 1m".into()
            }
        );
        // Once the first restart leaves the window, one more is allowed.
        tokio::time::advance(Duration::from_secs(58)).await;
        assert!(matches!(
            t.after_exit(CRASH, SHORT, Instant::now(), 1.0),
            Decision::Restart { attempt: 4, .. }
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stable_run_resets_the_attempt_count() {
        let mut t = RestartTracker::new(config(RestartPolicy::Always, 100));
        t.after_exit(CRASH, SHORT, Instant::now(), 1.0);
        let d = t.after_exit(CRASH, SHORT, Instant::now(), 1.0);
        assert_eq!(
            d,
            Decision::Restart {
                attempt: 2,
                delay: Duration::from_millis(200)
            }
        );
        // Up for reset_after: the next crash is attempt 1 again, with the first delay.
        let d = t.after_exit(CRASH, Duration::from_secs(30), Instant::now(), 1.0);
        assert_eq!(
            d,
            Decision::Restart {
                attempt: 1,
                delay: Duration::from_millis(100)
            }
        );
    }

    #[test]
    fn probe_failures_and_failed_starts_count_as_failures() {
        let now = Instant::now();
        let mut on_failure = RestartTracker::new(config(RestartPolicy::OnFailure, 5));
        assert!(matches!(
            on_failure.after_exit(End::Unhealthy, SHORT, now, 0.5),
            Decision::Restart { .. }
        ));
        assert!(matches!(
            on_failure.after_exit(End::NotStarted, SHORT, now, 0.5),
            Decision::Restart { .. }
        ));
        let mut never = RestartTracker::new(config(RestartPolicy::Never, 5));
        assert_eq!(
            never.after_exit(End::Unhealthy, SHORT, now, 0.5),
            Decision::Leave
        );
    }

    #[test]
    fn zero_initial_backoff_restarts_at_once() {
        let mut c = config(RestartPolicy::Always, 5);
        c.backoff = Backoff::try_new(Duration::ZERO, Duration::ZERO, 2.0).unwrap();
        let mut t = RestartTracker::new(c);
        assert_eq!(
            t.after_exit(CRASH, SHORT, Instant::now(), 0.7),
            Decision::Restart {
                attempt: 1,
                delay: Duration::ZERO
            }
        );
    }
}
