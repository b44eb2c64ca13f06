//! Specification of the `[mcp]` table: the contract file is accepted and
//! typed, and each rule reports `line:col` with a hint.

use std::path::PathBuf;

use harbormaster::config::{self, McpTransport};

fn file() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/harbormaster.toml"
    ))
}

const APP: &str = "[apps.web]\nroutes = [{ host = \"web.localhost\" }]\ncommand = [\"true\"]\n";

fn errors(text: &str) -> Vec<String> {
    match config::from_str_with_env(text, &file(), &|_| None) {
        Ok(_) => Vec::new(),
        Err(errs) => errs
            .iter()
            .map(|e| {
                e.to_string()
                    .split_once(".toml:")
                    .map_or(String::new(), |x| x.1.to_string())
            })
            .collect(),
    }
}

fn assert_error(text: &str, expected: &str) {
    let errs = errors(text);
    assert!(
        errs.iter().any(|e| e.starts_with(expected)),
        "expected an error starting with {expected:?}, got {errs:#?}"
    );
}

/// A copy of the shared contract (`../shared/config-contract.toml`), `[audit]` included.
fn contract() -> String {
    include_str!("mcp/contract.toml").to_string()
}

#[test]
fn check_accepts_the_contract_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("contract.toml");
    std::fs::write(&file, contract()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_harbormaster"))
        .args(["check", "-c"])
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("valid, 2 apps, 3 MCP servers"), "{stdout}");
    // Where the repository sits beside the shared design (the team's
    // checkout), the real file passes too and the copy is in step with it.
    let real =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/config-contract.toml");
    if real.exists() {
        assert_eq!(
            std::fs::read_to_string(&real).unwrap(),
            contract(),
            "tests/mcp/contract.toml is out of step with {}",
            real.display()
        );
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_harbormaster"))
            .args(["check", "-c"])
            .arg(&real)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_contract_mcp_table_is_accepted_and_typed() {
    let path = file();
    let config = config::from_str_with_env(&contract(), &path, &|_| None)
        .unwrap_or_else(|e| panic!("the contract must validate:\n{e}"));
    let mcp = config.mcp.expect("[mcp] is present");
    assert_eq!(mcp.separator, "__");
    assert_eq!(mcp.call_timeout.as_secs(), 60);
    assert_eq!(mcp.stdio_client, "local");
    assert_eq!(mcp.routes[0].path.as_deref(), Some("/mcp"));
    assert!(!mcp.kill_switch);
    assert_eq!(mcp.servers.len(), 3);
    let everything = mcp
        .servers
        .values()
        .find(|s| s.name.as_str() == "everything")
        .unwrap();
    let McpTransport::Stdio(stdio) = &everything.transport else {
        panic!("everything is a stdio server")
    };
    assert_eq!(stdio.command[0], "npx");
    assert_eq!(stdio.stop_timeout.as_secs(), 5);
    assert_eq!(everything.circuit_breaker.failures.get(), 5);
    assert_eq!(everything.rate_limit.unwrap().calls.get(), 100);
    let remote = mcp
        .servers
        .values()
        .find(|s| s.name.as_str() == "remote")
        .unwrap();
    assert!(
        matches!(&remote.transport, McpTransport::Http { headers, .. } if headers.contains_key("Authorization"))
    );
    let web = mcp
        .servers
        .values()
        .find(|s| s.name.as_str() == "webtools")
        .unwrap();
    assert!(
        matches!(&web.transport, McpTransport::App { app, path } if app.as_str() == "web" && path == "/mcp")
    );
    let alice = &mcp.clients["alice"];
    assert_eq!(alice.roles, vec!["dev".to_string()]);
    assert_eq!(alice.rate_limit.unwrap().calls.get(), 10);
    assert_eq!(
        mcp.roles["dev"].deny,
        vec!["everything__get-env".to_string()]
    );
}

#[test]
fn a_server_needs_exactly_one_of_command_url_app() {
    assert_error(
        "[mcp.servers.a]\ntools = []\n",
        "1:1: mcp.servers.a: server has none of command, url and app",
    );
    assert_error(
        "[mcp.servers.a]\ncommand = [\"x\"]\nurl = \"http://127.0.0.1:1/mcp\"\n",
        "3:7: mcp.servers.a.url: server has more than one of command, url and app (command and url)",
    );
}

#[test]
fn app_servers_name_an_existing_app() {
    let text = format!("{APP}[mcp.servers.a]\napp = \"webb\"\n");
    assert_error(
        &text,
        "5:7: mcp.servers.a.app: unknown app `webb` — did you mean `web`?",
    );
}

#[test]
fn tool_names_are_checked() {
    assert_error(
        "[mcp.servers.a]\ncommand = [\"x\"]\ntools = [\"ok\", \"bad name\"]\n",
        "3:16: mcp.servers.a.tools[1]: invalid tool name \"bad name\"",
    );
    let long = "t".repeat(129);
    assert_error(
        &format!("[mcp.servers.a]\ncommand = [\"x\"]\ntools = [\"{long}\"]\n"),
        "3:10: mcp.servers.a.tools[0]: invalid tool name",
    );
}

#[test]
fn roles_named_by_clients_must_exist() {
    assert_error(
        "[mcp.clients.bob]\ntoken = \"0123456789abcdef0\"\nroles = [\"devs\"]\n[mcp.roles.dev]\nallow = [\"*\"]\n",
        "3:10: mcp.clients.bob.roles[0]: unknown role `devs` — did you mean `dev`?",
    );
}

#[test]
fn keys_of_another_kind_of_server_are_refused() {
    assert_error(
        "[mcp.servers.a]\nurl = \"http://127.0.0.1:1/mcp\"\nworking_dir = \".\"\n",
        "3:15: mcp.servers.a.working_dir: `working_dir` applies only to servers with `command`",
    );
    assert_error(
        "[mcp]\nkill_swich = true\n",
        "2:1: mcp.kill_swich: unknown key `kill_swich` — did you mean `kill_switch`?",
    );
}

#[test]
fn server_names_cannot_hold_the_separator() {
    assert_error(
        "[mcp.servers.a__b]\ncommand = [\"x\"]\n",
        "1:14: mcp.servers.a__b: invalid server name \"a__b\": contains the separator \"__\"",
    );
}

#[test]
fn the_mcp_route_cannot_take_an_app_route() {
    let text = "[apps.web]\nroutes = [{ path = \"/mcp\" }]\ncommand = [\"true\"]\n[mcp]\nroutes = [{ path = \"/mcp\" }]\n";
    assert_error(
        text,
        "5:11: mcp.routes[0]: this route is already claimed by app `web`",
    );
}
