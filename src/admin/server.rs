//! The admin API's TCP listener, with the gateway's per-phase connection
//! timeouts (`gateway::conn`) and a connection limit of its own.
//!
//! `axum::serve` has neither: one idle connection stayed for minutes, and a
//! flood of them would take the channel operators and probes rely on when
//! something else is wrong.

use std::convert::Infallible;
use std::sync::Arc;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::gateway::conn::{self, ActiveBody, ConnState, Timeouts};
use crate::gateway::limits::AcceptErrors;

/// Admin connections open at once; more wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 256;

/// Serves `router` on `listener` until `shutdown`. Connections still open
/// then are not waited for: they end with the process.
pub async fn serve_tcp(
    listener: std::net::TcpListener,
    router: axum::Router,
    timeouts: Timeouts,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut server = auto::Builder::new(TokioExecutor::new());
    server
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None);
    server.http2().timer(TokioTimer::new());
    let mut refused = AcceptErrors::default();
    loop {
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.cancelled() => break,
        };
        let Some((stream, peer)) = refused.accept(&listener, &shutdown).await else {
            break;
        };
        let state = ConnState::new();
        let service = {
            let (router, state) = (router.clone(), state.clone());
            hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(super::audited::Peer(peer));
                let active = state.begin();
                let router = router.clone();
                async move {
                    let res = router
                        .oneshot(req.map(axum::body::Body::new))
                        .await
                        .unwrap_or_else(|never: Infallible| match never {});
                    Ok::<_, Infallible>(res.map(|body| ActiveBody::new(body, active)))
                }
            })
        };
        let io = TokioIo::new(conn::Watched::new(stream, state.clone()));
        let served = server
            .serve_connection_with_upgrades(io, service)
            .into_owned();
        let closing = shutdown.clone();
        tokio::spawn(async move {
            conn::drive(served, state, timeouts, closing).await;
            drop(permit);
        });
    }
    Ok(())
}
