//! Probe scheduling with Kubernetes semantics: the startup probe runs first
//! and gates the others; readiness gates routing (no traffic before its first
//! success); liveness failing its threshold asks for a restart.
//!
//! Generic over the probe runner so the schedule is tested with paused time
//! and scripted results.

use std::future::Future;
use std::time::Duration;

use tokio::sync::mpsc;

use super::hysteresis::{Hysteresis, Verdict};
use super::probe::ProbeOutcome;
use crate::config::{Probe, ProbeKind};

/// What the monitor reports, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthEvent {
    /// The startup probe passed; readiness and liveness start now.
    Started(ProbeOutcome),
    /// The startup probe failed its threshold: the start failed.
    StartupFailed(ProbeOutcome),
    /// Readiness passed its threshold: take traffic.
    Ready(ProbeOutcome),
    /// Readiness failed its threshold after having passed: stop traffic.
    Unready(ProbeOutcome),
    /// Liveness failed its threshold: restart.
    LivenessFailed(ProbeOutcome),
    /// Every readiness result, for status.
    Probed(ProbeOutcome),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Probes {
    pub startup: Option<Probe>,
    pub readiness: Probe,
    pub liveness: Option<Probe>,
    /// The instance is already started and ready (probes changed by a
    /// reload): skip the startup probe and keep it ready until readiness
    /// fails its threshold.
    pub assume_ready: bool,
}

/// Readiness when none is configured: a TCP connect with the readiness defaults.
pub fn default_readiness() -> Probe {
    Probe {
        kind: ProbeKind::Tcp,
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        success_threshold: std::num::NonZeroU32::MIN,
        failure_threshold: std::num::NonZeroU32::new(3).expect("3 is not zero"),
    }
}

/// Until readiness first passes, probe sooner: from 1 ms, doubling up to the
/// interval, so a fast starter takes traffic within milliseconds.
const FIRST_WAIT: Duration = Duration::from_millis(1);

/// `interval` ± 10 %, so instances started together do not probe in lockstep.
fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + fastrand::f64() * 0.2)
}

