//! A test certificate authority (rcgen) and clients that trust only it.

use std::path::Path;
use std::time::{Duration, SystemTime};

/// A CA that issues leaf certificates for test names.
pub struct TestCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    /// The CA certificate (PEM), for clients to trust.
    pub pem: String,
}

/// A leaf certificate and its key, as PEM, and the certificate's DER.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "harbormaster test CA");
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (DNS names or IP addresses), valid for years.
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        self.leaf_until(names, None)
    }

    /// A certificate for `names` that expires `in_` from now (when given).
    pub fn leaf_until(&self, names: &[&str], in_: Option<Duration>) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        if let Some(d) = in_ {
            params.not_after = (SystemTime::now() + d).into();
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

impl Leaf {
    /// Writes DIR/NAME.pem and DIR/NAME.key, each by rename (as a
    /// certificate tool would), key first.
    pub fn write(&self, dir: &Path, name: &str) {
        for (ext, text) in [("key", &self.key_pem), ("pem", &self.cert_pem)] {
            let tmp = dir.join(format!(".{name}.{ext}.tmp"));
            std::fs::write(&tmp, text).unwrap();
            std::fs::rename(&tmp, dir.join(format!("{name}.{ext}"))).unwrap();
        }
    }
}

/// A client that trusts only `ca`, reports the server certificate
/// (`tls_info`), and resolves each of `names` to `addr`.
pub fn client(
    ca: &TestCa,
    addr: std::net::SocketAddr,
    names: &[&str],
    http1: bool,
) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem.as_bytes()).unwrap())
        .tls_info(true)
        .use_rustls_tls();
    for n in names {
        b = b.resolve(n, addr);
    }
    if http1 {
        b = b.http1_only();
    }
    b.build().unwrap()
}

/// The DER of the certificate the server showed for `res`.
pub fn served_cert(res: &reqwest::Response) -> Vec<u8> {
    res.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("a TLS response with the peer certificate")
        .to_vec()
}
