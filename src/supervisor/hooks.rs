//! Stop hooks: HTTP requests to an instance before it is signalled, such as
//! `POST /admin/checkpoint` or `POST /admin/shutdown`.

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;

use crate::config::StopHook;

/// Sends one hook to `127.0.0.1:port`; returns the status code or why it failed.
pub async fn send(port: u16, hook: &StopHook) -> Result<u16, String> {
    tokio::time::timeout(hook.timeout, request(port, &hook.method, &hook.path))
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer within {}",
                humantime::format_duration(hook.timeout)
            ))
        })
}

async fn request(port: u16, method: &str, path: &str) -> Result<u16, String> {
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, format!("127.0.0.1:{port}"))
        .header(hyper::header::CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("request: {e}"))?;
    let res = sender
        .send_request(req)
        .await
        .map_err(|e| format!("request: {e}"))?;
    conn.abort();
    Ok(res.status().as_u16())
}
