//! Helpers shared by the black-box tests: run the real binaries.
#![allow(dead_code)]

pub mod external;
pub mod harbor;
pub mod load;
pub mod mcp;
pub mod mcp_http;
pub mod postgres;
pub mod raw;
pub mod tls;

use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

/// What a finished command printed and how it exited.
#[derive(Debug)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A command to run to completion.
pub struct Cmd(Command);

impl Cmd {
    pub fn harbormaster<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_harbormaster"));
        cmd.args(args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env_remove("RUST_LOG")
            .env_remove("HARBORMASTER_CONFIG")
            .env_remove("HARBORMASTER_RUNTIME_DIR");
        Self(cmd)
    }

    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.0.env(key, value);
        self
    }

    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.0.current_dir(dir);
        self
    }

    pub fn run(mut self) -> Output {
        let out = self.0.output().expect("run harbormaster");
        Output {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// Runs `harbormaster -c DIR/harbormaster.toml ARGS…` for the harbor of a
/// test folder (see [`xdg`]).
pub fn verb(dir: &Path, args: &[&str]) -> Output {
    let config = dir.join("harbormaster.toml");
    let mut all = vec!["-c".to_string(), config.to_string_lossy().into_owned()];
    all.extend(args.iter().map(|a| a.to_string()));
    Cmd::harbormaster(all)
        .env("XDG_RUNTIME_DIR", xdg(dir))
        .current_dir(dir)
        .run()
}

/// [`verb`] off the async runtime (for tokio tests that keep traffic
/// flowing meanwhile).
pub fn verb_in(dir: &Path, args: &[&str]) -> tokio::task::JoinHandle<Output> {
    let dir = dir.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        verb(&dir, &args)
    })
}

/// The `XDG_RUNTIME_DIR` that [`harbor::Harbor`] and [`verb_in`] give the
/// binary for a test folder, so runtime dirs go away with the folder.
pub fn xdg(dir: &Path) -> std::path::PathBuf {
    dir.join(".xdg")
}

/// Writes `text` as DIR/harbormaster.toml, then runs `harbormaster reload` (see [`verb_in`]).
pub fn reload_in(dir: &Path, text: String) -> tokio::task::JoinHandle<Output> {
    std::fs::write(dir.join("harbormaster.toml"), text).unwrap();
    verb_in(dir, &["reload"])
}

/// A free loopback port for a test that binds it again and again (a fixed
/// app port across restarts). Taken below the kernel's ephemeral range:
/// a port from `bind(:0)` can be handed to any other test's `bind(:0)`
/// while it is free between two of its uses; one below the range cannot.
pub fn fixed_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let span = low.saturating_sub(10_000).max(1);
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
    for i in 0..span as u64 {
        let port = 10_000 + ((seed.wrapping_mul(7919) + i * 104_729) % span as u64) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 10000..{low}");
}
