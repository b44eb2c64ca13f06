//! The harbor's TLS side: the one [`Terminator`] every `[gateway.tls]`
//! listener shares, started at launch and changed by reloads — listeners
//! added or removed, the certificate list or `min_version` changed (new
//! handshakes use the new set; open connections keep theirs), the table
//! added or removed.

use std::net::TcpListener;

use super::harbor::{lock, HarborCtx};
use crate::config::diff::Plan;
use crate::config::TlsConfig;
use crate::gateway::tls::Terminator;

impl HarborCtx {
    /// Loads the certificates, serves `listeners` with them and watches the
    /// files (at launch; also when a reload adds `[gateway.tls]`).
    pub(super) fn start_tls(
        &self,
        cfg: &TlsConfig,
        listeners: Vec<TcpListener>,
    ) -> anyhow::Result<Vec<String>> {
        use anyhow::Context;
        let terminator =
            Terminator::new(cfg).context("cannot load the [gateway.tls] certificates")?;
        for warning in crate::config::tls::expiry_warnings(cfg, std::time::SystemTime::now()) {
            tracing::warn!(event = "certificate_expiring", "{warning}");
        }
        let mut addrs = Vec::new();
        for listener in listeners {
            addrs.push(format!("https://{}", listener.local_addr()?));
            self.serve_tls_listener(listener, terminator.clone())?;
        }
        self.background
            .spawn(terminator.clone().watch(self.cancel.child_token()));
        *lock(&self.tls) = Some(terminator);
        Ok(addrs)
    }

    /// The TLS part of a reload: `bound` are the plan's added TLS
    /// listeners, already bound. Problems go to `failed`.
    pub(super) fn apply_tls(
        &self,
        plan: &Plan,
        new: Option<&TlsConfig>,
        bound: Vec<TcpListener>,
        failed: &mut Vec<String>,
    ) {
        for addr in &plan.tls_listeners_removed {
            self.close_listener(addr);
        }
        let Some(cfg) = new else {
            if let Some(terminator) = lock(&self.tls).take() {
                terminator.retire();
            }
            return;
        };
        let running = lock(&self.tls).clone();
        let Some(terminator) = running else {
            if let Err(e) = self.start_tls(cfg, bound) {
                failed.push(format!("[gateway.tls]: {e:#}"));
            }
            return;
        };
        if plan.tls_changed {
            match terminator.reconfigure(cfg) {
                Ok(()) => {
                    tracing::info!(event = "certificates_reloaded", changed = "[gateway.tls]")
                }
                Err(e) => failed.push(format!("[gateway.tls]: {e}")),
            }
        }
        for listener in bound {
            if let Err(e) = self.serve_tls_listener(listener, terminator.clone()) {
                failed.push(format!("TLS listener: {e}"));
            }
        }
    }
}
