//! MCP peers for the black-box tests: the official Python SDK as the
//! client (tests/mcp/client.py), the reference server-everything (npm) and
//! our fault-injection server (tests/mcp/fault_server.py) as upstreams.
//! Installed by scripts/deps/python-mcp.sh and scripts/deps/npm-mcp.sh; a
//! missing peer fails the test with the command that installs it.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The venv's python with the `mcp` package.
pub fn python() -> PathBuf {
    let p = root().join("target/peers/venv/bin/python");
    assert!(
        p.exists(),
        "the Python MCP SDK is missing: run scripts/deps/python-mcp.sh (expected {})",
        p.display()
    );
    p
}

/// `["node", ".../server-everything/dist/index.js"]` as a TOML array.
pub fn everything_command() -> String {
    let js = root().join(
        "target/peers/npm/node_modules/@modelcontextprotocol/server-everything/dist/index.js",
    );
    assert!(
        js.exists(),
        "server-everything is missing: run scripts/deps/npm-mcp.sh (expected {})",
        js.display()
    );
    format!("[\"node\", \"{}\"]", js.display())
}

/// Our fault-injection server as a TOML command array.
pub fn fault_command() -> String {
    format!(
        "[\"{}\", \"{}\"]",
        python().display(),
        root().join("tests/mcp/fault_server.py").display()
    )
}

fn client_cmd(target: &[String], mode: &str, command: &[&str]) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(root().join("tests/mcp/client.py"))
        .args(target)
        .args(["--mode", mode])
        .args(command);
    cmd
}

/// `--http URL`.
pub fn http(url: &str) -> Vec<String> {
    vec!["--http".into(), url.into()]
}

/// `--stdio harbormaster CONFIG`.
pub fn stdio(config: &std::path::Path) -> Vec<String> {
    vec![
        "--stdio".into(),
        env!("CARGO_BIN_EXE_harbormaster").into(),
        config.display().to_string(),
    ]
}

/// `--stdio harbormaster CONFIG` with `XDG_RUNTIME_DIR` set, so it finds
/// the harbor a test started in `dir` (see `support::xdg`).
pub fn stdio_to(dir: &std::path::Path) -> Vec<String> {
    let mut args = stdio(&dir.join("harbormaster.toml"));
    args.push("--env".into());
    args.push(format!("XDG_RUNTIME_DIR={}", super::xdg(dir).display()));
    args
}

/// Runs `client.py … list-call CALLS…`; its one JSON line.
pub fn list_call(target: &[String], mode: &str, calls: &[&str]) -> Value {
    let mut args = vec!["list-call"];
    args.extend_from_slice(calls);
    run_once(target, mode, &args)
}

/// Runs `client.py … COMMAND…` to its end; its last JSON line.
pub fn run_once(target: &[String], mode: &str, args: &[&str]) -> Value {
    let out = client_cmd(target, mode, args)
        .stderr(Stdio::piped())
        .output()
        .expect("run the Python MCP client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|_| {
        panic!(
            "the Python client failed ({}):\nstdout: {stdout}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// A connected Python client (`watch` or `parallel`), its JSON lines collected.
pub struct Client {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<(Mutex<Vec<Value>>, Condvar)>,
}

impl Client {
    pub fn start(target: &[String], mode: &str, command: &[&str]) -> Self {
        let mut child = client_cmd(target, mode, command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run the Python MCP client");
        let stdout = child.stdout.take().unwrap();
        let lines = Arc::new((Mutex::new(Vec::new()), Condvar::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    sink.0.lock().unwrap().push(v);
                    sink.1.notify_all();
                }
            }
        });
        let stdin = child.stdin.take();
        Self {
            child,
            stdin,
            lines,
        }
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    pub fn lines(&self) -> Vec<Value> {
        self.lines.0.lock().unwrap().clone()
    }

    /// Waits for the `nth` (0-based) line matching `pred`.
    pub fn wait_nth(
        &self,
        nth: usize,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        let mut lines = self.lines.0.lock().unwrap();
        loop {
            if let Some(v) = lines.iter().filter(|v| pred(v)).nth(nth) {
                return v.clone();
            }
            let now = Instant::now();
            assert!(
                now < deadline,
                "timed out waiting for {what}; client said: {lines:#?}"
            );
            lines = self.lines.1.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    pub fn event(&self, event: &str, nth: usize, timeout: Duration) -> Value {
        self.wait_nth(nth, timeout, event, |v| v["event"] == event)
    }

    /// Closes its stdin and waits for it to exit.
    pub fn finish(mut self, timeout: Duration) -> Vec<Value> {
        drop(self.stdin.take());
        let deadline = Instant::now() + timeout;
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the Python client did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(50));
        self.lines()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
