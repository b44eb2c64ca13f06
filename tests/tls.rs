//! TLS termination through the real binary and a real TLS client (reqwest
//! with rustls, trusting only a test CA from rcgen): certificates by SNI
//! over HTTP/1.1 and HTTP/2, certificate files replaced while a kept-alive
//! connection stays up, `check` on broken and expiring pairs, and the
//! handshake bounded by `header_read_timeout`.
#![allow(clippy::disallowed_types)]

mod support;

use std::path::Path;
use std::time::Duration;

use support::harbor::{Backend, Harbor};
use support::tls::{client, served_cert, TestCa};

/// A config serving `backend` on `/` over plain HTTP and TLS with the
/// certificates DIR/NAME.pem + DIR/NAME.key for each name in `certs`.
fn config(backend: u16, certs: &[&str], extra_gateway: &str) -> String {
    let list: Vec<String> = certs
        .iter()
        .map(|n| format!("{{ cert = \"{n}.pem\", key = \"{n}.key\" }}"))
        .collect();
    format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\n{extra_gateway}\n\
         [gateway.tls]\nlisten = [\"127.0.0.1:0\"]\ncertificates = [{}]\n\n\
         [apps.web]\nroutes = [{{ path = \"/\" }}]\nupstreams = [\"127.0.0.1:{backend}\"]\n",
        list.join(", ")
    )
}

