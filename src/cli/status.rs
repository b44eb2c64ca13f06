//! `harbormaster status [--json] [APP]`: every app (also waiting and failed
//! ones) in a table whose lines fit 100 columns, each problem as one reason
//! line below its row; `APP` shows one app in detail (deaths with exit and
//! uptime, probes, the last output lines once).
//!
//! Exit codes: 0 when every required app is up or on its way, 1 when a
//! required app has failed (or the status cannot be read), 3 when no
//! harbormaster runs for the config.

use std::process::ExitCode;

use super::client;
use super::control::{running, ADMIN_TIMEOUT};
use super::Cli;
use crate::admin::api::{AppHealth, Health, InstanceHealth, RuntimeInfo};

/// The width every line of the table fits in.
const WIDTH: usize = 100;

pub fn status(cli: &Cli, json: bool, app: Option<&str>) -> ExitCode {
    client::block_on(async {
        let (dir, info) = match running(cli).await {
            Ok(found) => found,
            Err(code) => return code,
        };
        let body = match client::request(&dir, "GET", "/v1/status", ADMIN_TIMEOUT).await {
            Ok((200, body)) => body,
            other => {
                eprintln!("cannot read status from {}: {other:?}", info.admin);
                return ExitCode::FAILURE;
            }
        };
        let health = match serde_json::from_str::<Health>(&body) {
            Ok(health) => health,
            Err(e) => {
                eprintln!("unexpected status answer: {e}");
                return ExitCode::FAILURE;
            }
        };
        match (json, app) {
            (true, _) => println!("{body}"),
            (false, None) => {
                print!("{}", table(&info, &health));
                print!("{}", super::status_mcp::section(&dir).await);
            }
            (false, Some(name)) => match health.apps.get(name) {
                Some(a) => print!("{}", detail(name, a)),
                None => {
                    eprintln!("unknown app `{name}`");
                    return ExitCode::FAILURE;
                }
            },
        }
        let failed: Vec<&String> = health
            .apps
            .iter()
            .filter(|(_, a)| a.required && failed(a))
            .map(|(name, _)| name)
            .collect();
        if failed.is_empty() {
            ExitCode::SUCCESS
        } else if json {
            ExitCode::FAILURE
        } else {
            let names: Vec<&str> = failed.iter().map(|s| s.as_str()).collect();
            eprintln!("required app(s) failed: {}", names.join(", "));
            ExitCode::FAILURE
        }
    })
}

/// Every instance of the app has failed (restart budget spent, or it
/// cannot start): only a reload or `restart APP` brings it back.
pub fn failed(app: &AppHealth) -> bool {
    !app.instances.is_empty() && app.instances.iter().all(|i| i.state == "failed")
}

/// Why an instance is not (or was not) fine, if it is not.
fn reason(i: &InstanceHealth) -> Option<String> {
    if i.ready {
        return None;
    }
    let why = i
        .detail
        .clone()
        .or_else(|| i.last_death.as_ref().map(|d| d.reason.clone()))?;
    // The cause is usually in what the process said last.
    let said = i.last_death.as_ref().and_then(|d| d.last_lines.last());
    Some(match said {
        Some(line) => format!("{why} — {}", line.trim()),
        None => why,
    })
}

/// Each distinct line once, in order of first appearance, with its count
/// (every restart of a crashing app tends to say the same thing).
pub(super) fn once(lines: &[String]) -> Vec<String> {
    let mut seen: Vec<(&str, usize)> = Vec::new();
    for line in lines {
        match seen.iter_mut().find(|(l, _)| *l == line.as_str()) {
            Some((_, n)) => *n += 1,
            None => seen.push((line, 1)),
        }
    }
    seen.into_iter()
        .map(|(l, n)| match n {
            1 => l.to_string(),
            n => format!("{l} (×{n})"),
        })
        .collect()
}

