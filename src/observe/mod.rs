//! One typed outcome per request, handed to every observer once, when the
//! request is over (its in-flight guard drops, or the gateway answered it
//! itself). The access log is the first observer; metrics and the audit
//! log are added here, as further observers, without touching forwarding.
//!
//! Observers run on the gateway's worker threads, inline: they must be
//! quick and must not block (count, format, or hand off to a queue).

mod access_log;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

pub use access_log::AccessLog;

/// Whose fault a failed request is (as pingora's errors record it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The instance: counts against its circuit breaker.
    Upstream,
    /// The client broke, stalled or left its own request.
    Client,
    /// Nothing is broken: the gateway or the instance has no room or is
    /// not routable now (draining, no ready instance, at its limit).
    Capacity,
}

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Forwarded and answered to the last byte.
    Ok,
    /// Forwarded; the client went away before the response ended.
    ClientGone,
    /// Malformed (400) or CONNECT (405).
    Refused,
    NoRoute,
    Draining,
    NoReadyInstance,
    CircuitOpen,
    /// The apps are being stopped.
    ShuttingDown,
    UpstreamConnectError,
    UpstreamError,
    UpstreamTimeout,
    /// Every connection the instance may have was busy.
    UpstreamSaturated,
    ClientAborted,
    ClientStalled,
}

impl Kind {
    /// The name logs and metrics use.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::ClientGone => "client_gone",
            Self::Refused => "refused",
            Self::NoRoute => "no_route",
            Self::Draining => "draining",
            Self::NoReadyInstance => "no_ready_instance",
            Self::CircuitOpen => "circuit_open",
            Self::ShuttingDown => "shutting_down",
            Self::UpstreamConnectError => "upstream_connect_error",
            Self::UpstreamError => "upstream_error",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::UpstreamSaturated => "upstream_saturated",
            Self::ClientAborted => "client_aborted",
            Self::ClientStalled => "client_stalled",
        }
    }

    /// Whose doing a failure was; `None` for a success.
    pub fn side(self) -> Option<Side> {
        match self {
            Self::Ok => None,
            Self::UpstreamConnectError | Self::UpstreamError | Self::UpstreamTimeout => {
                Some(Side::Upstream)
            }
            Self::ClientGone | Self::Refused | Self::ClientAborted | Self::ClientStalled => {
                Some(Side::Client)
            }
            Self::NoRoute
            | Self::Draining
            | Self::NoReadyInstance
            | Self::CircuitOpen
            | Self::ShuttingDown
            | Self::UpstreamSaturated => Some(Side::Capacity),
        }
    }
}

/// What one request was and how it ended.
#[derive(Debug, Clone)]
pub struct RequestOutcome<'a> {
    /// The app its route chose (none: no route, or refused before routing).
    pub app: Option<&'a str>,
    /// The instance that answered (`web#0`, `legacy@127.0.0.1:3999`).
    pub instance: Option<&'a str>,
    pub client: IpAddr,
    /// Method, host and path: empty when no observer reads them
    /// ([`Observer::reads_request_line`]).
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub status: u16,
    pub kind: Kind,
    /// Request body bytes read from the client.
    pub bytes_in: u64,
    /// Response body bytes handed to the client.
    pub bytes_out: u64,
    pub duration: Duration,
}

/// An instance's circuit breaker changed state.
#[derive(Debug, Clone)]
pub struct BreakerChange<'a> {
    pub app: &'a str,
    pub instance: &'a str,
    /// `closed`, `open` or `half_open`.
    pub from: &'static str,
    pub to: &'static str,
}

/// Something that wants to know what the gateway did: every request's
/// outcome, every breaker change, or both (the methods it leaves alone
/// cost nothing).
pub trait Observer: Send + Sync + 'static {
    fn request(&self, _outcome: &RequestOutcome<'_>) {}

    fn breaker(&self, _change: &BreakerChange<'_>) {}

    /// `false`: the gateway need not gather request outcomes for it.
    fn observes_requests(&self) -> bool {
        true
    }

    /// `false`: it reads no method, host or path (counts only); when no
    /// observer does, the gateway keeps none and those fields are empty.
    fn reads_request_line(&self) -> bool {
        true
    }
}

/// Every observer; cheap to clone.
#[derive(Clone, Default)]
pub struct Observers {
    all: Arc<[Arc<dyn Observer>]>,
    of_requests: Arc<[Arc<dyn Observer>]>,
    /// Some observer reads the method, host and path.
    request_line: bool,
}

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Observers({})", self.all.len())
    }
}

impl Observers {
    pub fn new(observers: Vec<Arc<dyn Observer>>) -> Self {
        let of_requests: Vec<_> = observers
            .iter()
            .filter(|o| o.observes_requests())
            .cloned()
            .collect();
        let request_line = of_requests.iter().any(|o| o.reads_request_line());
        Self {
            all: observers.into(),
            of_requests: of_requests.into(),
            request_line,
        }
    }

    /// Whether the gateway must keep each request's method, host and path.
    pub fn reads_request_line(&self) -> bool {
        self.request_line
    }

    /// No observer of requests: the gateway skips gathering outcomes.
    pub fn is_empty(&self) -> bool {
        self.of_requests.is_empty()
    }

    pub fn request(&self, outcome: &RequestOutcome<'_>) {
        for o in self.of_requests.iter() {
            o.request(outcome);
        }
    }

    pub fn breaker(&self, change: &BreakerChange<'_>) {
        for o in self.all.iter() {
            o.breaker(change);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counting;
    impl Observer for Counting {
        fn reads_request_line(&self) -> bool {
            false
        }
    }

    #[test]
    fn the_request_line_is_kept_only_when_an_observer_reads_it() {
        assert!(!Observers::new(vec![Arc::new(Counting)]).reads_request_line());
        let both: Vec<Arc<dyn Observer>> = vec![Arc::new(Counting), Arc::new(AccessLog)];
        assert!(Observers::new(both).reads_request_line());
    }

    #[test]
    fn only_the_upstreams_own_failures_are_its_side() {
        let upstream: Vec<Kind> = [
            Kind::Ok,
            Kind::ClientGone,
            Kind::Refused,
            Kind::NoRoute,
            Kind::Draining,
            Kind::NoReadyInstance,
            Kind::CircuitOpen,
            Kind::ShuttingDown,
            Kind::UpstreamConnectError,
            Kind::UpstreamError,
            Kind::UpstreamTimeout,
            Kind::UpstreamSaturated,
            Kind::ClientAborted,
            Kind::ClientStalled,
        ]
        .into_iter()
        .filter(|k| k.side() == Some(Side::Upstream))
        .collect();
        assert_eq!(
            upstream,
            [
                Kind::UpstreamConnectError,
                Kind::UpstreamError,
                Kind::UpstreamTimeout
            ]
        );
    }
}
