//! `[gateway.tls]`: TLS listeners and their certificates.
//!
//! Validation reads every certificate and key (PEM) and checks that the key
//! belongs to the certificate, so `check`, startup and reload all refuse a
//! broken pair with the entry's `file:line:col`. The same [`CertificateFiles::load`]
//! serves the gateway when the files change on disk (`gateway::tls`), so a
//! pair that passes `check` is exactly a pair the gateway can serve.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;

use super::raw::S;
use super::values::Checker;

/// Certificates expiring sooner than this are reported by `check` and at start.
pub const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    pub listen: Option<S<Vec<S<String>>>>,
    pub certificates: Option<S<Vec<S<RawCertificate>>>>,
    pub min_version: Option<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub cert: Option<S<String>>,
    pub key: Option<S<String>>,
}

/// The lowest TLS version a client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    V1_2,
    V1_3,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TlsConfig {
    pub listen: Vec<SocketAddr>,
    /// In order: the first is served when no name matches the client's SNI.
    pub certificates: Vec<CertificateFiles>,
    pub min_version: TlsVersion,
}

/// One certificate chain and its private key, as PEM files (absolute paths).
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// A certificate pair read from disk, its key checked against it.
#[derive(Debug, Clone)]
pub struct LoadedCertificate {
    pub key: Arc<CertifiedKey>,
    /// DNS names it is for (subjectAltName, else the subject CN), lowercase;
    /// `*.example.com` for wildcards.
    pub names: Vec<String>,
    pub not_after: SystemTime,
}

/// Why a certificate pair cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{} holds no PEM certificate", .0.display())]
    NoCertificate(PathBuf),
    #[error("cannot parse the certificate in {}: {why}", path.display())]
    Parse { path: PathBuf, why: String },
    #[error("the key in {} is not usable: {why}", path.display())]
    Key { path: PathBuf, why: String },
    #[error("the key in {} does not belong to the certificate in {}", key.display(), cert.display())]
    Mismatch { cert: PathBuf, key: PathBuf },
}

impl CertificateFiles {
    /// Reads both files, checks that the key matches the certificate and
    /// reads the names and expiry of the leaf certificate.
    pub fn load(&self) -> Result<LoadedCertificate, CertError> {
        let read_err = |path: &Path| {
            let path = path.to_path_buf();
            move |source| CertError::Read { path, source }
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.cert)
            .map_err(read_err(&self.cert))?
            .collect::<Result<_, _>>()
            .map_err(read_err(&self.cert))?;
        let leaf = chain
            .first()
            .ok_or_else(|| CertError::NoCertificate(self.cert.clone()))?;
        let (names, not_after) = names_and_expiry(leaf).map_err(|why| CertError::Parse {
            path: self.cert.clone(),
            why,
        })?;
        let key = PrivateKeyDer::from_pem_file(&self.key).map_err(read_err(&self.key))?;
        let provider = rustls::crypto::ring::default_provider();
        let certified = CertifiedKey::from_der(chain, key, &provider).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => CertError::Mismatch {
                cert: self.cert.clone(),
                key: self.key.clone(),
            },
            other => CertError::Key {
                path: self.key.clone(),
                why: other.to_string(),
            },
        })?;
        Ok(LoadedCertificate {
            key: Arc::new(certified),
            names,
            not_after,
        })
    }
}

/// The DNS names and the end of validity of a DER certificate.
fn names_and_expiry(der: &CertificateDer<'_>) -> Result<(Vec<String>, SystemTime), String> {
    use x509_parser::extensions::GeneralName;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::DNSName(n) = name {
                names.push(n.to_ascii_lowercase());
            }
        }
    }
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok())
                .map(str::to_ascii_lowercase),
        );
    }
    let secs = cert.validity().not_after.timestamp();
    let not_after = SystemTime::UNIX_EPOCH + Duration::from_secs(secs.max(0) as u64);
    Ok((names, not_after))
}

/// What `check` (and the start) should say about certificates that expire
/// within [`EXPIRY_WARNING`] of `now`, or have expired.
pub fn expiry_warnings(tls: &TlsConfig, now: SystemTime) -> Vec<String> {
    let mut out = Vec::new();
    for (i, files) in tls.certificates.iter().enumerate() {
        let Ok(loaded) = files.load() else { continue };
        let left = loaded.not_after.duration_since(now);
        let when = humantime::format_rfc3339_seconds(loaded.not_after);
        match left {
            Err(_) => out.push(format!(
                "gateway.tls.certificates[{i}]: {} expired at {when} — renew it",
                files.cert.display()
            )),
            Ok(left) if left < EXPIRY_WARNING => out.push(format!(
                "gateway.tls.certificates[{i}]: {} expires at {when} (in {} days) — renew it",
                files.cert.display(),
                left.as_secs() / 86_400
            )),
            Ok(_) => {}
        }
    }
    out
}

