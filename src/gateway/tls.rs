//! TLS termination at the accept layer: a handshake turns an accepted TCP
//! stream into a TLS stream, which the same per-connection driver
//! (`conn::drive`) then serves as it serves plain TCP. Nothing after the
//! handshake knows about TLS except `X-Forwarded-Proto: https`.
//!
//! Certificates are picked by the client's SNI from the names inside each
//! certificate (subjectAltName DNS names, else the subject CN; `*.example.com`
//! matches one label), the first certificate of `[gateway.tls] certificates`
//! when nothing matches or the client sends no SNI. The set lives in an
//! [`ArcSwap`]: a change of the files on disk loads every pair again and
//! swaps the whole set at once, so a handshake sees either the old set or the
//! new one and open connections are never touched. A pair that does not load
//! (a half-written file, a key that does not match yet) keeps the old set
//! and is logged; the next change tries again.
//!
//! The handshake is bounded by `header_read_timeout`, counted from accept
//! together with the first request head, so a client that stalls in the
//! handshake is cut like one that stalls in its head (slowloris).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::config::tls::{CertError, LoadedCertificate};
use crate::config::{CertificateFiles, TlsConfig, TlsVersion};

/// The TLS side of the gateway: server config, certificate set, and the
/// files to watch. Shared by every TLS listener and worker.
pub struct Terminator {
    /// Swapped whole when `min_version` changes on reload.
    server: ArcSwap<ServerConfig>,
    resolver: Arc<Resolver>,
    files: std::sync::Mutex<Vec<CertificateFiles>>,
    /// Cancelled when a reload changes the files, so [`Terminator::watch`]
    /// watches the new ones.
    generation: std::sync::Mutex<CancellationToken>,
}

impl std::fmt::Debug for Terminator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminator")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl Terminator {
    /// Loads every certificate pair; fails if one does not load.
    pub fn new(cfg: &TlsConfig) -> Result<Arc<Self>, CertError> {
        let resolver = Arc::new(Resolver(ArcSwap::from_pointee(Certificates::load(
            &cfg.certificates,
        )?)));
        Ok(Arc::new(Self {
            server: ArcSwap::new(server_config(cfg, resolver.clone())?),
            resolver,
            files: std::sync::Mutex::new(cfg.certificates.clone()),
            generation: std::sync::Mutex::new(CancellationToken::new()),
        }))
    }

    /// A reload changed `certificates` or `min_version`: new handshakes use
    /// the new set (open connections keep theirs); the watch follows the
    /// new files. On error nothing changes.
    pub fn reconfigure(&self, cfg: &TlsConfig) -> Result<(), CertError> {
        let certs = Certificates::load(&cfg.certificates)?;
        let server = server_config(cfg, self.resolver.clone())?;
        self.resolver.0.store(Arc::new(certs));
        self.server.store(server);
        *self.files.lock().unwrap_or_else(|p| p.into_inner()) = cfg.certificates.clone();
        let old = std::mem::take(&mut *self.generation.lock().unwrap_or_else(|p| p.into_inner()));
        old.cancel();
        Ok(())
    }

    /// `[gateway.tls]` was removed: stop watching the files (the listeners
    /// were closed by the caller).
    pub fn retire(&self) {
        self.files.lock().unwrap_or_else(|p| p.into_inner()).clear();
        let old = std::mem::take(&mut *self.generation.lock().unwrap_or_else(|p| p.into_inner()));
        old.cancel();
    }

    fn files(&self) -> Vec<CertificateFiles> {
        self.files.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The rustls server config over `resolver`, with ALPN h2 and http/1.1.
fn server_config(cfg: &TlsConfig, resolver: Arc<Resolver>) -> Result<Arc<ServerConfig>, CertError> {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match cfg.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut server = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .map_err(|e| CertError::Key {
            path: PathBuf::new(),
            why: e.to_string(),
        })?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(server))
}

impl Terminator {
    /// Loads every pair again and swaps the set in at once; on error the
    /// served set stays as it was.
    pub fn reload(&self) -> Result<(), CertError> {
        let certs = Certificates::load(&self.files())?;
        self.resolver.0.store(Arc::new(certs));
        Ok(())
    }

