//! Running one probe against an instance: `http` (GET, 2xx passes), `tcp`
//! (connect) or `exec` (exit 0 within the timeout passes).

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;

use crate::config::ProbeKind;

/// One probe's result, kept for status and for death records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeOutcome {
    pub ok: bool,
    pub latency: Duration,
    /// `200`, `connected`, `exit code 1`, `connect: Connection refused`, …
    pub detail: String,
}

impl std::fmt::Display for ProbeOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} in {:.1} ms",
            self.detail,
            self.latency.as_secs_f64() * 1000.0
        )
    }
}

/// Runs `kind` against `addr`, bounded by `timeout`.
pub async fn check(kind: &ProbeKind, addr: SocketAddr, timeout: Duration) -> ProbeOutcome {
    let start = Instant::now();
    let result = tokio::time::timeout(timeout, run(kind, addr)).await;
    let latency = start.elapsed();
    match result {
        Ok(Ok(detail)) => ProbeOutcome {
            ok: true,
            latency,
            detail,
        },
        Ok(Err(detail)) => ProbeOutcome {
            ok: false,
            latency,
            detail,
        },
        Err(_) => ProbeOutcome {
            ok: false,
            latency,
            detail: format!("no answer within {}", humantime::format_duration(timeout)),
        },
    }
}

async fn run(kind: &ProbeKind, addr: SocketAddr) -> Result<String, String> {
    match kind {
        ProbeKind::Tcp => tokio::net::TcpStream::connect(addr)
            .await
            .map(|_| "connected".to_string())
            .map_err(|e| format!("connect: {e}")),
        ProbeKind::Http { path } => {
            let status = http_request(addr, "GET", path).await?;
            if (200..300).contains(&status) {
                Ok(status.to_string())
            } else {
                Err(format!("status {status}"))
            }
        }
        ProbeKind::Exec { argv } => {
            let port = addr.port().to_string();
            let argv: Vec<String> = argv.iter().map(|a| a.replace("{port}", &port)).collect();
            let mut cmd = tokio::process::Command::new(&argv[0]);
            cmd.args(&argv[1..])
                .env("PORT", &port)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true);
            let cannot_run = |e| format!("cannot run {}: {e}", argv[0]);
            // Registered, so the orphan reaper never takes its exit status.
            let mut tracked = crate::children::spawn_tracked(&mut cmd).map_err(cannot_run)?;
            let status = tracked.child.wait().await.map_err(cannot_run)?;
            match status.code() {
                Some(0) => Ok("exit code 0".into()),
                Some(c) => Err(format!("exit code {c}")),
                None => Err("killed by a signal".into()),
            }
        }
    }
}

/// One HTTP/1.1 request with an empty body to `addr`; the status code.
pub async fn http_request(addr: SocketAddr, method: &str, path: &str) -> Result<u16, String> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string())
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"));
    conn.abort();
    Ok(res?.status().as_u16())
}
