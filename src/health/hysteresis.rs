//! Threshold hysteresis: a probe's verdict flips only after enough
//! consecutive results agree (Kubernetes `successThreshold` /
//! `failureThreshold`, Envoy/HAProxy `rise`/`fall`).

/// What a series of probe results says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// No threshold reached yet.
    Unknown,
    Passing,
    Failing,
}

#[derive(Debug, Clone)]
pub struct Hysteresis {
    success_threshold: u32,
    failure_threshold: u32,
    verdict: Verdict,
    successes: u32,
    failures: u32,
}

impl Hysteresis {
    pub fn new(success_threshold: u32, failure_threshold: u32) -> Self {
        Self {
            success_threshold: success_threshold.max(1),
            failure_threshold: failure_threshold.max(1),
            verdict: Verdict::Unknown,
            successes: 0,
            failures: 0,
        }
    }

    /// Starts from a passing verdict (probes replaced on a ready instance).
    pub fn passing(success_threshold: u32, failure_threshold: u32) -> Self {
        Self {
            verdict: Verdict::Passing,
            ..Self::new(success_threshold, failure_threshold)
        }
    }

    pub fn verdict(&self) -> Verdict {
        self.verdict
    }

    /// Records one result; returns the new verdict when it flips.
    pub fn record(&mut self, ok: bool) -> Option<Verdict> {
        if ok {
            self.successes += 1;
            self.failures = 0;
        } else {
            self.failures += 1;
            self.successes = 0;
        }
        let next = if self.successes >= self.success_threshold {
            Verdict::Passing
        } else if self.failures >= self.failure_threshold {
            Verdict::Failing
        } else {
            return None;
        };
        (next != self.verdict).then(|| {
            self.verdict = next;
            next
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::*;

    /// Each row: thresholds (success, failure), results, verdict after each.
    #[test]
    fn flips_only_after_the_threshold_of_consecutive_results() {
        let rows: &[((u32, u32), &str, &[Verdict])] = &[
            ((1, 3), "+", &[Passing]),
            ((1, 3), "-+", &[Unknown, Passing]),
            ((1, 3), "+--+", &[Passing, Passing, Passing, Passing]),
            ((1, 3), "+---", &[Passing, Passing, Passing, Failing]),
            (
                (2, 2),
                "+-+-++",
                &[Unknown, Unknown, Unknown, Unknown, Unknown, Passing],
            ),
            (
                (2, 2),
                "++--+-++",
                &[
                    Unknown, Passing, Passing, Failing, Failing, Failing, Failing, Passing,
                ],
            ),
            ((1, 1), "+-+", &[Passing, Failing, Passing]),
            ((3, 1), "-", &[Failing]),
        ];
        for ((s, f), results, expected) in rows {
            let mut h = Hysteresis::new(*s, *f);
            let got: Vec<Verdict> = results
                .chars()
                .map(|c| {
                    h.record(c == '+');
                    h.verdict()
                })
                .collect();
            assert_eq!(&got, expected, "thresholds ({s}, {f}), results {results}");
        }
    }

    #[test]
    fn reports_each_flip_once() {
        let mut h = Hysteresis::new(1, 2);
        assert_eq!(h.record(true), Some(Passing));
        assert_eq!(h.record(true), None);
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(false), Some(Failing));
        assert_eq!(h.record(false), None);
        assert_eq!(h.record(true), Some(Passing));
    }
}
