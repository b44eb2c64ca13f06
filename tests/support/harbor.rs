// Deadlines here bound waits on real external processes: wall-clock time is
// the point, and paused tokio time does not apply to them.
#![allow(clippy::disallowed_types)]

//! A running `harbormaster run` under test: its config in a temp dir, its JSON
//! log events collected as they arrive, and waits that poll a condition with
//! a deadline (never a fixed sleep).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::Value;

/// The testapp binary, brought up to date once per test binary (a no-op
/// under `cargo test --workspace`, which builds it anyway).
pub fn testapp() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_harbormaster")).with_file_name("testapp");
    static BUILT: std::sync::Once = std::sync::Once::new();
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = Command::new(cargo)
            .args(["build", "-q", "-p", "testapp"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(built || bin.exists(), "cannot build testapp");
    });
    bin
}

/// The `[apps.NAME]` command array running testapp with `args`.
pub fn testapp_command(args: &[&str]) -> String {
    let mut argv = vec![format!("{:?}", testapp().display().to_string())];
    argv.extend(args.iter().map(|a| format!("{a:?}")));
    format!("[{}]", argv.join(", "))
}

#[derive(Default)]
struct Log {
    events: Vec<Value>,
    closed: bool,
}

pub struct Harbor {
    pub child: Child,
    /// Where the config file (and by default the runtime dir) lives.
    pub dir: PathBuf,
    _owned: Option<tempfile::TempDir>,
    log: Arc<(Mutex<Log>, Condvar)>,
}

impl Harbor {
    /// Starts `harbormaster run` on `config` (TOML text) in a new temp dir.
    pub fn start(config: &str) -> Self {
        let owned = tempfile::tempdir().unwrap();
        let mut h = Self::start_in(owned.path(), config, &[]);
        h._owned = Some(owned);
        h
    }

    /// Starts it in a new temp dir with extra `run` arguments.
    pub fn start_with(config: &str, extra: &[&str]) -> Self {
        let owned = tempfile::tempdir().unwrap();
        let mut h = Self::start_in(owned.path(), config, extra);
        h._owned = Some(owned);
        h
    }

    /// Starts it in `dir`, which the caller keeps (so runs can share it).
    pub fn start_in(dir: &Path, config: &str, extra: &[&str]) -> Self {
        Self::spawn_in(dir, config, extra, &[])
    }

    /// Starts it in a new temp dir with `wrapper` in front of the binary,
    /// e.g. `["sh", "-c", "ulimit -n 1024 && exec \"$0\" \"$@\""]`.
    pub fn start_wrapped(config: &str, wrapper: &[&str]) -> Self {
        let owned = tempfile::tempdir().unwrap();
        let mut h = Self::spawn_in(owned.path(), config, &[], wrapper);
        h._owned = Some(owned);
        h
    }

    fn spawn_in(dir: &Path, config: &str, extra: &[&str], wrapper: &[&str]) -> Self {
        Self::spawn_with(dir, config, extra, wrapper, |_| {})
    }

    /// Starts it in a new temp dir; `configure` may add to the command
    /// (environment, fds to pass) before it is spawned.
    pub fn start_configured(config: &str, configure: impl FnOnce(&mut Command)) -> Self {
        let owned = tempfile::tempdir().unwrap();
        let mut h = Self::spawn_with(owned.path(), config, &[], &[], configure);
        h._owned = Some(owned);
        h
    }

