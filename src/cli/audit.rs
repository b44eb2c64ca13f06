//! `harbormaster audit`: the audit log as a table or JSON lines, read
//! straight from the database the config names (SQLite or PostgreSQL),
//! whether harbormaster runs or not. `-f` keeps printing new rows.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use super::Cli;
use crate::audit::query::{AdminRow, Filter, McpRow, Reader};
use crate::audit::CallStatus;

/// How often `-f` looks for new rows.
const FOLLOW_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// Only records newer than this (e.g. 15m, 2h, 7d).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub since: Option<Duration>,
    /// Only MCP calls with this status.
    #[arg(long, value_parser = parse_status)]
    pub status: Option<CallStatus>,
    /// Only MCP calls to tools matching this glob (exposed names, e.g. 'everything__*').
    #[arg(long)]
    pub tool: Option<String>,
    /// Only MCP calls from this client.
    #[arg(long)]
    pub client: Option<String>,
    /// Show the admin actions (drain, restart, reload, …) instead of MCP calls.
    #[arg(long, conflicts_with_all = ["status", "tool", "client"])]
    pub admin: bool,
    /// One JSON object per line instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Keep printing new records.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

fn parse_status(s: &str) -> Result<CallStatus, String> {
    CallStatus::parse(s).ok_or_else(|| {
        let all: Vec<&str> = CallStatus::ALL.iter().map(|s| s.as_str()).collect();
        format!("use one of: {}", all.join(", "))
    })
}

pub fn audit(cli: &Cli, args: &AuditArgs) -> ExitCode {
    let Some(config) = super::run::load_or_report(&cli.config) else {
        return ExitCode::FAILURE;
    };
    let Some(audit) = config.audit.clone() else {
        eprintln!(
            "{}: the audit log is off — add an [audit] table (or [mcp]) to turn it on",
            cli.config.display()
        );
        return ExitCode::FAILURE;
    };
    let tool = match args.tool.as_deref().map(globset::Glob::new).transpose() {
        Ok(glob) => glob.map(|g| g.compile_matcher()),
        Err(e) => {
            eprintln!("invalid --tool glob: {e}");
            return ExitCode::from(2);
        }
    };
    let filter = Filter {
        since: args.since.and_then(|d| SystemTime::now().checked_sub(d)),
        status: args.status,
        tool,
        client: args.client.clone(),
        after_id: 0,
    };
    let Some(runtime) = super::async_runtime(false) else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(async {
        let mut reader = Reader::open(&audit).await?;
        show(&mut reader, filter, args).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("harbormaster audit: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn show(reader: &mut Reader, mut filter: Filter, args: &AuditArgs) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    let mut header = !args.json;
    loop {
        let (lines, last) = if args.admin {
            let rows = reader.admin_actions(&filter).await?;
            let last = rows.last().map(|r| r.id);
            (admin_lines(&rows, args.json, header), last)
        } else {
            let (rows, last) = reader.mcp_calls(&filter).await?;
            (mcp_lines(&rows, args.json, header), last)
        };
        header = false;
        for line in lines {
            writeln!(out, "{line}")?;
        }
        out.flush()?;
        // Rows found: ask for the next page at once; none: done, or wait.
        match last {
            Some(id) => filter.after_id = id,
            None if !args.follow => return Ok(()),
            None => tokio::time::sleep(FOLLOW_EVERY).await,
        }
    }
}

/// Rows as JSON lines, or a table (with its header line first when asked).
fn lines<R: serde::Serialize>(
    rows: &[R],
    json: bool,
    header: Option<String>,
    row: impl Fn(&R) -> String,
) -> Vec<String> {
    if json {
        return rows
            .iter()
            .map(|r| serde_json::to_string(r).unwrap_or_default())
            .collect();
    }
    header.into_iter().chain(rows.iter().map(row)).collect()
}

fn mcp_lines(rows: &[McpRow], json: bool, header: bool) -> Vec<String> {
    let header = header.then(|| {
        format!(
            "{:<24}  {:<12}  {:<5}  {:<32}  {:<12}  {:>9}  ERROR",
            "TIME", "CLIENT", "FRONT", "TOOL", "STATUS", "LATENCY"
        )
    });
    lines(rows, json, header, |r| {
        format!(
            "{:<24}  {:<12}  {:<5}  {:<32}  {:<12}  {:>7.1}ms  {}",
            r.ts,
            r.client,
            r.front,
            r.tool,
            r.status,
            r.latency_ms,
            r.error.as_deref().unwrap_or("")
        )
    })
}

fn admin_lines(rows: &[AdminRow], json: bool, header: bool) -> Vec<String> {
    let header = header.then(|| {
        format!(
            "{:<24}  {:<10}  {:<16}  {:<14}  {:<21}  VIA",
            "TIME", "ACTION", "TARGET", "RESULT", "PEER"
        )
    });
    lines(rows, json, header, |r| {
        format!(
            "{:<24}  {:<10}  {:<16}  {:<14}  {:<21}  {}",
            r.ts,
            r.action,
            r.target.as_deref().unwrap_or("-"),
            r.result,
            r.peer,
            r.via
        )
    })
}