fn start(dir: &Path, config: &str) -> Harbor {
    let h = Harbor::start_in(dir, config, &[]);
    h.wait_serving("x");
    h
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_by_name_over_http1_and_http2() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let a = ca.leaf(&["a.test", "127.0.0.1"]);
    let b = ca.leaf(&["b.test", "*.b.test"]);
    a.write(dir.path(), "a");
    b.write(dir.path(), "b");
    let backend = Backend::start(&[]);
    let h = start(dir.path(), &config(backend.port, &["a", "b"], ""));
    let addr = h.tls_gateway(0);
    let port = addr.port();

    for http1 in [true, false] {
        let c = client(&ca, addr, &["a.test", "b.test", "x.b.test"], http1);
        for (host, want) in [
            ("a.test", &a.der),
            ("b.test", &b.der),
            ("x.b.test", &b.der),
            // No SNI for an IP address: the first certificate.
            ("127.0.0.1", &a.der),
        ] {
            let res = c
                .get(format!("https://{host}:{port}/echo"))
                .send()
                .await
                .unwrap_or_else(|e| panic!("{host} (http1 only: {http1}): {e:?}"));
            assert_eq!(res.status(), 200);
            let version = if http1 {
                reqwest::Version::HTTP_11
            } else {
                reqwest::Version::HTTP_2
            };
            assert_eq!(res.version(), version, "ALPN for {host}");
            assert!(&served_cert(&res) == want, "wrong certificate for {host}");
            let echo: serde_json::Value = serde_json::from_str(&res.text().await.unwrap()).unwrap();
            assert_eq!(echo["headers"]["x-forwarded-proto"], "https");
        }
    }
    // The plain listener still says http.
    let plain = h.gateway(0);
    let text = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("http://{plain}/echo"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let echo: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(echo["headers"]["x-forwarded-proto"], "http");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaced_certificate_files_are_served_while_a_kept_alive_connection_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let old = ca.leaf(&["a.test"]);
    old.write(dir.path(), "a");
    let backend = Backend::start(&[]);
    let h = start(dir.path(), &config(backend.port, &["a"], ""));
    let addr = h.tls_gateway(0);
    let url = format!("https://a.test:{}/", addr.port());

    // One HTTP/2 connection, kept for the whole test.
    let kept = client(&ca, addr, &["a.test"], false);
    let res = kept.get(&url).send().await.unwrap();
    assert!(served_cert(&res) == old.der);
    res.bytes().await.unwrap();

    let new = ca.leaf(&["a.test"]);
    new.write(dir.path(), "a");
    h.wait_for(Duration::from_secs(20), |e| {
        e["event"] == "certificates_reloaded"
    });
    // A new connection gets the new certificate (polled: the reload event
    // may come from the key's change before the certificate's).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let fresh = client(&ca, addr, &["a.test"], false);
        let res = fresh.get(&url).send().await.unwrap();
        if served_cert(&res) == new.der {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the new certificate was not served within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The kept connection still works, and is the same connection: it
    // still shows the certificate of its handshake.
    for _ in 0..3 {
        let res = kept.get(&url).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(
            served_cert(&res) == old.der,
            "the kept-alive connection was replaced"
        );
        res.bytes().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_handshake_is_cut_at_the_header_timeout() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    ca.leaf(&["a.test"]).write(dir.path(), "a");
    let backend = Backend::start(&[]);
    let h = start(
        dir.path(),
        &config(backend.port, &["a"], "header_read_timeout = \"1s\""),
    );
    let mut s = tokio::net::TcpStream::connect(h.tls_gateway(0))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(15), s.read(&mut buf))
        .await
        .expect("the silent connection was not closed within 15 s")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[test]
fn check_rejects_a_key_that_does_not_match_and_warns_about_expiry() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let a = ca.leaf(&["a.test"]);
    let b = ca.leaf(&["b.test"]);
    a.write(dir.path(), "a");
    std::fs::write(dir.path().join("b.key"), &b.key_pem).unwrap();
    let file = dir.path().join("harbormaster.toml");
    std::fs::write(
        &file,
        "[gateway.tls]\nlisten = [\"127.0.0.1:0\"]\n\
         certificates = [{ cert = \"a.pem\", key = \"b.key\" }]\nmin_version = \"1.1\"\n",
    )
    .unwrap();
    let out = support::Cmd::harbormaster(["check", "-c", file.to_str().unwrap()]).run();
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(
        out.stderr.contains("harbormaster.toml:3:")
            && out.stderr.contains("gateway.tls.certificates[0].key")
            && out.stderr.contains("does not belong to the certificate"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("harbormaster.toml:4:15") && out.stderr.contains("\"1.2\" or \"1.3\""),
        "{}",
        out.stderr
    );

    let soon = ca.leaf_until(&["a.test"], Some(Duration::from_secs(3 * 86_400)));
    soon.write(dir.path(), "soon");
    std::fs::write(
        &file,
        "[gateway.tls]\nlisten = [\"127.0.0.1:0\"]\n\
         certificates = [{ cert = \"soon.pem\", key = \"soon.key\" }]\n",
    )
    .unwrap();
    let out = support::Cmd::harbormaster(["check", "-c", file.to_str().unwrap()]).run();
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stderr.contains("warning: gateway.tls.certificates[0]")
            && out.stderr.contains("expires")
            && out.stderr.contains("(in 2 days)"),
        "{}",
        out.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_a_changed_certificate_list_and_watches_the_new_files() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    ca.leaf(&["a.test"]).write(dir.path(), "a");
    let b = ca.leaf(&["b.test"]);
    b.write(dir.path(), "b");
    let backend = Backend::start(&[]);
    let h = start(dir.path(), &config(backend.port, &["a"], ""));
    let addr = h.tls_gateway(0);
    let url = format!("https://b.test:{}/", addr.port());
    let fresh = || client(&ca, addr, &["b.test"], true);
    assert!(
        fresh().get(&url).send().await.is_err(),
        "b.test is not served yet (the default certificate is for a.test)"
    );

    let out = support::reload_in(dir.path(), config(backend.port, &["a", "b"], ""))
        .await
        .unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    let res = fresh().get(&url).send().await.unwrap();
    assert!(served_cert(&res) == b.der, "the reload did not add b.test");

    // The new files are watched too.
    let renewed = ca.leaf(&["b.test"]);
    renewed.write(dir.path(), "b");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while served_cert(&fresh().get(&url).send().await.unwrap()) != renewed.der {
        assert!(
            std::time::Instant::now() < deadline,
            "the renewed b.test certificate was not served within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_and_removes_tls_listeners() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    ca.leaf(&["a.test"]).write(dir.path(), "a");
    let backend = Backend::start(&[]);
    // Start without TLS; a reload adds [gateway.tls] on a fixed free port.
    let plain = format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\n\n[apps.web]\nroutes = [{{ path = \"/\" }}]\n\
         upstreams = [\"127.0.0.1:{}\"]\n",
        backend.port
    );
    let _h = start(dir.path(), &plain);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let with_tls = config(backend.port, &["a"], "").replace(
        "[gateway.tls]\nlisten = [\"127.0.0.1:0\"]",
        &format!("[gateway.tls]\nlisten = [\"127.0.0.1:{port}\"]"),
    );
    let out = support::reload_in(dir.path(), with_tls).await.unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    assert!(out.stdout.contains("tls listeners added"), "{}", out.stdout);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let res = client(&ca, addr, &["a.test"], false)
        .get(format!("https://a.test:{port}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    let out = support::reload_in(dir.path(), plain).await.unwrap();
    assert_eq!(out.code, 0, "{out:?}");
    support::harbor::eventually(Duration::from_secs(10), "the TLS port is closed", || {
        std::net::TcpStream::connect(addr).is_err()
    });
}
