//! Probe failures counted per app and probe kind, for
//! `harbormaster_probe_failures_total`. One counter set per harbor, shared
//! by the supervisor's instances and the external-upstream watchers (which
//! wrap their probe runner with [`ProbeFailures::counted`]); the metrics
//! read it at scrape time, so health does not depend on the metrics crate.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::config::{Probe, ProbeKind};

/// Failed probes so far, by (app, `http`|`tcp`|`exec`); cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct ProbeFailures(Arc<Mutex<BTreeMap<(String, &'static str), u64>>>);

impl ProbeFailures {
    pub fn record(&self, app: &str, probe: &Probe) {
        let kind = match probe.kind {
            ProbeKind::Http { .. } => "http",
            ProbeKind::Tcp => "tcp",
            ProbeKind::Exec { .. } => "exec",
        };
        let mut counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *counts.entry((app.to_string(), kind)).or_default() += 1;
    }

    /// Every (app, probe kind) that ever failed, with its count.
    pub fn snapshot(&self) -> Vec<((String, &'static str), u64)> {
        let counts = self.0.lock().unwrap_or_else(|p| p.into_inner());
        counts.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_app_and_kind() {
        let failures = ProbeFailures::default();
        let tcp = crate::health::monitor::default_readiness();
        failures.record("web", &tcp);
        failures.record("web", &tcp);
        failures.record("api", &tcp);
        assert_eq!(
            failures.snapshot(),
            [(("api".into(), "tcp"), 1), (("web".into(), "tcp"), 2)]
        );
    }
}