    /// The handshake, bounded by `deadline`; `None` (logged) when it fails
    /// or runs out of time.
    pub async fn handshake(
        &self,
        stream: TcpStream,
        deadline: Instant,
    ) -> Option<TlsStream<TcpStream>> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.server.load_full());
        match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out (header_read_timeout)");
                None
            }
        }
    }

    /// Reloads the certificates whenever one of their files changes, until
    /// `cancel` (the config watcher's debounced folder watch, per file).
    pub async fn watch(self: Arc<Self>, cancel: CancellationToken) {
        while !cancel.is_cancelled() {
            let generation = self
                .generation
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let stop = cancel.child_token();
            tokio::select! {
                _ = self.clone().watch_files(stop.clone()) => {}
                _ = generation.cancelled() => {}
                _ = cancel.cancelled() => {}
            }
            stop.cancel();
        }
    }

    /// Watches the current files until `cancel`.
    async fn watch_files(self: Arc<Self>, cancel: CancellationToken) {
        let mut paths: Vec<PathBuf> = Vec::new();
        for f in &self.files() {
            for p in [&f.cert, &f.key] {
                if !paths.contains(p) {
                    paths.push(p.clone());
                }
            }
        }
        let watches = paths.into_iter().map(|path| {
            let this = self.clone();
            crate::config::watch::on_change(path.clone(), cancel.clone(), move || {
                let result = this.reload();
                let path = path.clone();
                async move {
                    match result {
                        Ok(()) => tracing::info!(event = "certificates_reloaded", changed = %path.display()),
                        Err(e) => tracing::warn!(event = "certificates_reload_failed", changed = %path.display(), error = %e, "the certificates served stay as they were"),
                    }
                }
            })
        });
        futures_util::future::join_all(watches).await;
        cancel.cancelled().await;
    }
}

/// The certificates served now, by name.
#[derive(Debug)]
struct Certificates {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` is kept as `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl Certificates {
    fn load(files: &[CertificateFiles]) -> Result<Self, CertError> {
        let loaded = files
            .iter()
            .map(CertificateFiles::load)
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_loaded(loaded).ok_or_else(|| CertError::NoCertificate(PathBuf::new()))
    }

    /// The first certificate is the default; a name in two certificates
    /// goes to the first.
    fn from_loaded(loaded: Vec<LoadedCertificate>) -> Option<Self> {
        let default = loaded.first()?.key.clone();
        let (mut exact, mut wildcard) = (HashMap::new(), HashMap::new());
        for cert in loaded {
            for name in cert.names {
                match name.strip_prefix("*.") {
                    Some(base) => wildcard.entry(base.to_string()),
                    None => exact.entry(name),
                }
                .or_insert_with(|| cert.key.clone());
            }
        }
        Some(Self {
            exact,
            wildcard,
            default,
        })
    }

    fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni.map(|n| n.trim_end_matches('.').to_ascii_lowercase()) else {
            return self.default.clone();
        };
        if let Some(k) = self.exact.get(&name) {
            return k.clone();
        }
        name.split_once('.')
            .and_then(|(_, base)| self.wildcard.get(base))
            .unwrap_or(&self.default)
            .clone()
    }
}

#[derive(Debug)]
struct Resolver(ArcSwap<Certificates>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load().pick(hello.server_name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Arc<CertifiedKey> {
        // Only identity matters to `pick`: a dummy chain around a real key.
        let k = rcgen::KeyPair::generate().unwrap();
        let der = rustls_pki_types::PrivateKeyDer::try_from(k.serialize_der()).unwrap();
        let signer = rustls::crypto::ring::sign::any_supported_type(&der).unwrap();
        Arc::new(CertifiedKey::new(
            vec![rustls_pki_types::CertificateDer::from(vec![n])],
            signer,
        ))
    }

    fn loaded(k: &Arc<CertifiedKey>, names: &[&str]) -> LoadedCertificate {
        LoadedCertificate {
            key: k.clone(),
            names: names.iter().map(|n| n.to_string()).collect(),
            not_after: std::time::SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn sni_picks_by_exact_name_then_wildcard_then_the_first() {
        let (a, b, c) = (key(1), key(2), key(3));
        let set = Certificates::from_loaded(vec![
            loaded(&a, &["a.test"]),
            loaded(&b, &["b.test", "*.b.test"]),
            loaded(&c, &["a.test", "x.b.test"]),
        ])
        .unwrap();
        let is = |sni: Option<&str>, k: &Arc<CertifiedKey>| Arc::ptr_eq(&set.pick(sni), k);
        assert!(
            is(Some("a.test"), &a),
            "the first certificate with a name wins"
        );
        assert!(is(Some("A.Test."), &a), "names are case-insensitive");
        assert!(is(Some("b.test"), &b));
        assert!(is(Some("x.b.test"), &c), "an exact name beats a wildcard");
        assert!(is(Some("y.b.test"), &b));
        assert!(is(Some("z.y.b.test"), &a), "a wildcard covers one label");
        assert!(is(Some("other.test"), &a));
        assert!(is(None, &a));
    }
}