/// Runs the probes until the receiver goes away (the instance ended).
pub async fn watch<C, F>(probes: Probes, check: C, events: mpsc::Sender<HealthEvent>)
where
    C: Fn(Probe) -> F,
    F: Future<Output = ProbeOutcome>,
{
    if let Some(startup) = probes.startup.as_ref().filter(|_| !probes.assume_ready) {
        let mut h = Hysteresis::new(
            startup.success_threshold.get(),
            startup.failure_threshold.get(),
        );
        loop {
            let outcome = check(startup.clone()).await;
            match h.record(outcome.ok) {
                Some(Verdict::Passing) => {
                    if events.send(HealthEvent::Started(outcome)).await.is_err() {
                        return;
                    }
                    break;
                }
                Some(Verdict::Failing) => {
                    let _ = events.send(HealthEvent::StartupFailed(outcome)).await;
                    return;
                }
                _ => tokio::time::sleep(jittered(startup.interval)).await,
            }
        }
    }

    let readiness = async {
        let p = &probes.readiness;
        let (s, f) = (p.success_threshold.get(), p.failure_threshold.get());
        let mut h = if probes.assume_ready {
            Hysteresis::passing(s, f)
        } else {
            Hysteresis::new(s, f)
        };
        let mut ever_ready = probes.assume_ready;
        let mut wait = FIRST_WAIT.min(p.interval);
        loop {
            let outcome = check(p.clone()).await;
            if events
                .send(HealthEvent::Probed(outcome.clone()))
                .await
                .is_err()
            {
                return;
            }
            let event = match h.record(outcome.ok) {
                Some(Verdict::Passing) => {
                    ever_ready = true;
                    Some(HealthEvent::Ready(outcome))
                }
                // Failing before the first success changes nothing: it was never routed.
                Some(Verdict::Failing) if ever_ready => Some(HealthEvent::Unready(outcome)),
                _ => None,
            };
            if let Some(event) = event {
                if events.send(event).await.is_err() {
                    return;
                }
            }
            if ever_ready {
                tokio::time::sleep(jittered(p.interval)).await;
            } else {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(p.interval);
            }
        }
    };
    let liveness = async {
        let Some(p) = &probes.liveness else {
            return std::future::pending().await;
        };
        let mut h = Hysteresis::new(p.success_threshold.get(), p.failure_threshold.get());
        loop {
            tokio::time::sleep(jittered(p.interval)).await;
            let outcome = check(p.clone()).await;
            if h.record(outcome.ok) == Some(Verdict::Failing) {
                let _ = events.send(HealthEvent::LivenessFailed(outcome)).await;
                // The instance is being restarted; readiness goes on until then.
                return std::future::pending().await;
            }
        }
    };
    tokio::join!(readiness, liveness);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::num::NonZeroU32;
    use std::sync::{Arc, Mutex};

    fn probe(kind: ProbeKind, interval_ms: u64, success: u32, failure: u32) -> Probe {
        Probe {
            kind,
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_millis(50),
            success_threshold: NonZeroU32::new(success).unwrap(),
            failure_threshold: NonZeroU32::new(failure).unwrap(),
        }
    }

    fn http(path: &str) -> ProbeKind {
        ProbeKind::Http { path: path.into() }
    }

    /// Scripted results per probe kind ("+" pass, "-" fail); the last repeats.
    /// Records which probes ran, in order.
    fn scripted(
        script: &[(&str, &str)],
    ) -> (
        impl Fn(Probe) -> std::future::Ready<ProbeOutcome>,
        Arc<Mutex<Vec<String>>>,
    ) {
        type Scripts = Vec<(String, VecDeque<bool>)>;
        let queues: Arc<Mutex<Scripts>> = Arc::new(Mutex::new(
            script
                .iter()
                .map(|(path, r)| (path.to_string(), r.chars().map(|c| c == '+').collect()))
                .collect(),
        ));
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = log.clone();
        let check = move |p: Probe| {
            let ProbeKind::Http { path } = &p.kind else {
                panic!()
            };
            let mut queues = queues.lock().unwrap();
            let q = &mut queues.iter_mut().find(|(k, _)| k == path).unwrap().1;
            let ok = if q.len() > 1 {
                q.pop_front().unwrap()
            } else {
                q[0]
            };
            seen.lock().unwrap().push(path.clone());
            std::future::ready(ProbeOutcome {
                ok,
                latency: Duration::from_millis(1),
                detail: if ok {
                    "200".into()
                } else {
                    "status 503".into()
                },
            })
        };
        (check, log)
    }

    async fn collect(
        probes: Probes,
        check: impl Fn(Probe) -> std::future::Ready<ProbeOutcome>,
        n: usize,
    ) -> Vec<String> {
        let (tx, mut rx) = mpsc::channel(64);
        let task = async move { watch(probes, check, tx).await };
        let gather = async {
            let mut out = Vec::new();
            while out.len() < n {
                match rx.recv().await {
                    Some(HealthEvent::Probed(_)) => {}
                    Some(e) => out.push(format!("{e:?}").split('(').next().unwrap().to_string()),
                    None => break,
                }
            }
            out
        };
        // Virtual time: a schedule that never produces the events fails here.
        let run = async {
            tokio::select! {
                out = gather => out,
                _ = task => panic!("monitor ended early"),
            }
        };
        tokio::time::timeout(Duration::from_secs(3600), run)
            .await
            .expect("the expected events never came")
    }

    #[tokio::test(start_paused = true)]
    async fn startup_gates_readiness_and_liveness() {
        let (check, log) = scripted(&[("/startup", "--+"), ("/ready", "+"), ("/live", "+")]);
        let probes = Probes {
            startup: Some(probe(http("/startup"), 100, 1, 10)),
            readiness: probe(http("/ready"), 1000, 1, 3),
            liveness: Some(probe(http("/live"), 1000, 1, 3)),
            assume_ready: false,
        };
        let events = collect(probes, check, 2).await;
        assert_eq!(events, ["Started", "Ready"]);
        let log = log.lock().unwrap();
        assert_eq!(&log[..4], ["/startup", "/startup", "/startup", "/ready"]);
    }

    #[tokio::test(start_paused = true)]
    async fn startup_failing_its_threshold_fails_the_start() {
        let (check, log) = scripted(&[("/startup", "-"), ("/ready", "+")]);
        let probes = Probes {
            startup: Some(probe(http("/startup"), 100, 1, 3)),
            readiness: probe(http("/ready"), 1000, 1, 3),
            liveness: None,
            assume_ready: false,
        };
        let (tx, mut rx) = mpsc::channel(8);
        watch(probes, check, tx).await;
        assert!(matches!(
            rx.recv().await,
            Some(HealthEvent::StartupFailed(_))
        ));
        assert!(log.lock().unwrap().iter().all(|p| p == "/startup"));
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_flips_with_hysteresis_and_not_before_the_first_success() {
        // Fails twice and passes once (not ready yet: no Unready, no Ready),
        // passes twice (Ready), fails three times (Unready), then passes.
        let (check, _) = scripted(&[("/ready", "--+++---+")]);
        let probes = Probes {
            startup: None,
            readiness: probe(http("/ready"), 1000, 2, 3),
            liveness: None,
            assume_ready: false,
        };
        let events = collect(probes, check, 2).await;
        assert_eq!(events, ["Ready", "Unready"]);
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_failing_its_threshold_asks_for_a_restart_once() {
        let (check, _) = scripted(&[("/ready", "+"), ("/live", "++---")]);
        let probes = Probes {
            startup: None,
            readiness: probe(http("/ready"), 1000, 1, 3),
            liveness: Some(probe(http("/live"), 1000, 1, 3)),
            assume_ready: false,
        };
        let start = tokio::time::Instant::now();
        let events = collect(probes, check, 2).await;
        assert_eq!(events, ["Ready", "LivenessFailed"]);
        // Five liveness periods (± jitter): the threshold, not the first failure.
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(4500) && elapsed <= Duration::from_millis(5500),
            "{elapsed:?}"
        );
    }
}
