//! The gateway's own HTTP/1 client, through the real binary against a
//! scripted backend on a real socket: every way a response can be framed
//! reaches the client intact, the upstream connection is reused exactly
//! when it may be, and a broken response is a 502 that harms nothing after.
#![allow(clippy::disallowed_types)]

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::external::behind;
use support::raw;

/// Bytes of the large bodies.
const BIG: usize = 3 * 1024 * 1024 + 17;

/// Byte `i` of a large body.
fn pattern(i: usize) -> u8 {
    (i.wrapping_mul(31) % 251) as u8
}

/// Each request the backend got: (connection number, method, path with query).
type Seen = Arc<Mutex<Vec<(usize, String, String)>>>;

/// A backend answering by path, each connection on its own thread.
fn backend() -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let log = seen.clone();
    std::thread::spawn(move || {
        for (n, conn) in listener.incoming().map_while(Result::ok).enumerate() {
            let log = log.clone();
            std::thread::spawn(move || serve(n, conn, &log));
        }
    });
    (port, seen)
}

fn serve(n: usize, conn: TcpStream, log: &Seen) {
    conn.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut conn = BufReader::new(conn);
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut words = line.split_whitespace();
        let method = words.next().unwrap_or_default().to_string();
        let target = words.next().unwrap_or_default().to_string();
        loop {
            let mut h = String::new();
            if conn.read_line(&mut h).unwrap_or(0) == 0 || h.trim_end().is_empty() {
                break;
            }
        }
        log.lock()
            .unwrap()
            .push((n, method.clone(), target.clone()));
        let path = target.split('?').next().unwrap_or_default();
        let out = conn.get_mut();
        let keep = match (method.as_str(), path) {
            ("HEAD", "/len") => out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
            (_, "/len") => out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"),
            (_, "/nocontent") => out.write_all(b"HTTP/1.1 204 No Content\r\n\r\n"),
            (_, "/stray") => {
                // A broken backend: a whole response's worth of bytes after
                // a 204, once the 204 has surely been read on its own.
                let _ = out.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
                let _ = out.flush();
                std::thread::sleep(Duration::from_millis(200));
                let stray = out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nWRONG");
                log.lock()
                    .unwrap()
                    .push((n, "STRAY".into(), target.clone()));
                stray
            }
            (_, "/continue") => out.write_all(
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            ),
            (_, "/chunked") => chunked(out),
            (_, "/big") => big(out),
            (_, "/eof") => {
                let _ = out.write_all(b"HTTP/1.1 200 OK\r\n\r\nuntil the ");
                let _ = out.flush();
                let _ = out.write_all(b"end");
                return;
            }
            (_, "/close") => {
                let _ = out.write_all(
                    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye",
                );
                return;
            }
            (_, "/twolengths") => {
                let _ = out.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
                );
                return;
            }
            _ => out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nroot"),
        };
        if keep.is_err() {
            return;
        }
    }
}

/// A chunked body in three writes (one chunk split across two), with a
/// chunk extension and a trailer (which the gateway reads and, since
/// `Trailer` counts as hop-by-hop there, does not pass on).
fn chunked(out: &mut TcpStream) -> std::io::Result<()> {
    out.write_all(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-sum\r\n\r\n5\r\nhel",
    )?;
    out.flush()?;
    out.write_all(b"lo\r\n6;ext=1\r\n world\r\n")?;
    out.flush()?;
    out.write_all(b"0\r\nx-sum: 11\r\n\r\n")
}

/// A large body of `pattern` bytes, chunked in sizes that do not line up
/// with any buffer.
fn big(out: &mut TcpStream) -> std::io::Result<()> {
    out.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")?;
    let (mut at, mut size) = (0, 1);
    while at < BIG {
        let n = size.min(BIG - at);
        let data: Vec<u8> = (at..at + n).map(pattern).collect();
        out.write_all(format!("{n:x}\r\n").as_bytes())?;
        out.write_all(&data)?;
        out.write_all(b"\r\n")?;
        at += n;
        size = size * 7 % 100_003 + 1;
    }
    out.write_all(b"0\r\n\r\n")
}

fn get(c: &mut BufReader<TcpStream>, method: &str, target: &str) -> raw::Response {
    let req = format!("{method} {target} HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n");
    raw::send(c, req.as_bytes()).unwrap();
    if method == "HEAD" {
        return head_only(c);
    }
    raw::read_response(c).unwrap().expect("a response")
}

/// A response head (a HEAD response has no body whatever it says).
fn head_only(c: &mut BufReader<TcpStream>) -> raw::Response {
    let mut status = String::new();
    c.read_line(&mut status).unwrap();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        c.read_line(&mut h).unwrap();
        match h.trim_end().split_once(':') {
            Some((k, v)) => headers.push((k.trim().to_string(), v.trim().to_string())),
            None => break,
        }
    }
    raw::Response {
        version: "HTTP/1.1".into(),
        status: status.split_whitespace().nth(1).unwrap().parse().unwrap(),
        headers,
        body: Vec::new(),
        trailers: Vec::new(),
    }
}

