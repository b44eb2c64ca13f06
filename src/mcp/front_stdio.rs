//! The stdio front: newline-delimited JSON-RPC on stdin/stdout for one
//! client (`harbormaster mcp`). Requests run concurrently; answers and
//! notices go out through one writer, so stdout carries only whole MCP
//! messages. At EOF on stdin the requests in flight finish first.

use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::audit::Caller;
use super::errors::{error_response, McpError};
use super::hub::{McpGateway, Session};

/// Serves one client until `input` ends and every request it sent is answered.
pub async fn serve<R, W>(hub: Arc<McpGateway>, input: R, output: W, caller: Caller)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (out, rx) = mpsc::unbounded_channel::<Value>();
    let writer = tokio::spawn(write_messages(output, rx));
    let session = Session::new(caller);
    let done = CancellationToken::new();
    let mut notices = hub.notices();
    let (notice_out, notice_done) = (out.clone(), done.clone());
    let forwarding = tokio::spawn(async move {
        loop {
            tokio::select! {
                n = notices.recv() => match n {
                    Ok(n) => { let _ = notice_out.send(n); }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                },
                _ = notice_done.cancelled() => return,
            }
        }
    });
    let tasks = TaskTracker::new();
    let mut lines = BufReader::new(input).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if line.trim().is_empty() {
            continue;
        }
        let msg: Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(e) => {
                let _ = out.send(error_response(
                    &Value::Null,
                    &McpError::parse_error(e.to_string()),
                ));
                continue;
            }
        };
        let (hub, session, out) = (hub.clone(), session.clone(), out.clone());
        tasks.spawn(async move {
            if let Some(answer) = hub.handle(&session, msg, &out).await {
                let _ = out.send(answer);
            }
        });
    }
    tracing::info!(
        event = "mcp_stdio_closed",
        in_flight = tasks.len(),
        "stdin closed; finishing the requests in flight"
    );
    tasks.close();
    tasks.wait().await;
    done.cancel();
    let _ = forwarding.await;
    drop(out);
    let _ = writer.await;
}

async fn write_messages<W: AsyncWrite + Unpin>(
    mut output: W,
    mut rx: mpsc::UnboundedReceiver<Value>,
) {
    while let Some(msg) = rx.recv().await {
        let mut line = msg.to_string();
        line.push('\n');
        if output.write_all(line.as_bytes()).await.is_err() || output.flush().await.is_err() {
            return;
        }
    }
}
