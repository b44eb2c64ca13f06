//! A service mounted on the gateway listeners beside the routed apps (the
//! MCP front): requests it claims never reach the route table. Without a
//! mount the hot path pays one atomic load.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use hyper::body::Incoming;
use hyper::{Request, Response};

use super::ProxyBody;

pub trait Mounted: Send + Sync {
    /// Whether the request (host already normalized) is for this service.
    fn claims(&self, host: &str, path: &str) -> bool;

    fn call(
        &self,
        req: Request<Incoming>,
        peer: IpAddr,
    ) -> Pin<Box<dyn Future<Output = Response<ProxyBody>> + Send + 'static>>;
}

/// The slot the gateway keeps (a sized wrapper for `ArcSwapOption`).
pub struct Mount(pub std::sync::Arc<dyn Mounted>);