    fn spawn_with(
        dir: &Path,
        config: &str,
        extra: &[&str],
        wrapper: &[&str],
        configure: impl FnOnce(&mut Command),
    ) -> Self {
        let file = dir.join("harbormaster.toml");
        std::fs::write(&file, config).unwrap();
        let bin = env!("CARGO_BIN_EXE_harbormaster");
        let mut cmd = match wrapper.split_first() {
            None => Command::new(bin),
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(bin);
                c
            }
        };
        configure(&mut cmd);
        let mut child = cmd
            .env("XDG_RUNTIME_DIR", super::xdg(dir))
            .args(["run", "--log-format", "json", "--log-level", "info", "-c"])
            .arg(&file)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start harbormaster");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new((Mutex::new(Log::default()), Condvar::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line)
                    .unwrap_or_else(|_| serde_json::json!({ "raw": line }));
                sink.0.lock().unwrap().events.push(value);
                sink.1.notify_all();
            }
            sink.0.lock().unwrap().closed = true;
            sink.1.notify_all();
        });
        Self {
            child,
            dir: dir.to_path_buf(),
            _owned: None,
            log,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Value> {
        self.log.0.lock().unwrap().events.clone()
    }

    /// Waits for the `nth` (0-based) event matching `pred`, up to `timeout`.
    pub fn wait_nth(&self, nth: usize, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = std::time::Instant::now() + timeout;
        let mut log = self.log.0.lock().unwrap();
        loop {
            if let Some(v) = log.events.iter().filter(|e| pred(e)).nth(nth) {
                return v.clone();
            }
            let now = std::time::Instant::now();
            if now >= deadline || log.closed {
                let all: Vec<String> = log.events.iter().map(|e| e.to_string()).collect();
                panic!(
                    "no matching event within {timeout:?}; events:\n{}",
                    all.join("\n")
                );
            }
            log = self.log.1.wait_timeout(log, deadline - now).unwrap().0;
        }
    }

    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        self.wait_nth(0, timeout, pred)
    }

    /// Waits for the `nth` change of `instance` (e.g. `web#0`) into state `to`.
    pub fn wait_state(&self, instance: &str, to: &str, nth: usize) -> Value {
        self.wait_nth(nth, Duration::from_secs(20), |e| {
            e["event"] == "state_change" && e["instance"] == instance && e["to"] == to
        })
    }

    /// Waits for the `nth` spawn of `instance` (a `running` event naming its pid and port).
    pub fn wait_spawned(&self, instance: &str, nth: usize) -> Value {
        self.wait_nth(nth, Duration::from_secs(20), |e| {
            e["event"] == "state_change"
                && e["instance"] == instance
                && e["to"] == "running"
                && e["reason"].as_str().is_some_and(|r| r.starts_with("pid "))
        })
    }

    /// `kill -9` of harbormaster after its guard (so nothing stops the
    /// apps until the next start), then waits for the exit.
    pub fn kill_9_without_guard(&mut self) {
        use nix::sys::signal::Signal::SIGKILL;
        let guard = self.wait_for(Duration::from_secs(10), |e| e["event"] == "guard_started")["pid"]
            .as_i64()
            .unwrap() as i32;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(guard), SIGKILL).unwrap();
        self.signal(SIGKILL);
        self.wait_exit(Duration::from_secs(5));
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits for the process to exit and its log to be read to the end;
    /// returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut log = self.log.0.lock().unwrap();
                while !log.closed && std::time::Instant::now() < deadline {
                    let left = deadline - std::time::Instant::now();
                    log = self.log.1.wait_timeout(log, left).unwrap().0;
                }
                return status.code();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "harbormaster did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Harbor {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid()),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = std::time::Instant::now() + Duration::from_secs(15);
            while self.child.try_wait().ok().flatten().is_none()
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The port in a `state_change` reason such as "pid 12, port 4000".
pub fn port_of(event: &Value) -> u16 {
    let reason = event["reason"].as_str().unwrap_or_default();
    reason
        .rsplit("port ")
        .next()
        .and_then(|p| p.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {event}"))
}

/// Whether `pid` is gone (or only a zombie waiting to be reaped by someone else).
pub fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

/// Whether `pid` no longer exists at all (not even as a zombie).
pub fn reaped(pid: i32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

/// Polls `cond` every 10 ms until it holds or `timeout` passes.
pub fn eventually(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One HTTP/1.1 request on its own connection (`Connection: close`):
/// `(status, body)`, or `None` when nothing answered.
pub fn request(
    addr: impl std::net::ToSocketAddrs,
    method: &str,
    host: &str,
    path: &str,
    headers: &str,
) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out.get(9..12)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    Some((code, body))
}

/// `GET path` with `Host: host`: `(status, body)`.
pub fn fetch(addr: impl std::net::ToSocketAddrs, host: &str, path: &str) -> Option<(u16, String)> {
    request(addr, "GET", host, path, "")
}

/// The status of `GET path` with `Host: host` sent to `addr`.
pub fn status(addr: std::net::SocketAddr, host: &str, path: &str) -> Option<u16> {
    fetch(addr, host, path).map(|(code, _)| code)
}

/// `POST path` (empty body), with a bearer token when given: `(status, body)`.
pub fn post(addr: impl std::net::ToSocketAddrs, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    request(addr, "POST", "x", path, &auth).expect("an answer to the POST")
}

/// GET `http://127.0.0.1:port/path`; the body as text.
pub fn get(port: u16, path: &str) -> Result<String, String> {
    fetch(("127.0.0.1", port), "127.0.0.1", path)
        .map(|(_, body)| body)
        .ok_or_else(|| format!("no answer from 127.0.0.1:{port}{path}"))
}

/// The admin API's `GET /health` document (`admin` is `host:port`);
/// `Value::Null` when nothing answered. Its top-level `in_flight` counts
/// every request the gateway has admitted until its response's last byte
/// (an SSE stream counts while it streams); each app and instance has its own.
pub fn health(admin: impl std::net::ToSocketAddrs) -> Value {
    fetch(admin, "x", "/health")
        .and_then(|(_, body)| serde_json::from_str(&body).ok())
        .unwrap_or(Value::Null)
}

impl Harbor {
    /// The address of the `n`th gateway listener (from its `listening` event).
    pub fn gateway(&self, n: usize) -> std::net::SocketAddr {
        let ev = self.wait_nth(n, Duration::from_secs(20), |e| e["event"] == "listening");
        ev["addr"].as_str().unwrap().parse().unwrap()
    }

    /// Waits until `count` instances became ready, then until the gateway
    /// routes `host` + `path` (the route table follows state changes).
    pub fn wait_routable(&self, count: usize, host: &str, path: &str) {
        self.wait_nth(count - 1, Duration::from_secs(20), |e| {
            e["event"] == "state_change" && e["to"] == "ready"
        });
        let addr = self.gateway(0);
        eventually(
            Duration::from_secs(10),
            "the gateway routes to the instance",
            || status(addr, host, path).is_some_and(|s| s != 503 && s != 404),
        );
    }

    /// Waits until the gateway answers `GET /` for `host` with neither 503
    /// nor 404 (external upstreams take traffic after their first probe).
    pub fn wait_serving(&self, host: &str) {
        let addr = self.gateway(0);
        eventually(
            Duration::from_secs(10),
            "the gateway serves the app",
            || status(addr, host, "/").is_some_and(|s| s != 503 && s != 404),
        );
    }

    /// The address of the `n`th `[gateway.tls]` listener.
    pub fn tls_gateway(&self, n: usize) -> std::net::SocketAddr {
        let ev = self.wait_nth(n, Duration::from_secs(20), |e| {
            e["event"] == "listening" && e["tls"] == true
        });
        ev["addr"].as_str().unwrap().parse().unwrap()
    }

    /// The admin API's address (from its `admin_listening` event).
    pub fn admin(&self) -> std::net::SocketAddr {
        let ev = self.wait_for(Duration::from_secs(20), |e| e["event"] == "admin_listening");
        ev["addr"].as_str().unwrap().parse().unwrap()
    }

    /// Peak resident memory (VmHWM) of harbormaster, in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    }
}

/// A testapp run directly (not through harbormaster), killed on drop.
pub struct Backend {
    child: Child,
    pub port: u16,
}

impl Backend {
    pub fn start(args: &[&str]) -> Self {
        let mut child = Command::new(testapp())
            .args(["--port", "0"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start testapp");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let port = loop {
            let mut line = String::new();
            assert!(
                out.read_line(&mut line).unwrap() > 0,
                "testapp exited early"
            );
            if let Some(rest) = line.split("listening on 127.0.0.1:").nth(1) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        // Keep draining its stdout so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in out.lines() {});
        Self { child, port }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Passes `listeners` to the command as fds 3, 4, … (the systemd socket
/// activation convention), with `LISTEN_FDS` and `LISTEN_FDNAMES`.
pub fn pass_listeners(cmd: &mut Command, listeners: &[&std::net::TcpListener], names: &[&str]) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fds: Vec<i32> = listeners.iter().map(|l| l.as_raw_fd()).collect();
    assert!(
        fds.iter().all(|&fd| fd >= 3 + fds.len() as i32),
        "listener fds overlap the target range"
    );
    cmd.env("LISTEN_FDS", fds.len().to_string())
        .env("LISTEN_FDNAMES", names.join(":"));
    // SAFETY: only dup2 (async-signal-safe) runs between fork and exec.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            for (i, &fd) in fds.iter().enumerate() {
                let borrowed = std::os::fd::BorrowedFd::borrow_raw(fd);
                let target = nix::unistd::dup2_raw(borrowed, 3 + i as i32)?;
                // fd 3+i must stay open (and dup2 cleared close-on-exec).
                std::mem::forget(target);
            }
            Ok(())
        });
    }
}
