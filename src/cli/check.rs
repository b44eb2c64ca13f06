//! `harbormaster check`: validate only, print one line per app or every error.

use std::path::Path;
use std::process::ExitCode;

use crate::config::{self, AppConfig, AppKind, Command, LoadError, ProbeKind};

pub fn run(path: &Path) -> ExitCode {
    match config::load(path) {
        Ok(config) => {
            for app in config.apps.values() {
                println!("{}", summary(app));
            }
            let tls = config.gateway.tls.iter();
            let expiring =
                tls.flat_map(|t| config::tls::expiry_warnings(t, std::time::SystemTime::now()));
            for warning in warnings(&config).into_iter().chain(expiring) {
                eprintln!("{}: warning: {warning}", path.display());
            }
            let listen: Vec<String> = config
                .gateway
                .listen
                .iter()
                .map(|a| a.to_string())
                .collect();
            let mcp = config.mcp.as_ref().map_or(String::new(), |m| {
                let n = m.servers.len();
                format!(", {n} MCP server{}", if n == 1 { "" } else { "s" })
            });
            let tls: Vec<String> = (config.gateway.tls.iter())
                .flat_map(|t| &t.listen)
                .map(|a| format!(", https on {a}"))
                .collect();
            println!(
                "{}: valid, {} app{}{mcp}, gateway on {}{}",
                path.display(),
                config.apps.len(),
                if config.apps.len() == 1 { "" } else { "s" },
                listen.join(", "),
                tls.concat()
            );
            ExitCode::SUCCESS
        }
        Err(LoadError::Invalid(errors)) => {
            eprintln!("{errors}");
            let n = errors.len();
            eprintln!(
                "{}: {n} error{}",
                path.display(),
                if n == 1 { "" } else { "s" }
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// What is valid but will likely fail at start: a command that is not
/// there or not executable (it may be installed before `run`, so this is
/// not an error).
pub fn warnings(config: &config::Config) -> Vec<String> {
    config
        .apps
        .values()
        .filter_map(|app| {
            let AppKind::Managed(m) = &app.kind else {
                return None;
            };
            let Command::Argv(argv) = &m.command else {
                return None; // a shell line: the shell decides
            };
            let program = argv.first()?;
            let path = m
                .env
                .get("PATH")
                .cloned()
                .or_else(|| std::env::var("PATH").ok())
                .unwrap_or_default();
            find_program(program, &m.working_dir, &path)
                .err()
                .map(|why| {
                    format!(
                        "apps.{}.command: `{program}` {why} — install it, or give its full path",
                        app.name
                    )
                })
        })
        .collect()
}

/// Whether `program` resolves to an executable file the way the spawn will
/// resolve it: a path with a `/` from the working dir, a bare name on PATH.
fn find_program(program: &str, working_dir: &Path, path: &str) -> Result<(), &'static str> {
    use std::os::unix::fs::PermissionsExt;
    let executable =
        |p: &Path| std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        return match executable(&working_dir.join(program)) {
            Ok(true) => Ok(()),
            Ok(false) => Err("is not an executable file"),
            Err(_) => Err("does not exist"),
        };
    }
    let found = std::env::split_paths(path)
        .any(|dir| executable(&working_dir.join(dir).join(program)).unwrap_or(false));
    if found {
        Ok(())
    } else {
        Err("is not found on PATH")
    }
}

/// One line: what the app is, where its traffic comes from, how it is checked.
pub fn summary(app: &AppConfig) -> String {
    let what = match &app.kind {
        AppKind::Managed(m) => {
            let program = match &m.command {
                Command::Argv(argv) => argv.first().cloned().unwrap_or_default(),
                Command::Shell(line) => format!("sh -c {line:?}"),
            };
            let port = if m.port == 0 {
                "auto".to_string()
            } else {
                m.port.to_string()
            };
            format!(
                "managed `{program}`, {} instance{}, port {port}",
                m.instances,
                if m.instances.get() == 1 { "" } else { "s" }
            )
        }
        AppKind::External { upstreams } => {
            let list: Vec<String> = upstreams.iter().map(|u| u.to_string()).collect();
            format!("external {}", list.join(", "))
        }
    };
    let routes: Vec<String> = app
        .routes
        .iter()
        .map(|r| match (&r.host, &r.path) {
            (Some(h), Some(p)) => format!("{h}{p}"),
            (Some(h), None) => h.to_string(),
            (None, Some(p)) => p.clone(),
            (None, None) => String::new(),
        })
        .collect();
    let readiness = match app.readiness.as_ref().map(|p| &p.kind) {
        Some(ProbeKind::Http { path }) => format!("http {path}"),
        Some(ProbeKind::Exec { argv }) => format!("exec {}", argv.join(" ")),
        Some(ProbeKind::Tcp) | None => "tcp".to_string(),
    };
    let deps = if app.depends_on.is_empty() {
        String::new()
    } else {
        let d: Vec<&str> = app.depends_on.keys().map(|n| n.as_str()).collect();
        format!(", after {}", d.join(", "))
    };
    format!(
        "{}: {what}; routes {}; readiness {readiness}{}{deps}",
        app.name,
        routes.join(", "),
        if app.required { "" } else { "; not required" },
    )
}