impl Checker<'_, '_> {
    /// `[gateway.tls]`, with every certificate pair loaded and checked.
    pub(crate) fn tls(&mut self, raw: &S<RawTls>, plain: &[SocketAddr]) -> Option<TlsConfig> {
        let t = raw.get_ref();
        let mut listen = Vec::new();
        match &t.listen {
            None => self.rep.error(
                raw.span(),
                "gateway.tls.listen",
                "[gateway.tls] has no listen address",
                Some("add listen = [\"127.0.0.1:8443\"]".into()),
            ),
            Some(list) if list.get_ref().is_empty() => self.rep.error(
                list.span(),
                "gateway.tls.listen",
                "no listen address",
                Some("list at least one address, such as [\"127.0.0.1:8443\"]".into()),
            ),
            Some(list) => {
                for (i, a) in list.get_ref().iter().enumerate() {
                    let key = format!("gateway.tls.listen[{i}]");
                    let Some(addr) = self.socket_addr(a, &key) else {
                        continue;
                    };
                    if addr.port() != 0 && (listen.contains(&addr) || plain.contains(&addr)) {
                        self.rep.error(
                            a.span(),
                            &key,
                            format!("{addr} is already a gateway listener"),
                            Some("use another port for TLS".into()),
                        );
                    }
                    listen.push(addr);
                }
            }
        }
        let mut certificates = Vec::new();
        match &t.certificates {
            Some(list) if !list.get_ref().is_empty() => {
                for (i, c) in list.get_ref().iter().enumerate() {
                    if let Some(files) = self.certificate(c, i) {
                        certificates.push(files);
                    }
                }
            }
            other => self.rep.error(
                other.as_ref().map_or(raw.span(), |l| l.span()),
                "gateway.tls.certificates",
                "TLS needs at least one certificate",
                Some(
                    "add certificates = [{ cert = \"certs/site.pem\", key = \"certs/site.key\" }]"
                        .into(),
                ),
            ),
        }
        let min_version = match t.min_version.as_ref() {
            None => TlsVersion::V1_2,
            Some(v) => match v.get_ref().trim() {
                "1.2" => TlsVersion::V1_2,
                "1.3" => TlsVersion::V1_3,
                other => {
                    self.rep.error(
                        v.span(),
                        "gateway.tls.min_version",
                        format!("unsupported TLS version \"{other}\""),
                        Some("write \"1.2\" or \"1.3\"".into()),
                    );
                    TlsVersion::V1_2
                }
            },
        };
        Some(TlsConfig {
            listen,
            certificates,
            min_version,
        })
    }

    fn certificate(&mut self, c: &S<RawCertificate>, i: usize) -> Option<CertificateFiles> {
        let key = format!("gateway.tls.certificates[{i}]");
        let raw = c.get_ref();
        let (Some(cert), Some(private)) = (&raw.cert, &raw.key) else {
            self.rep.error(
                c.span(),
                &key,
                "a certificate needs both `cert` and `key`",
                Some("write { cert = \"certs/site.pem\", key = \"certs/site.key\" }".into()),
            );
            return None;
        };
        let files = CertificateFiles {
            cert: self.resolve(cert.get_ref()),
            key: self.resolve(private.get_ref()),
        };
        if let Err(e) = files.load() {
            let (span, field, hint) = match &e {
                CertError::Read { path, .. } if path == &files.key => {
                    (private.span(), "key", "give the path of a PEM private key (relative paths start at the config file's folder)")
                }
                CertError::Key { .. } => (private.span(), "key", "use a PKCS#8, PKCS#1 (RSA) or SEC1 (EC) PEM key"),
                CertError::Mismatch { .. } => (private.span(), "key", "give the key the certificate was issued for"),
                _ => (cert.span(), "cert", "give the path of a PEM certificate chain, leaf first (relative paths start at the config file's folder)"),
            };
            self.rep.error(
                span,
                format!("{key}.{field}"),
                e.to_string(),
                Some(hint.into()),
            );
            return None;
        }
        Some(files)
    }
}
