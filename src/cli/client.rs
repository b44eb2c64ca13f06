//! Finding the running harbormaster through its runtime directory and talking
//! to its admin API. A runtime.json is trusted only if its lock is held, its
//! pid is alive and `/live` answers within 2 seconds; otherwise it is stale.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use super::Cli;
use crate::admin::api::RuntimeInfo;
use crate::lifecycle::runtime_dir::{self, read_info};

/// Exit code: no running instance (or a stale one).
pub const NOT_RUNNING: u8 = 3;

/// `--runtime-dir`, else `[runtime] dir` of the config, else `.harbormaster`
/// beside the config file (so a broken config does not hide a running one).
pub fn runtime_dir(cli: &Cli) -> PathBuf {
    if let Some(dir) = &cli.runtime_dir {
        return dir.clone();
    }
    match crate::config::load(&cli.config) {
        Ok(config) => config.runtime.dir.unwrap_or(config.runtime.state_dir),
        Err(_) => std::path::absolute(&cli.config)
            .unwrap_or_else(|_| cli.config.clone())
            .parent()
            .map_or_else(
                || PathBuf::from(".harbormaster"),
                |p| p.join(".harbormaster"),
            ),
    }
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
    match request(&info.admin, "GET", "/live", None, Duration::from_secs(2)).await {
        Ok((200, _)) => Found::Running(info),
        Ok((code, _)) => stale(format!("pid {} answers /live with {code}", info.pid)),
        Err(e) => stale(format!(
            "pid {} does not answer /live within 2 s ({e})",
            info.pid
        )),
    }
}

/// The admin token of `dir`.
pub fn token(dir: &Path) -> Result<String, String> {
    std::fs::read_to_string(dir.join(runtime_dir::TOKEN))
        .map(|t| t.trim().to_string())
        .map_err(|e| {
            format!(
                "cannot read {}: {e}",
                dir.join(runtime_dir::TOKEN).display()
            )
        })
}

/// One request to the admin API: (status, body).
pub async fn request(
    admin: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let addr = admin
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(&addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, addr.as_str());
        if let Some(token) = token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let req = req
            .body(Full::new(Bytes::new()))
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
