//! The two exposition formats. `prometheus-client` writes OpenMetrics; a
//! scraper that does not ask for it (`Accept`) gets the classic Prometheus
//! text format (0.0.4), made from the same text: counter families are named
//! with their `_total` suffix, and `# UNIT`, `_created` and `# EOF` lines go.

pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|part| {
        part.trim_start()
            .starts_with("application/openmetrics-text")
    })
}

/// OpenMetrics text → Prometheus text format 0.0.4.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: Vec<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let is_counter = |family: &str| counters.contains(&family);
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| Some((p, line.strip_prefix(p)?.split_once(' ')?)));
        if let Some((prefix, (family, rest))) = meta {
            let total = if is_counter(family) { "_total" } else { "" };
            out.push_str(&format!("{prefix}{family}{total} {rest}\n"));
            continue;
        }
        let name = line.split(['{', ' ']).next().unwrap_or("");
        if name.strip_suffix("_created").is_some_and(is_counter) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OM: &str = "# HELP x_requests Requests.\n# TYPE x_requests counter\nx_requests_total{app=\"web\"} 3\nx_requests_created{app=\"web\"} 1.5\n# HELP x_rss Memory.\n# TYPE x_rss gauge\n# UNIT x_rss bytes\nx_rss 7\n# EOF\n";

    #[test]
    fn counters_carry_total_in_their_family_name() {
        assert_eq!(
            to_prometheus_text(OM),
            "# HELP x_requests_total Requests.\n# TYPE x_requests_total counter\nx_requests_total{app=\"web\"} 3\n# HELP x_rss Memory.\n# TYPE x_rss gauge\nx_rss 7\n"
        );
    }

    #[test]
    fn openmetrics_only_when_asked() {
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5"
        ));
        assert!(!wants_openmetrics("text/plain, */*"));
    }
}
