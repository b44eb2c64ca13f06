//! Health: which instances get traffic and which get restarted.
//!
//! Probes (`http`, `tcp`, `exec`) with threshold hysteresis, scheduled with
//! Kubernetes semantics (`monitor`), and the per-instance circuit breaker fed
//! by the gateway's request outcomes (`breaker`). Pure logic is tested with
//! paused time; I/O is confined to `probe`.

pub mod breaker;
pub mod failures;
pub mod hysteresis;
pub mod monitor;
pub mod probe;
pub mod upstreams;