/// The backend connection request `target` arrived on.
fn conn_of(seen: &Seen, target: &str) -> usize {
    let seen = seen.lock().unwrap();
    let found = seen.iter().find(|(_, _, t)| t == target);
    found
        .unwrap_or_else(|| panic!("{target} never arrived: {seen:?}"))
        .0
}

#[test]
fn every_framing_arrives_intact_on_a_connection_reused_exactly_when_it_may_be() {
    let (port, seen) = backend();
    let (_h, gw) = behind("", &[port], "");
    let mut c = raw::connect(gw);

    let res = get(&mut c, "GET", "/len?1");
    assert_eq!((res.status, res.text().as_str()), (200, "hello"));
    let res = get(&mut c, "GET", "/chunked?2");
    assert_eq!((res.status, res.text().as_str()), (200, "hello world"));
    let res = get(&mut c, "HEAD", "/len?3");
    assert_eq!(res.status, 200);
    assert_eq!(res.header("content-length"), Some("5"));
    let res = get(&mut c, "GET", "/nocontent?4");
    assert_eq!((res.status, res.body.len()), (204, 0));
    let res = get(&mut c, "GET", "/continue?5");
    assert_eq!((res.status, res.text().as_str()), (200, "ok"));
    let res = get(&mut c, "GET", "/big?6");
    assert_eq!(res.status, 200);
    assert_eq!(res.body.len(), BIG);
    assert!(res.body.iter().enumerate().all(|(i, &b)| b == pattern(i)));
    // All of it on one upstream connection: each message ended where its
    // framing said.
    let first = conn_of(&seen, "/len?1");
    for t in [
        "/chunked?2",
        "/len?3",
        "/nocontent?4",
        "/continue?5",
        "/big?6",
    ] {
        assert_eq!(conn_of(&seen, t), first, "{t} on another connection");
    }

    // A body read until the close: intact, and that connection is done.
    let res = get(&mut c, "GET", "/eof?7");
    assert_eq!((res.status, res.text().as_str()), (200, "until the end"));
    assert!(!res.closes(), "the client's connection stays: {res:?}");
    let res = get(&mut c, "GET", "/len?8");
    assert_eq!((res.status, res.text().as_str()), (200, "hello"));
    assert_ne!(conn_of(&seen, "/len?8"), conn_of(&seen, "/eof?7"));

    // `Connection: close` from the backend: not reused either.
    let res = get(&mut c, "GET", "/close?9");
    assert_eq!((res.status, res.text().as_str()), (200, "bye"));
    let res = get(&mut c, "GET", "/len?10");
    assert_eq!(res.status, 200);
    assert_ne!(conn_of(&seen, "/len?10"), conn_of(&seen, "/close?9"));
    // And the connection after it is kept again.
    get(&mut c, "GET", "/len?11");
    assert_eq!(conn_of(&seen, "/len?11"), conn_of(&seen, "/len?10"));
}

#[test]
fn a_response_with_two_lengths_is_a_502_and_the_next_request_is_served() {
    let (port, seen) = backend();
    let (_h, gw) = behind("", &[port], "");
    let mut c = raw::connect(gw);
    let res = get(&mut c, "GET", "/twolengths?1");
    assert_eq!(res.status, 502, "{res:?}");
    let res = get(&mut c, "GET", "/len?2");
    assert_eq!((res.status, res.text().as_str()), (200, "hello"));
    assert_ne!(conn_of(&seen, "/len?2"), conn_of(&seen, "/twolengths?1"));
    // Drained to the end of a body the client read: nothing left over.
    let mut rest = Vec::new();
    c.get_ref().set_nonblocking(true).unwrap();
    let _ = c.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{rest:?}");
}

#[test]
fn bytes_a_backend_sends_after_its_response_never_answer_the_next_request() {
    let (port, seen) = backend();
    let (_h, gw) = behind("", &[port], "");
    let mut c = raw::connect(gw);
    let res = get(&mut c, "GET", "/stray?1");
    assert_eq!((res.status, res.body.len()), (204, 0));
    support::harbor::eventually(Duration::from_secs(5), "the stray bytes sent", || {
        seen.lock().unwrap().iter().any(|(_, m, _)| m == "STRAY")
    });
    // The idle connection those bytes arrived on is not used again.
    let res = get(&mut c, "GET", "/len?2");
    assert_eq!((res.status, res.text().as_str()), (200, "hello"));
    assert_ne!(conn_of(&seen, "/len?2"), conn_of(&seen, "/stray?1"));
}
