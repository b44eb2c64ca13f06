//! The instance state machine, as data: states, events, and a pure `next()`.
//!
//! ```text
//! starting → running ⇄ ready → stopping → stopped
//!     ↘        ↓        ↓
//!       exited{code|signal} → restarting{attempt, at} → starting
//!                           → failed{reason}
//! ```
//! The executor (`instance.rs`) feeds events in and does the I/O; this file
//! only says which moves are legal, so the table is testable on its own.

use std::fmt;

use serde::Serialize;
use tokio::time::Instant;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl Exit {
    pub fn from_status(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => Self::Code(code),
            (None, Some(sig)) => Self::Signal(sig),
            (None, None) => Self::Code(-1),
        }
    }

    pub fn success(self) -> bool {
        self == Self::Code(0)
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(c) => write!(f, "exit code {c}"),
            Self::Signal(s) => match nix::sys::signal::Signal::try_from(*s) {
                Ok(sig) => write!(f, "killed by {}", sig.as_str()),
                Err(_) => write!(f, "killed by signal {s}"),
            },
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Being spawned.
    Starting,
    /// The process runs but does not take traffic (yet).
    Running,
    /// The process runs and may take traffic.
    Ready,
    /// The stop sequence is under way.
    Stopping,
    /// Stopped on request; its process group is confirmed empty.
    Stopped,
    /// Ended on its own and will not be restarted (policy).
    Exited(Exit),
    /// Ended on its own; a new process starts at `at`.
    Restarting { attempt: u32, at: Instant },
    /// Gave up: the restart budget is spent or the start cannot succeed.
    Failed { reason: String },
}

impl State {
    /// A short name for logs and status.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Running => "running",
            Self::Ready => "ready",
            Self::Stopping => "stopping",
            Self::Stopped => "stopped",
            Self::Exited(_) => "exited",
            Self::Restarting { .. } => "restarting",
            Self::Failed { .. } => "failed",
        }
    }

    /// A process exists for this state.
    pub fn is_up(&self) -> bool {
        matches!(self, Self::Running | Self::Ready | Self::Stopping)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exited(exit) => write!(f, "exited ({exit})"),
            Self::Restarting { attempt, .. } => write!(f, "restarting (attempt {attempt})"),
            Self::Failed { reason } => write!(f, "failed ({reason})"),
            other => f.write_str(other.name()),
        }
    }
}

/// What happened to an instance. Decisions (restart or not) are made before
/// the event is built, by `restart.rs`, so `next()` needs no clock or policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Spawned,
    /// The instance accepts traffic (port open; later: readiness passed).
    BecameReady,
    /// The instance stopped accepting traffic while running.
    BecameUnready,
    /// The process ended (or could not start) and will start again at `at`.
    WillRestart {
        attempt: u32,
        at: Instant,
    },
    /// The process ended and the policy says not to restart it.
    Ended(Exit),
    /// The process ended (or could not start) and the budget is spent.
    GaveUp {
        reason: String,
    },
    /// The restart delay elapsed.
    RestartDue,
    StopRequested,
    StopConfirmed,
}

/// The next state, or `None` when the event is not legal in `state`.
pub fn next(state: &State, event: Event) -> Option<State> {
    use Event as E;
    use State as S;
    Some(match (state, event) {
        (S::Starting, E::Spawned) => S::Running,
        (S::Running, E::BecameReady) => S::Ready,
        (S::Ready, E::BecameUnready) => S::Running,
        (S::Starting | S::Running | S::Ready, E::WillRestart { attempt, at }) => {
            S::Restarting { attempt, at }
        }
        (S::Starting | S::Running | S::Ready, E::Ended(exit)) => S::Exited(exit),
        (S::Starting | S::Running | S::Ready, E::GaveUp { reason }) => S::Failed { reason },
        (S::Restarting { .. }, E::RestartDue) => S::Starting,
        (S::Running | S::Ready | S::Starting, E::StopRequested) => S::Stopping,
        // Nothing runs in these states: a stop is immediate.
        (S::Restarting { .. } | S::Exited(_) | S::Failed { .. }, E::StopRequested) => S::Stopped,
        (S::Stopping, E::StopConfirmed) => S::Stopped,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_states() -> Vec<State> {
        let at = Instant::now();
        vec![
            State::Starting,
            State::Running,
            State::Ready,
            State::Stopping,
            State::Stopped,
            State::Exited(Exit::Code(0)),
            State::Restarting { attempt: 1, at },
            State::Failed { reason: "x".into() },
        ]
    }

    fn all_events() -> Vec<Event> {
        let at = Instant::now();
        vec![
            Event::Spawned,
            Event::BecameReady,
            Event::BecameUnready,
            Event::WillRestart { attempt: 2, at },
            Event::Ended(Exit::Code(1)),
            Event::GaveUp {
                reason: "budget".into(),
            },
            Event::RestartDue,
            Event::StopRequested,
            Event::StopConfirmed,
        ]
    }

    /// The whole table: (from, event) → to. Anything not listed is illegal.
    #[test]
    fn transition_table() {
        let legal: &[(&str, &str, &str)] = &[
            ("starting", "Spawned", "running"),
            ("starting", "WillRestart", "restarting"),
            ("starting", "Ended", "exited"),
            ("starting", "GaveUp", "failed"),
            ("starting", "StopRequested", "stopping"),
            ("running", "BecameReady", "ready"),
            ("running", "WillRestart", "restarting"),
            ("running", "Ended", "exited"),
            ("running", "GaveUp", "failed"),
            ("running", "StopRequested", "stopping"),
            ("ready", "BecameUnready", "running"),
            ("ready", "WillRestart", "restarting"),
            ("ready", "Ended", "exited"),
            ("ready", "GaveUp", "failed"),
            ("ready", "StopRequested", "stopping"),
            ("stopping", "StopConfirmed", "stopped"),
            ("exited", "StopRequested", "stopped"),
            ("restarting", "RestartDue", "starting"),
            ("restarting", "StopRequested", "stopped"),
            ("failed", "StopRequested", "stopped"),
        ];
        for state in all_states() {
            for event in all_events() {
                let ev_name = format!("{event:?}");
                let ev_name = ev_name.split([' ', '(', '{']).next().unwrap().to_string();
                let expected = legal
                    .iter()
                    .find(|(s, e, _)| *s == state.name() && *e == ev_name)
                    .map(|(_, _, to)| *to);
                let got = next(&state, event).map(|s| s.name());
                assert_eq!(got, expected, "{} + {ev_name}", state.name());
            }
        }
    }

    #[test]
    fn stopped_is_final() {
        for event in all_events() {
            assert_eq!(next(&State::Stopped, event), None);
        }
    }

    #[test]
    fn exits_are_described() {
        assert_eq!(Exit::Code(3).to_string(), "exit code 3");
        assert_eq!(Exit::Signal(9).to_string(), "killed by SIGKILL");
        assert!(Exit::Code(0).success());
        assert!(!Exit::Signal(15).success());
    }
}
