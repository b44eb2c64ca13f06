//! systemd integration through the real binary: the notify protocol on a
//! test `NOTIFY_SOCKET` (READY=1 only once every required app is ready,
//! RELOADING=1/READY=1 around a reload, STOPPING=1 at stop) and socket
//! activation (`LISTEN_FDS` sockets serve the traffic).
#![allow(clippy::disallowed_types)]

mod support;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use support::harbor::{pass_listeners, status, testapp_command, Backend, Harbor};

/// The next datagram on `sock` (as text), failing after `within`.
fn next(sock: &UnixDatagram, within: Duration) -> String {
    sock.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    let n = sock
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no notify message within {within:?}: {e}"));
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// Datagrams until one has a line `line`; returns it and those before.
fn until(sock: &UnixDatagram, line: &str, within: Duration) -> (String, Vec<String>) {
    let deadline = Instant::now() + within;
    let mut before = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "no {line} within {within:?}; got {before:?}"
        );
        let msg = next(sock, left);
        if msg.lines().any(|l| l == line) {
            return (msg, before);
        }
        before.push(msg);
    }
}

#[test]
fn notify_socket_gets_ready_after_readiness_reloading_around_a_reload_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    // A slow starter: READY=1 must wait for it.
    let config = format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\n\n[apps.web]\nroutes = [{{ path = \"/\" }}]\n\
         command = {}\n",
        testapp_command(&["--startup-delay", "1500ms"])
    );
    let mut h = Harbor::start_configured(&config, |cmd| {
        cmd.env("NOTIFY_SOCKET", &path)
            .env("WATCHDOG_USEC", "400000");
    });
    let (ready, before) = until(&sock, "READY=1", Duration::from_secs(30));
    // By the time systemd hears READY=1, the instance is ready and routed
    // (the slow starter needs 1.5 s, so an early READY=1 would meet a 503).
    let admin = h.admin();
    assert_eq!(
        status(admin, "x", "/ready"),
        Some(200),
        "READY=1 before the app was ready: {ready:?}"
    );
    assert!(ready.contains("STATUS="), "{ready}");
    // The log says so in the same order (the test reads stdout on its own
    // thread, so the lines may reach it a moment after the datagram).
    h.wait_for(Duration::from_secs(10), |e| e["event"] == "ready");
    let events = h.events();
    let became_ready = events.iter().position(|e| {
        e["event"] == "state_change" && e["instance"] == "web#0" && e["to"] == "ready"
    });
    let announced = events.iter().position(|e| e["event"] == "ready");
    assert!(
        became_ready.is_some() && became_ready < announced,
        "the `ready` event must follow web#0 becoming ready: {events:?}"
    );
    assert!(before.iter().all(|m| !m.contains("READY=1")), "{before:?}");
    // The watchdog pings at half WATCHDOG_USEC.
    until(&sock, "WATCHDOG=1", Duration::from_secs(10));

    h.signal(nix::sys::signal::Signal::SIGHUP);
    let (reloading, _) = until(&sock, "RELOADING=1", Duration::from_secs(20));
    assert!(
        reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")
            && l["MONOTONIC_USEC=".len()..].parse::<u64>().is_ok()),
        "{reloading}"
    );
    until(&sock, "READY=1", Duration::from_secs(20));

    h.signal(nix::sys::signal::Signal::SIGTERM);
    until(&sock, "STOPPING=1", Duration::from_secs(20));
    assert_eq!(h.wait_exit(Duration::from_secs(30)), Some(0));
}

#[test]
fn sockets_passed_with_listen_fds_serve_the_gateway() {
    let backend = Backend::start(&[]);
    // Matched by address (the way a .socket unit's ListenStream= is):
    // harbormaster must not try to bind the port the test holds.
    let by_addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = by_addr.local_addr().unwrap();
    // Matched by name (FileDescriptorName=admin).
    let admin = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let admin_addr = admin.local_addr().unwrap();
    let config = format!(
        "[gateway]\nlisten = [\"{addr}\"]\n\n[apps.web]\nroutes = [{{ path = \"/\" }}]\n\
         upstreams = [\"127.0.0.1:{}\"]\n",
        backend.port
    );
    let h = Harbor::start_configured(&config, |cmd| {
        pass_listeners(cmd, &[&by_addr, &admin], &["harbormaster.socket", "admin"]);
    });
    drop(by_addr);
    drop(admin);
    h.wait_for(Duration::from_secs(20), |e| {
        e["event"] == "socket_inherited" && e["addr"] == addr.to_string()
    });
    assert_eq!(h.gateway(0), addr);
    support::harbor::eventually(Duration::from_secs(20), "the passed socket serves", || {
        status(addr, "x", "/") == Some(200)
    });
    assert_eq!(status(admin_addr, "x", "/live"), Some(200));
}

#[test]
fn an_abstract_notify_socket_is_reached_too() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("harbormaster-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    let backend = Backend::start(&[]);
    let config = format!(
        "[gateway]\nlisten = [\"127.0.0.1:0\"]\n\n[apps.web]\nroutes = [{{ path = \"/\" }}]\n\
         upstreams = [\"127.0.0.1:{}\"]\n",
        backend.port
    );
    let _h = Harbor::start_configured(&config, |cmd| {
        cmd.env("NOTIFY_SOCKET", format!("@{name}"));
    });
    until(&sock, "READY=1", Duration::from_secs(30));
}
