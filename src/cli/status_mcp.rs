//! The MCP part of `harbormaster status`: one line per MCP server (state,
//! breaker, tools, restarts, pid, calls in flight), from `GET /v1/mcp`.

use std::path::Path;

use serde_json::Value;

use super::client;

/// The section, or nothing when the config has no `[mcp]`.
pub async fn section(dir: &Path) -> String {
    match client::request(dir, "GET", "/v1/mcp", std::time::Duration::from_secs(5)).await {
        Ok((200, body)) => serde_json::from_str(&body)
            .map(|v| render(&v))
            .unwrap_or_default(),
        _ => String::new(),
    }
}

fn render(status: &Value) -> String {
    let mut out = format!(
        "\n{:<20} {:<11} {:<10} {:>5} {:>8} {:>8} {:>9}  {}\n",
        "MCP SERVER", "STATE", "BREAKER", "TOOLS", "RESTARTS", "PID", "IN-FLIGHT", "REASON"
    );
    for s in status["servers"].as_array().into_iter().flatten() {
        let text = |k: &str| s[k].as_str().unwrap_or("-").to_string();
        let num = |k: &str| s[k].as_u64().map_or("-".to_string(), |n| n.to_string());
        let mut name = text("name");
        if s["required"] == true {
            name.push('*');
        }
        let line = format!(
            "{:<20} {:<11} {:<10} {:>5} {:>8} {:>8} {:>9}  {}",
            name,
            text("state"),
            text("breaker"),
            num("tools"),
            num("restarts"),
            num("pid"),
            num("in_flight"),
            s["reason"].as_str().unwrap_or("")
        );
        out.push_str(&super::status::fit(&line, 100));
        out.push('\n');
    }
    if status["kill_switch"] == true {
        out.push_str("kill switch engaged: every tools/call is refused\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_server_within_100_columns() {
        let v = serde_json::json!({"servers": [
            {"name": "everything", "state": "ready", "breaker": "closed", "tools": 13, "restarts": 0, "pid": 42, "in_flight": 1, "required": true, "reason": null},
            {"name": "broken", "state": "failed", "breaker": "open", "tools": 0, "restarts": 5, "pid": null, "in_flight": 0, "reason": "exited: exit code 1; restarted 5 times within 60s and then some more words to overflow"}
        ]});
        let text = render(&v);
        assert!(text.contains("everything*"));
        assert!(text.lines().all(|l| l.chars().count() <= 100), "{text}");
        assert_eq!(text.lines().filter(|l| !l.is_empty()).count(), 3);
    }
}
