// Deadlines here bound waits on real sockets: wall-clock time is the point.
#![allow(clippy::disallowed_types)]

//! Raw HTTP/1 on real sockets, for what polite clients and servers never do:
//! half-sent bodies, bad chunking, keep-alive loops that count bare EOFs,
//! backends that close idle connections or answer in HTTP/1.0.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

/// One response as it came over the wire.
#[derive(Debug)]
pub struct Response {
    /// `HTTP/1.1` or `HTTP/1.0`.
    pub version: String,
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The trailer fields of a chunked body.
    pub trailers: Vec<(String, String)>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the server closes the connection after this response.
    pub fn closes(&self) -> bool {
        self.header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
            || self.version == "HTTP/1.0"
                && !self
                    .header("connection")
                    .is_some_and(|v| v.eq_ignore_ascii_case("keep-alive"))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A connection to `addr` with a read timeout, ready for raw requests.
pub fn connect(addr: SocketAddr) -> BufReader<TcpStream> {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    BufReader::new(s)
}

/// Writes `raw` as it is.
pub fn send(conn: &mut BufReader<TcpStream>, raw: &[u8]) -> std::io::Result<()> {
    conn.get_mut().write_all(raw)
}

/// Reads one response; `Ok(None)` when the connection ended before a byte
/// of it (a bare EOF, or a reset).
pub fn read_response(conn: &mut BufReader<TcpStream>) -> std::io::Result<Option<Response>> {
    let mut line = String::new();
    match conn.read_line(&mut line) {
        Ok(0) => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(None),
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    let mut parts = line.split_whitespace();
    let version = parts.next().unwrap_or_default().to_string();
    let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        conn.read_line(&mut h)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let mut res = Response {
        version,
        status,
        headers,
        body: Vec::new(),
        trailers: Vec::new(),
    };
    if let Some(len) = res.header("content-length").and_then(|v| v.parse().ok()) {
        res.body = vec![0; len];
        conn.read_exact(&mut res.body)?;
    } else if res
        .header("transfer-encoding")
        .is_some_and(|v| v.contains("chunked"))
    {
        loop {
            let mut size = String::new();
            conn.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 {
                // Trailer fields, then the empty line.
                loop {
                    let mut t = String::new();
                    conn.read_line(&mut t)?;
                    match t.trim_end().split_once(':') {
                        Some((k, v)) => res.trailers.push((k.trim().into(), v.trim().into())),
                        None => break,
                    }
                }
                break;
            }
            let mut chunk = vec![0; n + 2];
            conn.read_exact(&mut chunk)?;
            res.body.extend_from_slice(&chunk[..n]);
        }
    } else if res.closes() {
        conn.read_to_end(&mut res.body)?;
    }
    Ok(Some(res))
}

/// One raw request on a new connection, and its response.
pub fn exchange(addr: SocketAddr, raw: &str) -> Response {
    let mut c = connect(addr);
    send(&mut c, raw.as_bytes()).unwrap();
    read_response(&mut c).unwrap().expect("a response")
}

/// Reads one request head and its Content-Length body; `None` at EOF or
/// when nothing arrives within the socket's read timeout.
fn read_request(conn: &mut BufReader<TcpStream>) -> Option<()> {
    let mut len = 0;
    let mut first = true;
    loop {
        let mut line = String::new();
        if conn.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if first {
            first = false;
            continue;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; len];
    conn.read_exact(&mut body).ok()
}

/// A backend that serves each connection with `serve` on its own thread;
/// its port.
fn backend(serve: fn(BufReader<TcpStream>)) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || serve(BufReader::new(conn)));
        }
    });
    port
}

/// A keep-alive backend that closes a connection idle for 200 ms between
/// requests, as Node does after its `keepAliveTimeout` (the first request
/// has longer, like Node's `headersTimeout`); every request gets `200 ok`.
pub fn closes_idle_after_200ms() -> u16 {
    backend(|mut conn| {
        conn.get_ref()
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        while read_request(&mut conn).is_some() {
            let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
            if conn.get_mut().write_all(ok).is_err() {
                return;
            }
            let idle = Duration::from_millis(200);
            conn.get_ref().set_read_timeout(Some(idle)).unwrap();
        }
    })
}

/// A backend that answers as Python's `http.server` does: HTTP/1.0, no
/// length, then closes.
pub fn speaks_http10() -> u16 {
    backend(|mut conn| {
        conn.get_ref()
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        if read_request(&mut conn).is_some() {
            let _ = conn
                .get_mut()
                .write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nold");
        }
    })
}
