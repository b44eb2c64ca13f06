//! Finding the running harbormaster through its runtime directory and talking
//! to its admin API over `admin.sock`. A runtime.json is trusted only if its
//! lock is held, its pid is alive and `/live` answers on the socket within 2
//! seconds; otherwise it is stale.
//!
//! The CLI never talks TCP to the admin API: an address read from a file
//! could be anyone's, and the socket needs no credential (its file mode is
//! the authentication), so the CLI has none to leak.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::Cli;
use crate::admin::api::RuntimeInfo;
use crate::config::LoadError;
use crate::lifecycle::runtime_dir::{self, read_info};

/// Exit code: no running instance (or a stale one).
pub const NOT_RUNNING: u8 = 3;

/// The runtime and state dirs of the config named on the command line.
pub struct Dirs {
    pub runtime: PathBuf,
    pub state: PathBuf,
    /// Why the config did not load, when it did not (the dirs then come from
    /// a lenient reading of the raw file).
    pub config_error: Option<String>,
}

/// `--runtime-dir`, else `[runtime] dir`, else the default for the config's
/// path; the same for `state_dir`. A config that does not load does not hide
/// a running instance: the default depends only on the file's path, and
/// `[runtime] dir`/`state_dir` are read leniently from the raw text.
pub fn dirs(cli: &Cli) -> Dirs {
    let (configured, state, config_error) = match crate::config::load(&cli.config) {
        Ok(config) => (config.runtime.dir, config.runtime.state_dir, None),
        Err(e) => {
            let why = match &e {
                LoadError::Invalid(errors) => format!("{} error(s)", errors.len()),
                other => other.to_string(),
            };
            let base = std::path::absolute(&cli.config)
                .unwrap_or_else(|_| cli.config.clone())
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_default();
            let text = std::fs::read_to_string(&cli.config).unwrap_or_default();
            let raw = |key| lenient_runtime_key(&text, key).map(|d| base.join(d));
            let state = raw("state_dir").unwrap_or_else(|| base.join(".harbormaster"));
            (raw("dir"), state, Some(why))
        }
    };
    Dirs {
        runtime: runtime_dir::locate(
            cli.runtime_dir.as_deref(),
            configured.as_deref(),
            &cli.config,
        ),
        state,
        config_error,
    }
}

/// `[runtime] KEY = "…"` from a file that may not parse: as TOML if the
/// syntax holds (whatever else is wrong), else line by line.
fn lenient_runtime_key(text: &str, key: &str) -> Option<String> {
    if let Ok(table) = toml::from_str::<toml::Table>(text) {
        return table.get("runtime")?.get(key)?.as_str().map(String::from);
    }
    let mut in_runtime = false;
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_runtime = line.trim_start_matches('[').trim_end_matches(']').trim() == "runtime";
            continue;
        }
        if in_runtime && line.split('=').next().is_some_and(|k| k.trim() == key) {
            let one: toml::Table = toml::from_str(line).ok()?;
            return one.get(key)?.as_str().map(String::from);
        }
    }
    None
}

/// What the runtime directory says.
pub enum Found {
    Running(RuntimeInfo),
    Stale { info: RuntimeInfo, why: String },
    Nothing,
}

pub async fn find(dir: &Path) -> Found {
    let Some(info) = read_info(dir) else {
        return Found::Nothing;
    };
    let stale = |why: String| Found::Stale {
        info: info.clone(),
        why,
    };
    if !runtime_dir::is_locked(dir) {
        return stale(format!("its lock is free: pid {} is not running", info.pid));
    }
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(info.pid as i32), None).is_ok();
    if !alive {
        return stale(format!("pid {} is not running", info.pid));
    }
    match request(dir, "GET", "/live", Duration::from_secs(2)).await {
        Ok((200, _)) => Found::Running(info),
        Ok((code, _)) => stale(format!("pid {} answers /live with {code}", info.pid)),
        Err(e) => stale(format!(
            "pid {} does not answer /live within 2 s ({e})",
            info.pid
        )),
    }
}

/// One request to the admin API over `DIR/admin.sock`: (status, body).
pub async fn request(
    dir: &Path,
    method: &str,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    request_with(dir, method, path, String::new(), timeout).await
}

/// [`request`] with a JSON `body`.
pub async fn request_with(
    dir: &Path,
    method: &str,
    path: &str,
    body: String,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let socket = dir.join(runtime_dir::SOCKET);
    let exchange = async {
        let stream = tokio::net::UnixStream::connect(&socket)
            .await
            .map_err(|e| format!("connect {}: {e}", socket.display()))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, "localhost")
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let res = sender.send_request(req).await.map_err(|e| e.to_string())?;
        let status = res.status().as_u16();
        let body = res
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(timeout, exchange)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer within {}",
                humantime::format_duration(timeout)
            ))
        })
}

/// A current-thread runtime for a CLI verb.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a current-thread runtime builds")
        .block_on(f)
}

#[cfg(test)]
mod tests {
    use super::lenient_runtime_key;

    #[test]
    fn runtime_keys_are_found_in_a_file_that_does_not_parse() {
        let broken =
            "[gateway\nlisten = 3\n[runtime]\ndir = \"/tmp/rt\"\nstate_dir = 'st'\n[apps.x]\n";
        assert_eq!(
            lenient_runtime_key(broken, "dir").as_deref(),
            Some("/tmp/rt")
        );
        assert_eq!(
            lenient_runtime_key(broken, "state_dir").as_deref(),
            Some("st")
        );
        let invalid = "[runtime]\ndir = \"/x\"\nunknown = 1\n";
        assert_eq!(lenient_runtime_key(invalid, "dir").as_deref(), Some("/x"));
        assert_eq!(lenient_runtime_key("[apps.a]\ndir = \"no\"\n", "dir"), None);
    }
}