/// Cuts `text` to `width` characters, marking the cut with `…`.
pub(super) fn fit(text: &str, width: usize) -> String {
    let line = text.lines().next().unwrap_or("");
    if line.chars().count() <= width {
        return line.to_string();
    }
    let mut cut: String = line.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn table(info: &RuntimeInfo, h: &Health) -> String {
    let mut out = fit(
        &format!(
            "harbormaster {} pid {} up {}s, {} — gateway {} — admin {}",
            h.version,
            info.pid,
            h.uptime_s,
            h.status,
            info.gateway.join(", "),
            info.admin
        ),
        WIDTH,
    );
    out.push('\n');
    if let Some(r) = &h.last_reload {
        let how = match r.ok {
            true => "ok".to_string(),
            false => format!("failed — {}", r.message),
        };
        out.push_str(&fit(&format!("last reload {}: {how}", r.at), WIDTH));
        out.push('\n');
    }
    let header = [
        "APP",
        "INSTANCE",
        "STATE",
        "PID",
        "PORT",
        "PROCS",
        "READY",
        "BREAKER",
        "IN-FLIGHT",
        "RESTARTS",
        "UPTIME",
    ];
    // A row, and the reason line below it (if any).
    let mut rows: Vec<(Vec<String>, Option<String>)> =
        vec![(header.map(String::from).to_vec(), None)];
    for (name, a) in &h.apps {
        let app = if a.draining {
            format!("{name} (draining)")
        } else {
            name.clone()
        };
        if a.instances.is_empty() {
            let state = if a.waiting.is_some() {
                "waiting"
            } else {
                "stopped"
            };
            let mut row = vec![app.clone(), "-".into(), state.into()];
            row.extend(std::iter::repeat_n("-".to_string(), header.len() - 3));
            rows.push((row, a.waiting.clone()));
        }
        for i in &a.instances {
            let row = vec![
                app.clone(),
                i.id.clone(),
                i.state.clone(),
                i.pid.map_or("-".into(), |p| p.to_string()),
                i.port.map_or("-".into(), |p| p.to_string()),
                i.processes.map_or("-".into(), |n| n.to_string()),
                if i.ready { "yes" } else { "no" }.into(),
                i.breaker.clone(),
                i.in_flight.to_string(),
                i.restarts.to_string(),
                i.uptime_s.map_or("-".into(), |u| format!("{u}s")),
            ];
            rows.push((row, reason(i)));
        }
        if let Some(e) = &a.restart_error {
            let row = vec![app.clone(), "-".into(), "restart failed".into()];
            rows.push((row, Some(e.clone())));
        }
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| {
            rows.iter()
                .filter_map(|(r, _)| r.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (row, why) in rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
        if let Some(why) = why {
            out.push_str(&fit(&format!("  ↳ {why}"), WIDTH));
            out.push('\n');
        }
    }
    out
}

fn detail(name: &str, a: &AppHealth) -> String {
    let mut out = format!(
        "{name}: {} app, {}{}, {}{}\n",
        a.kind,
        if a.required { "required" } else { "optional" },
        if a.draining { ", draining" } else { "" },
        if a.ready { "ready" } else { "not ready" },
        if a.restarting {
            ", restart under way"
        } else {
            ""
        },
    );
    if let Some(w) = &a.waiting {
        out.push_str(&format!("  {w}\n"));
    }
    if let Some(e) = &a.restart_error {
        out.push_str(&format!("  last restart failed: {e}\n"));
    }
    for i in &a.instances {
        out.push_str(&format!(
            "\n{} {}{}: pid {}, port {}, uptime {}, restarts {}, breaker {}, in flight {}\n",
            i.id,
            i.state,
            i.detail
                .as_ref()
                .map_or(String::new(), |d| format!(" ({d})")),
            i.pid.map_or("-".into(), |p| p.to_string()),
            i.port.map_or("-".into(), |p| p.to_string()),
            i.uptime_s.map_or("-".into(), |u| format!("{u}s")),
            i.restarts,
            i.breaker,
            i.in_flight,
        ));
        if let Some(p) = &i.last_probe {
            let ok = if p.ok { "ok" } else { "failed" };
            out.push_str(&format!(
                "  last probe: {ok} in {}.{}ms: {}\n",
                p.latency_us / 1000,
                p.latency_us % 1000 / 100,
                p.detail
            ));
        }
        let deaths: Vec<_> = i.deaths.iter().chain(&i.last_death).collect();
        if !deaths.is_empty() {
            out.push_str("  deaths (oldest first):\n");
        }
        for d in deaths {
            out.push_str(&format!(
                "    {} {} after {}.{}s: {}\n",
                d.at,
                d.exit.as_deref().unwrap_or("not started"),
                d.uptime_ms / 1000,
                d.uptime_ms % 1000 / 100,
                d.reason
            ));
        }
        if let Some(d) = i.last_death.as_ref().filter(|d| !d.last_lines.is_empty()) {
            out.push_str("  last lines:\n");
            for line in once(&d.last_lines) {
                out.push_str(&format!("    {line}\n"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_reason_is_cut_to_the_width_with_a_mark() {
        let cut = fit(&"x".repeat(300), WIDTH);
        assert_eq!(cut.chars().count(), WIDTH);
        assert!(cut.ends_with('…'));
        assert_eq!(fit("short\nsecond line", WIDTH), "short");
    }

    #[test]
    fn repeated_lines_are_shown_once_with_their_count() {
        let lines: Vec<String> = ["boom", "retrying", "boom", "boom"]
            .map(String::from)
            .to_vec();
        assert_eq!(once(&lines), ["boom (×3)", "retrying"]);
    }

    #[test]
    fn every_line_of_the_table_fits_100_columns() {
        let reason = "restarted 2 times within 1m; ".repeat(10);
        let health: Health = serde_json::from_value(serde_json::json!({
            "version": "0", "pid": 1, "uptime_s": 1, "status": "degraded", "in_flight": 0,
            "apps": {
                "api": { "kind": "managed", "required": true, "ready": false, "draining": false,
                         "in_flight": 0, "instances": [{ "id": "api#0", "state": "failed",
                         "detail": reason, "ready": false, "breaker": "closed", "in_flight": 0,
                         "restarts": 2 }] },
                "web": { "kind": "managed", "required": false, "ready": false, "draining": false,
                         "in_flight": 0, "waiting": "waiting for api to be ready", "instances": [] }
            }
        }))
        .unwrap();
        let info = RuntimeInfo {
            pid: 1,
            version: "0".into(),
            started_at: String::new(),
            config: String::new(),
            gateway: vec!["127.0.0.1:1".into()],
            admin: "http://127.0.0.1:2".into(),
            socket: String::new(),
        };
        let out = table(&info, &health);
        assert!(out.lines().all(|l| l.chars().count() <= WIDTH), "{out}");
        assert!(out.contains("web  -         waiting"), "{out}");
        assert!(out.contains("↳ waiting for api to be ready"), "{out}");
        assert!(failed(&health.apps["api"]) && !failed(&health.apps["web"]));
    }
}
