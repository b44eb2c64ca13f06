//! Stop hooks: HTTP requests to an instance before it is signalled, such as
//! `POST /admin/checkpoint` or `POST /admin/shutdown`. What a hook's answer
//! means for the signal (`expect_exit`) is decided by the stop sequence in
//! `instance.rs`; this module only sends.

use crate::config::StopHook;

/// Sends one hook to `127.0.0.1:port`; returns the status code or why it failed.
pub async fn send(port: u16, hook: &StopHook) -> Result<u16, String> {
    tokio::time::timeout(
        hook.timeout,
        crate::health::probe::http_request(
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            &hook.method,
            &hook.path,
        ),
    )
    .await
    .unwrap_or_else(|_| {
        Err(format!(
            "no answer within {}",
            humantime::format_duration(hook.timeout)
        ))
    })
}
