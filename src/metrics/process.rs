//! The process's own figures from `/proc/self`: resident memory, open file
//! descriptors and CPU time (the standard `process_*` metric names).

/// What `/proc/self` says now; `None` where it cannot be read.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessStats {
    pub resident_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    /// User plus system CPU time, in clock ticks and seconds.
    pub cpu_seconds: Option<f64>,
}

impl ProcessStats {
    pub fn read() -> Self {
        Self {
            resident_bytes: resident_bytes(),
            open_fds: std::fs::read_dir("/proc/self/fd")
                .ok()
                .map(|d| d.count() as u64),
            cpu_seconds: cpu_seconds(),
        }
    }
}

fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    cpu_ticks(&stat).map(|t| t as f64 / rustix::param::clock_ticks_per_second() as f64)
}

/// utime + stime from a `/proc/PID/stat` line (fields 14 and 15; the
/// command name in parentheses may hold spaces, so count from its end).
fn cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_count_from_the_command_names_end() {
        let stat = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 111 222 13 14";
        assert_eq!(cpu_ticks(stat), Some(333));
    }

    #[test]
    fn this_process_has_memory_and_fds() {
        let s = ProcessStats::read();
        assert!(s.resident_bytes.unwrap() > 0);
        assert!(s.open_fds.unwrap() > 0);
        assert!(s.cpu_seconds.is_some());
    }
}
