//! A harbor in front of external upstreams (the gateway tests' usual setup).

use std::net::SocketAddr;

use super::harbor::Harbor;

/// An `[apps.NAME]` table routing `routes` to the upstreams on `ports`.
pub fn external(name: &str, routes: &str, ports: &[u16], extra: &str) -> String {
    let ups: Vec<String> = ports.iter().map(|p| format!("\"127.0.0.1:{p}\"")).collect();
    format!(
        "[apps.{name}]\nroutes = {routes}\nupstreams = [{}]\n{extra}\n",
        ups.join(", ")
    )
}

/// A harbor on port 0 with `gateway` keys and one external app on `/`.
pub fn behind(gateway: &str, ports: &[u16], extra: &str) -> (Harbor, SocketAddr) {
    serving(Harbor::start(&config(gateway, ports, extra)))
}

pub fn config(gateway: &str, ports: &[u16], extra: &str) -> String {
    format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\n{gateway}\n{}",
        external("web", r#"[{ path = "/" }]"#, ports, extra)
    )
}

pub fn serving(h: Harbor) -> (Harbor, SocketAddr) {
    h.wait_serving("x");
    let gw = h.gateway(0);
    (h, gw)
}

/// Whether any breaker opened (from the harbor's log events).
pub fn breaker_opened(h: &Harbor) -> bool {
    h.events()
        .iter()
        .any(|e| e["event"] == "breaker" && e["to"] == "open")
}
